"""Figures in the paper's style: honest mean return vs trajectories per agent.

Runs of one configuration (different seeds) stop at slightly different trajectory counts,
so curves are put on a common grid by step interpolation (the value of the last finished
iteration) before the mean and standard deviation over seeds are taken.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from peer.engine.metrics import IterationMetrics  # noqa: E402

Curve = tuple[np.ndarray, np.ndarray]  # (trajectories per agent, honest mean return)


def on_grid(curve: Curve, grid: np.ndarray) -> np.ndarray:
    x, y = curve
    idx = np.searchsorted(x, grid, side="right") - 1
    out = np.where(idx >= 0, y[np.clip(idx, 0, len(y) - 1)], np.nan)
    out[grid > x[-1]] = np.nan
    return out


def smooth(y: np.ndarray, window: int = 10) -> np.ndarray:
    """Trailing moving mean over `window` iterations (the summary's smoothing)."""
    out = np.empty_like(y, dtype=float)
    for i in range(len(y)):
        out[i] = np.nanmean(y[max(0, i - window + 1): i + 1])
    return out


def mean_std(curves: Sequence[Curve], points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Seeds stop a few trajectories apart (the budget is never overshot); stopping the grid
    # where the first one stops keeps the last points from averaging over a lone survivor.
    top = min(float(c[0][-1]) for c in curves)
    grid = np.linspace(0, top, points)
    stacked = np.stack([on_grid((c[0], smooth(c[1])), grid) for c in curves])
    with warnings.catch_warnings():  # grid points no run reached are all-NaN columns: NaN is right there
        warnings.simplefilter("ignore", RuntimeWarning)
        return grid, np.nanmean(stacked, 0), np.nanstd(stacked, 0)


def plot_panels(panels: Mapping[str, Mapping[str, Sequence[Curve]]], path: Path,
                ylabel: str = "honest mean return", threshold: float | None = None) -> None:
    """One subplot per panel; one mean +/- std band per label within it."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), sharey=True, squeeze=False)
    handles: dict[str, object] = {}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    for ax, (title, series) in zip(axes[0], panels.items()):
        for label, curves in series.items():
            if not curves:
                continue
            colour = colours[labels.index(label) % len(colours)]
            grid, mean, std = mean_std(curves)
            (line,) = ax.plot(grid, mean, color=colour, lw=1.6, label=f"{label} (n={len(curves)})")
            ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.18, lw=0)
            handles.setdefault(label, line)
        if threshold is not None:
            ax.axhline(threshold, color="grey", lw=0.8, ls=":")
        ax.set_title(title)
        ax.set_xlabel("trajectories per agent")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    if n == 1:
        axes[0][0].legend(list(handles.values()), list(handles), loc="best", fontsize="small")
        fig.tight_layout()
    else:
        ncol = min(4, len(handles))
        rows = -(-len(handles) // ncol)
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, frameon=True,
                   fontsize="small", bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def plot_run(rows: Sequence[IterationMetrics], num_peers: int, path: Path, title: str) -> None:
    """A single run: every honest peer's return, faint, and their mean."""
    x = np.array([float(r.trajectories_per_agent) for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k in range(num_peers):
        y = np.array([r.peer_returns.get(k, math.nan) for r in rows])
        if np.isfinite(y).any():
            ax.plot(x, y, color="tab:blue", alpha=0.15, lw=0.8)
    mean = np.array([r.honest_mean_return for r in rows])
    ax.plot(x, mean, color="tab:red", lw=1.4, label="honest mean")
    ax.plot(x, smooth(mean), color="black", lw=1.0, ls="--", label="10-iteration mean")
    ax.set_xlabel("trajectories per agent")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
