"""One in-process run from config to results directory, with optional live progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from peer.engine.config import RunConfig
from peer.engine.metrics import IterationMetrics
from peer.engine.sampling import target_return
from peer.lab.inprocess import InProcessRun
from peer.lab.plots import plot_run
from peer.lab.results import ResultsWriter, summarize

ProgressFn = Callable[[IterationMetrics], None]


def describe(cfg: RunConfig) -> str:
    attack = f", {cfg.num_byzantine} x {cfg.attack.name}" if cfg.num_byzantine else ""
    return f"{cfg.algorithm} on {cfg.env}, K={cfg.num_peers}{attack}, seed {cfg.seed}"


def run_experiment(cfg: RunConfig, out_dir: Path, progress: ProgressFn | None = None,
                   plot: bool = True) -> dict[str, Any]:
    """Run until the trajectory budget; results stay consistent even if interrupted."""
    writer = ResultsWriter(out_dir, cfg)
    run = InProcessRun(cfg)
    started = time.perf_counter()
    interrupted = False
    try:
        for row in run.iterate(cfg.trajectories_per_agent):
            writer.add(row)
            if progress is not None:
                progress(row)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        run.close()
        summary = summarize(cfg, writer.rows, time.perf_counter() - started, target_return(cfg.env),
                            interrupted=interrupted)
        writer.finish(summary)
        if plot and writer.rows:
            plot_run(writer.rows, cfg.num_peers, out_dir / "returns.png",
                     describe(cfg))
    if interrupted:
        raise KeyboardInterrupt
    return summary
