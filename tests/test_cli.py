"""The command line: a tiny run end to end, and clean one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peer.cli.main import main
from peer.lab.results import read_metrics


def test_run_writes_a_complete_results_directory(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["run", "--peers", "5", "--byzantine", "1", "--trajectories", "40", "--out", str(out), "--quiet",
                 "--set", "estimator.large_batch=8", "--set", "estimator.small_batch=2"])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"config.toml", "metrics.csv", "summary.json", "returns.png"}
    summary = json.loads((out / "summary.json").read_text())
    rows = read_metrics(out / "metrics.csv")
    assert summary["trajectories_per_agent"] == int(rows[-1]["trajectories_per_agent"]) <= 40
    assert summary["attack"] == "avg_zero" and summary["num_byzantine"] == 1
    for key in ("final_honest_return", "trajectories_to_475", "env_steps", "wall_seconds"):
        assert key in summary
    assert rows[0]["return_4"] == ""  # the Byzantine peer has no honest return
    assert "final_honest_return" in capsys.readouterr().out


def test_config_file_and_flags(tmp_path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text('algorithm = "dec-page-pg"\nnum_peers = 3\nnum_byzantine = 0\n'
                        'trajectories_per_agent = 20\n[estimator]\nlarge_batch = 4\nsmall_batch = 2\n')
    out = tmp_path / "r"
    assert main(["run", "--config", str(run_file), "--out", str(out), "--quiet"]) == 0
    assert 'algorithm = "dec-page-pg"' in (out / "config.toml").read_text()


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--set", "estimator.gamma=7"], "estimator.gamma"),
    (["run", "--byzantine", "5"], "allow_beyond_tolerance"),
    (["run", "--config", "/nonexistent.toml"], "does not exist"),
    (["run", "--attack", "nope"], "attack.name"),
    (["run", "--trajectories", "0"], "--trajectories"),
    (["sweep", "--trajectories", "10"], "--suite or --algorithms"),
])
def test_errors_are_one_line_with_exit_code_2(argv, fragment, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_help_runs_as_a_console_script() -> None:
    result = subprocess.run([sys.executable, "-m", "peer.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("run", "sweep", "bench", "report"):
        assert command in result.stdout


def test_sweep_grid_runs_and_plots(tmp_path) -> None:
    out = tmp_path / "sweep"
    code = main(["sweep", "--algorithms", "decbyzpg,dec-page-pg", "--peers", "3", "--byzantine", "0",
                 "--seeds", "0-1", "--trajectories", "16", "--jobs", "1", "--out", str(out),
                 "--set", "estimator.large_batch=4", "--set", "estimator.small_batch=2"])
    assert code == 0
    assert (out / "sweep.png").exists() and (out / "table.md").exists()
    assert len(list((out / "runs").iterdir())) == 4
    mtimes = {p: p.stat().st_mtime for p in (out / "runs").glob("*/summary.json")}
    assert main(["sweep", "--algorithms", "decbyzpg,dec-page-pg", "--peers", "3", "--byzantine", "0",
                 "--seeds", "0-1", "--trajectories", "16", "--jobs", "1", "--out", str(out),
                 "--set", "estimator.large_batch=4", "--set", "estimator.small_batch=2"]) == 0
    assert mtimes == {p: p.stat().st_mtime for p in (out / "runs").glob("*/summary.json")}  # reused, not rerun


def test_keygen_init_and_identity_checks(tmp_path, capsys) -> None:
    import os
    import stat

    assert main(["keygen", "--out", str(tmp_path / "k.key")]) == 0
    public = capsys.readouterr().out.strip()
    assert public.startswith("ed25519:")
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert main(["keygen", "--out", str(tmp_path / "k.key")]) == 2  # never overwritten silently
    assert "exists" in capsys.readouterr().err

    run_dir = tmp_path / "run"
    assert main(["init", "--peers", "5", "--byzantine", "1", "--byzantine-peers", "1", "--out", str(run_dir)]) == 0
    import tomllib

    document = tomllib.loads((run_dir / "run.toml").read_text())
    assert [p["id"] for p in document["peers"]] == [0, 1, 2, 3, 4]
    assert document["adversary"]["byzantine_ids"] == [4] and document["num_byzantine"] == 1
    assert main(["init", "--peers", "5", "--out", str(run_dir)]) == 2  # refuses to replace keys
    capsys.readouterr()
    # a key that is not the roster's key for that id is refused before anything starts
    code = main(["peer", "--config", str(run_dir / "run.toml"), "--id", "1", "--key", str(run_dir / "keys" / "2.key")])
    assert code == 2 and "does not match peer 1" in capsys.readouterr().err
    code = main(["peer", "--config", str(run_dir / "run.toml"), "--id", "9", "--key", str(run_dir / "keys" / "2.key")])
    assert code == 2 and "not in the roster" in capsys.readouterr().err
    compose = tmp_path / "compose"
    assert main(["init", "--peers", "4", "--byzantine", "0", "--byzantine-peers", "0", "--compose",
                 "--out", str(compose)]) == 0
    assert 'address = "peer-3:50051"' in (compose / "run.toml").read_text()


def test_every_named_suite_is_offered_and_builds_valid_jobs() -> None:
    from peer.lab import sweep
    from peer.cli.sweep import SWEEP_SUITES
    from peer.engine.config import build_config

    assert SWEEP_SUITES == sweep.SUITES
    for name in SWEEP_SUITES:
        jobs, title = sweep.suite(name, [0, 1], 100, {})
        configurations = {json.dumps(job.overrides, sort_keys=True) for job in jobs}
        assert title and len({job.slug for job in jobs}) == len(configurations)  # one run per configuration
        for job in jobs:
            build_config(job.overrides)
    jobs, _ = sweep.suite("bucketing", [0], None, {})
    assert sorted({job.overrides["aggregation"]["rule"] for job in jobs}) == ["bucketing+rfa", "rfa"]


def test_report_checks_evaluate_the_goal_per_configuration() -> None:
    from peer.lab.report import _checks

    def row(configuration: str, final: float, reached: int | None, tail: float) -> dict:
        return {"configuration": configuration, "panel": "AvgZero", "median_final_return": final,
                "median_trajectories_to_475": reached, "min_last_1000_return": tail, "reached_475": "2",
                "seeds": 3}

    lines = _checks([row("Dec-PAGE-PG (K=13, f=3)", 21.6, None, 20.0),
                     row("DecByzPG (K=13, f=3)", 499.0, 1234, 497.7),
                     row("DecByzPG (K=13, f=3), bucket size 2", 480.0, 1500, 11.0),
                     row("DecByzPG (K=13, f=3), bucket size 1", 499.0, 2600, 499.0),
                     row("PAGE-PG (K=1)", 10.0, None, 10.0)])
    assert lines[0] == "- Dec-PAGE-PG (K=13, f=3), AvgZero: median final return 21.6 -> collapses"
    assert lines[1].startswith("- DecByzPG (K=13, f=3), AvgZero: 475 reached by 2/3 seeds, median 1234")
    assert lines[1].endswith("met") and not lines[1].endswith("NOT met")
    assert lines[2].endswith("NOT met")  # a collapsed seed's tail fails the goal
    assert lines[3].endswith("NOT met")  # too slow
    assert len(lines) == 4
    short = _checks([row("DecByzPG (K=13, f=3)", 499.0, 1234, 300.0)], budget=2000)
    assert short[0].endswith("not judged (runs ended at 2000 trajectories)")  # its last 1,000 still hold the climb
