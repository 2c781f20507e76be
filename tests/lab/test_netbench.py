"""peer.lab.netbench: `decbyzpg bench --network` measures what it says, on a small cluster."""

from __future__ import annotations

import pytest

from peer.lab.netbench import markdown, network_benchmark, render


@pytest.mark.multiprocess
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mutual-tls"])
def test_a_small_network_benchmark_runs_both_sides_and_counts_one_stream_message_per_destination(tmp_path,
                                                                                                tls) -> None:
    report = network_benchmark(4, 0, 100, seed=0, out=tmp_path, base_port=54200 if tls else 54100, tls=tls)
    assert report["tls"] is tls and ("mutual TLS" in render(report)) is tls
    inproc, net = report["in_process"], report["network"]
    assert net["final_honest_return"] == inproc["final_honest_return"]  # the same learning, bit for bit
    # K - 1 per broadcast and never more (no duplicates, no retries of a written message); on a
    # saturated machine a write to a peer still starting may give way to a newer message and be
    # pulled instead (one CI run on a loaded box: 2.97)
    assert 2.5 <= net["messages_sent_per_round"] <= 3.0
    assert 1000 < net["bytes_sent_per_round"] / 3 < 2000  # one ~1.6 KB envelope per destination
    assert net["threads_per_peer"] < 16  # no thread per call or per destination
    assert net["rounds_timed_out"] == 0
    assert 0 < net["startup_wall_seconds"] < net["wall_seconds"]
    assert report["wall_ratio"] == pytest.approx(net["wall_seconds"] / inproc["wall_seconds"])
    split = net["cpu_split_seconds"]
    assert split["learning"] > 0 and split["crypto"] > 0 and split["process_cpu"] >= split["learning"]
    assert (tmp_path / "network-bench.json").exists()
    text = render(report)
    assert "round_latency_ms_p50" in text and "in-process" in text
    table = markdown([{**report, "label": "small"}])
    assert table.count("\n") == 2 and "| small | 4 (0) | 100 |" in table


def test_network_summary_separates_rounds_that_wait_for_sampling() -> None:
    """a0 of a small-batch iteration waits for the slowest peer's sampling; a1, a2 only for the protocol."""
    from peer.engine.metrics import IterationMetrics
    from peer.lab.cluster import network_summary

    rows = [IterationMetrics(iteration=0, trajectories_per_agent=50, x_t=1, round_ms="g0:300 a0:20 a1:10 a2:12",
                             seconds=1.0),
            IterationMetrics(iteration=1, trajectories_per_agent=54, x_t=0, round_ms="a0:90 a1:11 a2:13",
                             seconds=0.5)]
    summary = network_summary({0: rows})
    assert summary["round_latency_ms_p50"] == 13.0  # over a0 and the later rounds: 10 11 12 13 20 90
    assert summary["later_round_latency_ms_p50"] == 12.0  # 10 11 12 13
    assert summary["later_round_latency_ms_p99"] == 13.0
