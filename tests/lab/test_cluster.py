"""peer.lab.cluster: run directories for K peers, and merging what the daemons wrote."""

from __future__ import annotations

import json

import pytest

from peer.cli.main import main
from peer.engine.config import build_config
from peer.engine.errors import RunStateError
from peer.engine.metrics import IterationMetrics
from peer.lab.cluster import init_run, merge_results
from peer.net.files import MetricsFile, read_metrics

CFG = build_config({"num_peers": 5, "num_byzantine": 1, "estimator": {"large_batch": 8, "small_batch": 2}},
                   in_process=False)


def daemon_files(results, layout: str) -> None:
    """What four honest daemons write, three iterations each (compose's peer-<id>/ or cluster's peers/<id>/)."""
    for k in range(4):
        directory = results / (f"peer-{k}" if layout == "compose" else f"peers/{k}")
        log = MetricsFile(directory / "metrics.csv", 5)
        for t in range(3):
            log.add(IterationMetrics(iteration=t, trajectories_per_agent=8 * (t + 1), x_t=1,
                                     peer_returns={k: 10.0 * t + k}, agreement_diameter=0.1 * k, rounds=4,
                                     round_p50_ms=5.0 + k, round_ms="g0:9.000 a0:5.000", seconds=1.0,
                                     elapsed_seconds=float(t + 1)))


@pytest.mark.parametrize("layout", ["compose", "cluster"])
def test_merge_reads_either_layout_and_writes_one_results_directory(tmp_path, layout: str) -> None:
    init_run(tmp_path / "run", CFG, [4], "avg_zero")
    daemon_files(tmp_path, layout)
    out, summary = merge_results(tmp_path)
    rows = read_metrics(out / "metrics.csv")
    assert [sorted(r.peer_returns) for r in rows] == [[0, 1, 2, 3]] * 3
    assert rows[-1].honest_mean_return == pytest.approx(21.5) and rows[-1].agreement_diameter == pytest.approx(0.3)
    assert summary["attack"] == "avg_zero" and summary["iterations"] == 3 and summary["wall_seconds"] == 3.0
    assert (out / "returns.png").exists() and json.loads((out / "summary.json").read_text())["iterations"] == 3


def test_merge_names_the_missing_peer(tmp_path, capsys) -> None:
    init_run(tmp_path / "run", CFG, [4], "avg_zero")
    daemon_files(tmp_path, "compose")
    (tmp_path / "peer-2" / "metrics.csv").unlink()
    with pytest.raises(RunStateError, match="honest peer 2"):
        merge_results(tmp_path)
    assert main(["merge", str(tmp_path)]) == 3
    assert "honest peer 2" in capsys.readouterr().err


def test_merge_can_wait_for_the_last_iteration(tmp_path) -> None:
    from peer.engine.schedule import Schedule
    from peer.lab.cluster import wait_for_peers

    short = build_config({"num_peers": 5, "num_byzantine": 1, "trajectories_per_agent": 40,
                          "estimator": {"large_batch": 8, "small_batch": 2}}, in_process=False)
    init_run(tmp_path / "run", short, [4], "avg_zero")
    daemon_files(tmp_path, "compose")  # three iterations: not yet the run's last
    with pytest.raises(RunStateError, match=r"honest peers \[0, 1, 2, 3\] did not finish"):
        wait_for_peers(tmp_path, poll=0.05, timeout=0.3)
    total = Schedule.of(short).iteration_count
    assert total > 3
    for k in range(4):
        log = MetricsFile(tmp_path / f"peer-{k}" / "metrics.csv", 5)
        for t in range(3, total):
            log.add(IterationMetrics(iteration=t, trajectories_per_agent=8 * (t + 1), x_t=1, peer_returns={k: 1.0}))
    wait_for_peers(tmp_path, poll=0.05, timeout=5)  # returns: every honest peer is done
