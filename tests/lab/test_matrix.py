"""The resilience matrix: attack specs, reuse of finished cells, and one cell end to end."""

from __future__ import annotations

import json

import pytest

from peer.cli.main import main
from peer.engine import ENGINE_REVISION
from peer.engine.config import ConfigError
from peer.lab.matrix import (
    cell_byzantine_ids,
    cell_config,
    expected_document,
    finished_row,
    parse_attack,
    run_matrix,
    summarize_rows,
)
from tests.support.netutil import free_port_block

TINY = {"trajectories_per_agent": 40, "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 100}}


@pytest.mark.multiprocess
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
                       misbehaviour=["garbage", "flood_future"], base_port=free_port_block(5), timeout=300)
    assert again == rows  # finished cells are reused

    # ...but only when made from the same inputs: any change redoes the cell
    cell = tmp_path / "runs" / "decbyzpg-large_noise-s0"

    def reused(base, attack="large_noise", misbehaviour=("garbage", "flood_future")) -> bool:
        spec = parse_attack(attack)
        expected = expected_document(cell_config(base, "decbyzpg", 0, 5, 1), spec, cell_byzantine_ids(spec, 5, 1),
                                     list(misbehaviour))
        return finished_row(cell, expected) is not None

    assert reused(TINY)
    row_path = cell / "matrix_row.json"
    original = row_path.read_text()
    row_path.write_text(original.replace(f'"engine_revision": {ENGINE_REVISION}', '"engine_revision": 1'))
    assert not reused(TINY)  # made by older arithmetic: redone
    row_path.write_text(original)
    assert not reused(TINY, misbehaviour=())
    assert not reused(TINY, attack="large_noise:scale=1.0")
    assert not reused({**TINY, "trajectories_per_agent": 41})
    assert not reused({**TINY, "optimizer": {"step_size": 0.01}})

    # a redone cell starts clean: the old attempt's checkpoints (another roster) are not resumed
    redone = run_matrix(tmp_path, TINY, ["large_noise"], ["decbyzpg"], [0], peers=5, byzantine=1,
                        misbehaviour=[], base_port=free_port_block(5), timeout=300)
    assert redone[0]["crashed"] == [] and redone[0]["stalled"] is False
    assert redone[0]["rejected"] == {} and redone[0]["trajectories_per_agent"] <= 40
    assert reused(TINY, misbehaviour=()) and not reused(TINY)


def test_attack_specs_name_variants_and_reject_bad_parameters() -> None:
    plain = parse_attack("ipm")
    assert (plain.label, plain.slug, plain.params) == ("ipm", "ipm", {})
    strong = parse_attack("ipm:epsilon=4")
    assert (strong.label, strong.slug, strong.params) == ("ipm epsilon=4", "ipm-epsilon4", {"epsilon": 4})
    assert parse_attack("alie:z=1.5").params == {"z": 1.5}
    for bad, words in [("ipm:eps=4", "unknown parameter 'eps'"), ("alie:z=big", "must be float"),
                       ("ipm:epsilon", "name:key=value"), ("nope", "must be one of"),
                       ("none:z=1", "takes no parameters"), (":z=1", "has no name")]:
        with pytest.raises(ConfigError, match=words):
            parse_attack(bad)


def test_matrix_cli_rejects_a_bad_attack_before_running(tmp_path, capsys) -> None:
    code = main(["matrix", "--attacks", "none,ipm:epsilon=x", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "attack 'ipm:epsilon=x'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert main(["matrix", "--misbehaviour", "garbage,bogus", "--out", str(tmp_path / "m")]) == 2
    assert "unknown kind 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _row(algorithm: str, attack: str, seed: int, final: float, reached: int | None, **extra) -> dict:
    return {"algorithm": algorithm, "attack": attack, "seed": seed, "final_honest_return": final,
            "trajectories_to_475": reached, "trajectories_per_agent": 2000, "rejected": {"MALFORMED": 2},
            "equivocators": [], "crashed": [], "stalled": False, **extra}


def test_report_checks_are_computed_from_the_matrix_runs(tmp_path) -> None:
    from peer.lab.report import matrix_section

    runs = [_row("decbyzpg", "ipm epsilon=4", 0, 499.0, 900), _row("decbyzpg", "ipm epsilon=4", 1, 460.0, None),
            _row("dec-page-pg", "ipm epsilon=4", 0, 9.5, None), _row("dec-page-pg", "ipm epsilon=4", 1, 12.0, None),
            _row("decbyzpg", "silence", 0, 498.0, 1200, stalled=True)]
    (tmp_path / "matrix").mkdir()
    (tmp_path / "matrix" / "matrix.json").write_text(json.dumps({"runs": runs, "table": []}))
    text = "\n".join(matrix_section(tmp_path / "matrix", tmp_path))
    assert ("- ipm epsilon=4: DecByzPG reached 475 in 1/2 seeds, worst final return 460.0; "
            "Dec-PAGE-PG median final return 10.8 (worst seed 9.5) -> collapses") in text
    assert "- silence: DecByzPG reached 475 in 1/1 seeds" in text
    assert "no table rows with a crash, 1 with a round past its deadline, over 5 runs" in text
    assert "| MALFORMED 4 |" in text  # rejections are summed over seeds
