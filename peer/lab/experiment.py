"""One in-process run from config to results directory, with optional live progress.

A run checkpoints itself (`checkpoint.pt`, between iterations, at most every
CHECKPOINT_SECONDS of wall time and at the end), so a killed run, or a sweep stopped
mid-way, resumes where it was rather than from iteration 0.  Every random stream is keyed
by (genesis, purpose, peer, iteration), so a resumed run computes exactly what the
uninterrupted one would have.  (A finished run cannot be extended to a larger budget:
the budget is part of the genesis hash, which keys every stream.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from peer.engine import ENGINE_REVISION
from peer.engine.config import RunConfig
from peer.engine.errors import RunStateError
from peer.engine.metrics import IterationMetrics
from peer.engine.sampling import target_return
from peer.lab.inprocess import InProcessRun
from peer.lab.plots import plot_run
from peer.lab.results import ResultsWriter, summarize
from peer.net.files import load_checkpoint, save_checkpoint

ProgressFn = Callable[[IterationMetrics], None]

CHECKPOINT_SECONDS = 30.0  # wall time between checkpoints: the most a killed run recomputes
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "decbyzpg-inprocess-1"


def describe(cfg: RunConfig) -> str:
    attack = f", {cfg.num_byzantine} x {cfg.attack.name}" if cfg.num_byzantine else ""
    return f"{cfg.algorithm} on {cfg.env}, K={cfg.num_peers}{attack}, seed {cfg.seed}"


def _identity(cfg: RunConfig) -> dict[str, Any]:
    """What a checkpoint must share with a configuration to resume it: all of it, and the arithmetic."""
    return {"format": CHECKPOINT_FORMAT, "engine_revision": ENGINE_REVISION, "config": cfg.to_dict()}


def resumable(out_dir: Path, cfg: RunConfig) -> bool | None:
    """True if `out_dir` holds a checkpoint of this run, False if it holds another run's, None if none."""
    try:
        state = load_checkpoint(Path(out_dir) / CHECKPOINT_NAME)
    except RunStateError:
        return False
    if state is None:
        return None
    return state.get("identity") == _identity(cfg)


def _restore(run: InProcessRun, out_dir: Path, cfg: RunConfig) -> None:
    path = out_dir / CHECKPOINT_NAME
    state = load_checkpoint(path)
    if state is None:
        return
    if state.get("identity") != _identity(cfg):
        raise RunStateError(f"{path} belongs to another configuration or engine revision; "
                            "choose another results directory or start afresh (--fresh)")
    run.load_state_dict(state["run"])


def run_experiment(cfg: RunConfig, out_dir: Path, progress: ProgressFn | None = None,
                   plot: bool = True, resume: bool = False,
                   checkpoint_seconds: float = CHECKPOINT_SECONDS) -> dict[str, Any]:
    """Run until the trajectory budget; results stay consistent even if interrupted.

    With `resume`, a checkpoint of the same run in `out_dir` is continued (another run's is
    a RunStateError); without it the run starts afresh and any old checkpoint is removed.
    """
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT_NAME
    run = InProcessRun(cfg)
    try:  # a refused resume touches nothing in out_dir
        if resume:
            _restore(run, out_dir, cfg)
        else:
            checkpoint.unlink(missing_ok=True)
    except BaseException:
        run.close()
        raise
    writer = ResultsWriter(out_dir, cfg, keep_metrics=resume)
    writer.metrics.truncate(run.t)  # rows past the checkpoint are recomputed, identically
    identity = _identity(cfg)

    def save() -> float:
        save_checkpoint(checkpoint, {"identity": identity, "run": run.state_dict()})
        return time.perf_counter()

    started = saved = time.perf_counter()
    interrupted = False
    try:
        for row in run.iterate(cfg.trajectories_per_agent):
            writer.add(row)
            if time.perf_counter() - saved >= checkpoint_seconds:
                saved = save()
            if progress is not None:
                progress(row)
        save()
    except KeyboardInterrupt:  # mid-iteration state is not saved: the last checkpoint stands
        interrupted = True
    finally:
        run.close()
        wall = writer.rows[-1].elapsed_seconds if writer.rows else time.perf_counter() - started
        summary = summarize(cfg, writer.rows, wall, target_return(cfg.env), interrupted=interrupted)
        writer.finish(summary)
        if plot and writer.rows:
            plot_run(writer.rows, cfg.num_peers, out_dir / "returns.png",
                     describe(cfg))
    if interrupted:
        raise KeyboardInterrupt
    return summary
