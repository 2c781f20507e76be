"""A run's results directory: resolved config, per-iteration CSV, summary, plot.

Every file is replaced atomically (write a temporary file, fsync, rename), so a reader,
a crash or Ctrl-C never sees a half-written result: at worst the last iteration is
missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import tomli_w

from peer.engine import ENGINE_REVISION
from peer.engine.config import RunConfig
from peer.engine.errors import RunStateError
from peer.engine.metrics import IterationMetrics
from peer.net.files import MetricsFile, atomic_write, toml_safe

WINDOW = 10  # iterations in the moving mean used for the summary thresholds


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def moving_mean(values: Sequence[float], window: int = WINDOW) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1): i + 1] if math.isfinite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def first_reaching(rows: Sequence[IterationMetrics], threshold: float) -> int | None:
    """Trajectories per agent when the WINDOW-iteration mean honest return first reaches threshold."""
    smoothed = moving_mean([r.honest_mean_return for r in rows])
    for row, value in zip(rows, smoothed):
        if math.isfinite(value) and value >= threshold:
            return row.trajectories_per_agent
    return None


def summarize(cfg: RunConfig, rows: Sequence[IterationMetrics], wall_seconds: float,
              target: float | None, interrupted: bool = False) -> dict[str, Any]:
    returns = [r.honest_mean_return for r in rows if math.isfinite(r.honest_mean_return)]
    last = returns[-WINDOW:]
    final_traj = rows[-1].trajectories_per_agent if rows else 0
    tail = [r.honest_mean_return for r in rows
            if r.trajectories_per_agent > final_traj - 1000 and math.isfinite(r.honest_mean_return)]
    compute = sum(r.compute_seconds for r in rows)
    return {
        "engine_revision": ENGINE_REVISION,
        "env": cfg.env,
        "algorithm": cfg.algorithm,
        "num_peers": cfg.num_peers,
        "num_byzantine": cfg.num_byzantine,
        "attack": cfg.attack.name if cfg.num_byzantine else "none",
        "seed": cfg.seed,
        "iterations": len(rows),
        "trajectories_per_agent": final_traj,
        "final_honest_return": _clean(sum(last) / len(last)) if last else None,
        "last_1000_honest_return": _clean(sum(tail) / len(tail)) if tail else None,
        "best_honest_return": max(returns) if returns else None,
        "trajectories_to_475": first_reaching(rows, 475.0),
        "target_return": target,
        "trajectories_to_target": first_reaching(rows, target) if target is not None else None,
        "final_honest_diameter": _clean(rows[-1].honest_diameter) if rows else None,
        "final_agreement_diameter": _clean(rows[-1].agreement_diameter) if rows else None,
        "env_steps": rows[-1].env_steps if rows else 0,
        "wall_seconds": wall_seconds,
        "compute_seconds": compute,
        "interrupted": interrupted,
    }


class ResultsWriter:
    """Owns one run directory and rewrites its files as the run advances."""

    def __init__(self, directory: Path, cfg: RunConfig, keep_metrics: bool = False) -> None:
        """`keep_metrics`: a resumed run keeps the rows already written (the caller truncates
        them to its checkpoint); otherwise a rerun into the same directory starts afresh."""
        self.dir = Path(directory)
        self.cfg = cfg
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a directory the user may not write to: their input, not a bug
            raise RunStateError(f"cannot create the results directory {self.dir}: {err.strerror}") from None
        atomic_write(self.dir / "config.toml", tomli_w.dumps(toml_safe(cfg.to_dict(explicit=True))))
        if not keep_metrics:
            (self.dir / "metrics.csv").unlink(missing_ok=True)
        self.metrics = MetricsFile(self.dir / "metrics.csv", cfg.num_peers)

    @property
    def rows(self) -> list[IterationMetrics]:
        return self.metrics.rows

    def add(self, row: IterationMetrics) -> None:
        self.metrics.add(row)

    def finish(self, summary: dict[str, Any]) -> None:
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
