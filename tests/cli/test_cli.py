"""The command line: a tiny run end to end, and clean one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peer.cli.main import main
from peer.net.files import read_metrics
from peer.net.runfile import load_run_file


def test_run_writes_a_complete_results_directory(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["run", "--peers", "5", "--byzantine", "1", "--trajectories", "40", "--out", str(out), "--quiet",
                 "--set", "estimator.large_batch=8", "--set", "estimator.small_batch=2"])
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"config.toml", "metrics.csv", "summary.json", "returns.png"}
    summary = json.loads((out / "summary.json").read_text())
    rows = read_metrics(out / "metrics.csv")
    assert summary["trajectories_per_agent"] == rows[-1].trajectories_per_agent <= 40
    assert summary["attack"] == "avg_zero" and summary["num_byzantine"] == 1
    for key in ("final_honest_return", "trajectories_to_475", "env_steps", "wall_seconds"):
        assert key in summary
    assert 4 not in rows[0].peer_returns and set(rows[0].peer_returns) == {0, 1, 2, 3}  # Byzantine: no honest return
    assert "final_honest_return" in capsys.readouterr().out


def test_run_into_a_directory_with_a_checkpoint_resumes_it_or_refuses_another_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    flags = ["--peers", "5", "--byzantine", "1", "--trajectories", "24", "--out", str(out), "--quiet",
             "--set", "estimator.large_batch=8", "--set", "estimator.small_batch=2"]
    assert main(["run", *flags]) == 0
    capsys.readouterr()
    assert main(["run", *flags]) == 0  # the same run: its final checkpoint is resumed, nothing recomputed
    assert "resuming its checkpoint" in " ".join(capsys.readouterr().err.split())  # rich wraps lines
    assert main(["run", *flags, "--seed", "9"]) == 3  # another run's directory: one line, nothing touched
    assert "another configuration" in capsys.readouterr().err
    assert main(["run", *flags, "--seed", "9", "--fresh"]) == 0


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
    (["bench", "--network", "--peers", "4", "--byzantine", "4"], "--byzantine < --peers"),
    (["bench", "--network", "--peers", "5", "--byzantine", "2"], "allow_beyond_tolerance"),
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


def test_sweep_finished_only_renders_the_finished_runs_and_runs_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--algorithms", "decbyzpg", "--peers", "3", "--byzantine", "0", "--trajectories", "16",
            "--jobs", "1", "--out", str(out), "--set", "estimator.large_batch=4", "--set", "estimator.small_batch=2"]
    assert main([*argv, "--finished-only", "--seeds", "0-1"]) == 3  # nothing finished yet: a one-line error
    assert "no finished run" in capsys.readouterr().err
    assert main([*argv, "--seeds", "0"]) == 0
    capsys.readouterr()
    (out / "table.md").unlink()
    assert main([*argv, "--finished-only", "--seeds", "0-2"]) == 0
    assert "1 of 3 runs finished" in capsys.readouterr().out
    assert len(list((out / "runs").iterdir())) == 1  # seeds 1 and 2 were not run
    assert (out / "table.md").exists() and (out / "sweep.png").exists()


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


def test_a_config_error_found_late_leaves_nothing_behind(tmp_path, capsys) -> None:
    """Attack parameters are checked with everything else, before the results directory exists."""
    out = tmp_path / "never"
    assert main(["run", "--attack", "alie", "--set", "attack.params.z=abc", "--out", str(out)]) == 2
    assert "attack.params.z" in capsys.readouterr().err and not out.exists()


def test_any_gymnasium_id_runs_and_the_summary_names_its_target(tmp_path, capsys) -> None:
    out = tmp_path / "acrobot"
    code = main(["run", "--env", "Acrobot-v1", "--peers", "3", "--byzantine", "0", "--trajectories", "20",
                 "--set", "estimator.large_batch=10", "--set", "estimator.small_batch=5",
                 "--set", "estimator.horizon=30", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target_return"] == -100.0  # gymnasium's reward_threshold for Acrobot-v1
    printed = capsys.readouterr().out
    assert "trajectories_to_-100" in printed and "trajectories_to_475" not in printed


def test_bugs_are_not_disguised_as_user_errors(monkeypatch) -> None:
    """Only the project's error family becomes a one-line message; anything else keeps its traceback."""
    import peer.cli.report as report_commands

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setattr(report_commands, "cmd_bench", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["bench", "--quick"])


def test_init_for_separate_hosts_writes_given_addresses_and_network_settings(tmp_path, capsys) -> None:
    out = tmp_path / "hosts"
    addresses = ",".join(f"10.1.0.{k}:50051" for k in range(5))
    assert main(["init", "--peers", "5", "--byzantine", "1", "--byzantine-peers", "1", "--addresses", addresses,
                 "--set", "network.round_timeout=30", "--out", str(out)]) == 0
    run = load_run_file(out / "run.toml")
    assert [p.address for p in run.peers] == addresses.split(",") and run.network.round_timeout == 30.0
    assert main(["init", "--peers", "5", "--addresses", "10.1.0.1:1", "--out", str(tmp_path / "x")]) == 2
    assert "5 peers" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["init", "--peers", "5", "--set", "network.grace=-1", "--out", str(tmp_path / "y")]) == 2
    assert "network.grace" in capsys.readouterr().err and not (tmp_path / "y").exists()
