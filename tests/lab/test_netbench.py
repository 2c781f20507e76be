"""peer.lab.netbench: `decbyzpg bench --network` measures what it says, on a small cluster."""

from __future__ import annotations

import pytest

from peer.lab.netbench import markdown, network_benchmark, render


@pytest.mark.multiprocess
def test_a_small_network_benchmark_runs_both_sides_and_counts_one_stream_message_per_destination(tmp_path) -> None:
    report = network_benchmark(4, 0, 100, seed=0, out=tmp_path, base_port=54100)
    inproc, net = report["in_process"], report["network"]
    assert net["final_honest_return"] == inproc["final_honest_return"]  # the same learning, bit for bit
    assert net["messages_sent_per_round"] == pytest.approx(3.0)  # K - 1 per broadcast, no retries
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
