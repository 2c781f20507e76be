"""`decbyzpg trace`: what it measures about an honest peer's aggregate."""

from __future__ import annotations

import csv
import math

from peer.cli.main import main
from peer.engine.config import build_config
from peer.lab.trace import trace

TINY = {"num_peers": 5, "num_byzantine": 1, "trajectories_per_agent": 40, "seed": 0,
        "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 60}, "attack": {"name": "avg_zero"}}


def test_avg_zero_cancels_the_mean_but_not_rfa() -> None:
    mean_rows = trace(build_config({**TINY, "aggregation": {"rule": "mean"}}))
    rfa_rows = trace(build_config({**TINY, "aggregation": {"rule": "rfa"}}))
    for rows in (mean_rows, rfa_rows):  # the default aggregates v_t in every iteration: every row is measured
        assert rows and all("cosine" in r for r in rows) and {r["x_t"] for r in rows} == {0, 1}
    # the mean of 4 honest vectors and -(their sum) is zero: the aggregate misses by the whole honest mean
    assert all(math.isclose(r["error_over_norm"], 1.0, rel_tol=1e-4) for r in mean_rows)
    # the geometric median stays near the honest mean, pointing its way
    assert all(r["error_over_norm"] < 0.9 and r["cosine"] > 0.5 for r in rfa_rows)


def test_only_large_batch_steps_aggregate_in_the_papers_algorithm() -> None:
    rows = trace(build_config({**TINY, "aggregation": {"rule": "rfa", "every_iteration": False}}))
    measured = [r for r in rows if "cosine" in r]
    assert measured and all(r["x_t"] == 1 for r in measured) and len(measured) < len(rows)


def test_trace_command_writes_a_csv(tmp_path, capsys) -> None:
    out = tmp_path / "trace.csv"
    code = main(["trace", "--peers", "5", "--byzantine", "1", "--trajectories", "40", "--out", str(out),
                 "--set", "estimator.large_batch=8", "--set", "estimator.small_batch=2",
                 "--set", "estimator.horizon=60"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0]["iteration"] == "0" and rows[0]["cosine"] != ""
    assert main(["trace", "--peers", "5", "--byzantine", "1", "--peer-id", "4", "--out", str(out)]) == 2
    assert "not honest" in capsys.readouterr().err
