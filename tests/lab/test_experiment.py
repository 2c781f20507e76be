"""peer.lab.experiment: a killed or extended in-process run resumes exactly where it was."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from peer.engine.errors import RunStateError
from peer.lab.configure import resolve_config
from peer.lab.experiment import CHECKPOINT_NAME, resumable, run_experiment
from peer.net.files import load_checkpoint, read_metrics

TINY = {"estimator": {"large_batch": 8, "small_batch": 2, "horizon": 40}, "trajectories_per_agent": 40,
        "num_peers": 5, "num_byzantine": 1, "seed": 3}


def _learning_columns(path) -> list[dict]:
    """Every metrics column except wall-clock timings (which differ between any two runs)."""
    rows = []
    for row in read_metrics(path):
        fields = {k: v for k, v in dataclasses.asdict(row).items() if "seconds" not in k}
        rows.append({k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in fields.items()})
    return rows


def _final_thetas(directory) -> dict[int, np.ndarray]:
    state = load_checkpoint(directory / CHECKPOINT_NAME)
    return {k: peer["theta"].numpy() for k, peer in state["run"]["peers"].items()}


def _interrupt_after(iteration: int):
    def progress(row) -> None:
        if row.iteration == iteration:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("attack", ["drag", "random_action"])  # attack memory; Byzantine shadow machines
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, attack) -> None:
    cfg = resolve_config({**TINY, "attack": {"name": attack}})
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_experiment(cfg, whole, plot=False)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, parts, plot=False, checkpoint_seconds=0.0, progress=_interrupt_after(4))
    assert resumable(parts, cfg) is True
    assert load_checkpoint(parts / CHECKPOINT_NAME)["run"]["peers"][0]["t"] == 5
    summary = run_experiment(cfg, parts, plot=False, resume=True)
    assert not summary["interrupted"]
    assert _learning_columns(parts / "metrics.csv") == _learning_columns(whole / "metrics.csv")
    for k, theta in _final_thetas(whole).items():
        np.testing.assert_array_equal(_final_thetas(parts)[k], theta)


def test_rows_past_the_last_checkpoint_are_recomputed_not_duplicated(tmp_path) -> None:
    cfg = resolve_config({**TINY, "attack": {"name": "avg_zero"}})
    run_experiment(cfg, tmp_path / "whole", plot=False)
    with pytest.raises(KeyboardInterrupt):  # no checkpoint after the first: later rows are on disk only
        run_experiment(cfg, tmp_path / "parts", plot=False, checkpoint_seconds=math.inf, progress=_interrupt_after(3))
    assert resumable(tmp_path / "parts", cfg) is None
    assert len(read_metrics(tmp_path / "parts" / "metrics.csv")) == 4
    run_experiment(cfg, tmp_path / "parts", plot=False, resume=True)
    assert _learning_columns(tmp_path / "parts" / "metrics.csv") == _learning_columns(tmp_path / "whole" / "metrics.csv")


def test_a_larger_budget_is_another_run_not_an_extension(tmp_path) -> None:
    # the budget is hashed into the genesis, which keys every random stream
    short = resolve_config({**TINY, "attack": {"name": "avg_zero"}, "trajectories_per_agent": 24})
    run_experiment(short, tmp_path, plot=False)
    assert resumable(tmp_path, resolve_config({**TINY, "attack": {"name": "avg_zero"}})) is False


def test_another_runs_checkpoint_is_refused_and_left_untouched(tmp_path) -> None:
    cfg = resolve_config({**TINY, "attack": {"name": "avg_zero"}})
    run_experiment(cfg, tmp_path, plot=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = resolve_config({**TINY, "attack": {"name": "avg_zero"}, "seed": 4})
    assert resumable(tmp_path, other) is False
    with pytest.raises(RunStateError, match="another configuration"):
        run_experiment(other, tmp_path, plot=False, resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    run_experiment(other, tmp_path, plot=False)  # without resume: afresh, the old checkpoint replaced
    assert resumable(tmp_path, other) is True and resumable(tmp_path, cfg) is False
