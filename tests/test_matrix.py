"""One cell of the resilience matrix, end to end with real processes."""

from __future__ import annotations

import json

from adversary.matrix import run_matrix, summarize_rows
from tests.netutil import free_port_block

TINY = {"trajectories_per_agent": 40, "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 100}}


def test_matrix_cell_reports_rejections_and_health(tmp_path) -> None:
    rows = run_matrix(tmp_path, TINY, ["large_noise"], ["decbyzpg"], [0], peers=5, byzantine=1,
                      misbehaviour=["garbage", "flood_future"], base_port=free_port_block(5), timeout=300)
    (row,) = rows
    assert row["crashed"] == [] and row["stalled"] is False
    assert row["rejected"].get("MALFORMED", 0) > 0 and row["rejected"].get("TOO_FAR_AHEAD", 0) > 0
    assert row["trajectories_per_agent"] <= 40
    table = summarize_rows(rows)
    assert table[0]["algorithm"] == "DecByzPG" and table[0]["honest_crashed"] is False
    assert (tmp_path / "matrix.png").exists()
    assert json.loads((tmp_path / "matrix.json").read_text())["runs"][0]["attack"] == "large_noise"
    again = run_matrix(tmp_path, TINY, ["large_noise"], ["decbyzpg"], [0], peers=5, byzantine=1,
                       misbehaviour=[], base_port=free_port_block(5), timeout=300)
    assert again == rows  # finished cells are reused
