"""peer.lab.results: summaries computed from the metrics record, files replaced atomically."""

from __future__ import annotations

import json
import math

from peer.engine import ENGINE_REVISION
from peer.engine.config import build_config
from peer.engine.metrics import IterationMetrics
from peer.lab.results import ResultsWriter, first_reaching, moving_mean, summarize
from peer.net.files import read_metrics

CFG = build_config({"num_peers": 3, "num_byzantine": 0})


def rows(returns: list[float], step: int = 50) -> list[IterationMetrics]:
    return [IterationMetrics(iteration=i, trajectories_per_agent=step * (i + 1), x_t=1,
                             peer_returns={0: r, 1: r}, honest_diameter=0.0, compute_seconds=1.0)
            for i, r in enumerate(returns)]


def test_moving_mean_skips_missing_values() -> None:
    assert moving_mean([1.0, math.nan, 3.0], window=2) == [1.0, 1.0, 3.0]


def test_first_reaching_uses_the_ten_iteration_mean() -> None:
    climbing = rows([480.0] * 9 + [500.0] * 5, step=10)
    assert first_reaching(climbing[:1], 475.0) == 10  # one iteration's mean is itself
    assert first_reaching(rows([0.0] * 10 + [500.0] * 10), 475.0) == 50 * 20  # the mean catches up last
    assert first_reaching(rows([100.0] * 5), 475.0) is None


def test_summary_names_its_target_and_revision() -> None:
    summary = summarize(CFG, rows([100.0, 200.0, 480.0]), wall_seconds=2.0, target=150.0)
    assert summary["engine_revision"] == ENGINE_REVISION and summary["target_return"] == 150.0
    assert summary["trajectories_to_target"] == 100 and summary["trajectories_to_475"] is None
    assert summary["iterations"] == 3 and summary["compute_seconds"] == 3.0
    json.dumps(summary, allow_nan=False)  # no NaN in summary.json


def test_writer_keeps_a_valid_file_after_every_row(tmp_path) -> None:
    writer = ResultsWriter(tmp_path / "run", CFG)
    for i, row in enumerate(rows([1.0, 2.0, 3.0])):
        writer.add(row)
        assert [r.iteration for r in read_metrics(tmp_path / "run" / "metrics.csv")] == list(range(i + 1))
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    ResultsWriter(tmp_path / "run", CFG)  # a rerun into the same directory starts afresh
    assert not (tmp_path / "run" / "metrics.csv").exists()
