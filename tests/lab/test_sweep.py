"""peer.lab.sweep: stable job names, and finished runs reused only when nothing that matters changed."""

from __future__ import annotations

import json

import pytest
import tomli_w

from peer.cli.sweep import SWEEP_SUITES
from peer.engine import ENGINE_REVISION
from peer.engine.errors import ConfigError
from peer.lab import sweep
from peer.lab.configure import resolve_config
from peer.lab.experiment import run_experiment
from peer.net.files import toml_safe

TINY = {"estimator": {"large_batch": 8, "small_batch": 2, "horizon": 40}, "trajectories_per_agent": 24,
        "num_peers": 3, "num_byzantine": 0}


def test_the_cli_offers_exactly_the_named_suites() -> None:
    assert SWEEP_SUITES == sweep.SUITES
    with pytest.raises(ConfigError, match="unknown suite"):
        sweep.suite("nope", [0], None, {})


def test_job_slugs_are_stable_and_tell_configurations_apart() -> None:
    a = sweep.Job("x", "p", {**TINY, "seed": 0})
    assert a.slug == sweep.Job("y", "q", {**TINY, "seed": 0}).slug  # labels do not matter
    assert a.slug != sweep.Job("x", "p", {**TINY, "seed": 1}).slug
    assert a.slug != sweep.Job("x", "p", {**TINY, "seed": 0, "optimizer": {"step_size": 0.01}}).slug


def test_grid_crosses_algorithms_peers_byzantine_and_attacks() -> None:
    jobs = sweep.grid(["decbyzpg", "dec-page-pg"], [5], [0, 1], ["avg_zero", "alie"], [0, 1], dict(TINY), None, True)
    # f = 0 runs once (no attack), f = 1 once per attack: (1 + 2) x 2 algorithms x 2 seeds
    assert len(jobs) == 12 and len({j.slug for j in jobs}) == 12


def test_a_finished_run_is_reused_only_for_the_same_config_and_revision(tmp_path) -> None:
    job = sweep.Job("tiny", "p", {**TINY, "seed": 0})
    directory = tmp_path / "runs" / job.slug
    run_experiment(resolve_config(job.overrides), directory, plot=False)
    assert sweep.finished(directory, job) is not None
    assert sweep.finished(directory, sweep.Job("tiny", "p", {**TINY, "seed": 0, "trajectories_per_agent": 16})) is None
    summary = json.loads((directory / "summary.json").read_text())
    (directory / "summary.json").write_text(json.dumps({**summary, "engine_revision": ENGINE_REVISION - 1}))
    assert sweep.finished(directory, job) is None  # made by older arithmetic: redone
    (directory / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    assert sweep.finished(directory, job) is None


def test_a_run_recorded_before_the_default_changed_is_not_taken_for_todays_default(tmp_path) -> None:
    """Records written before stop 13 omit stabilisers that were off; a missing one reads as off."""
    former = {"aggregation": {"every_iteration": False}, "estimator": {**TINY["estimator"], "drift_clip": 0,
                                                                        "max_small_steps": 0}}
    job = sweep.Job("former", "p", {**TINY, **former, "seed": 0})
    directory = tmp_path / "runs" / job.slug
    run_experiment(resolve_config(job.overrides), directory, plot=False)
    # rewrite the record as the former code did: the hashed form, without the options that were off
    (directory / "config.toml").write_text(tomli_w.dumps(toml_safe(resolve_config(job.overrides).to_dict())))
    assert "drift_clip" not in (directory / "config.toml").read_text()
    assert sweep.finished(directory, job) is not None
    # page-pg's default differs from that record only in the stabilisers: it must not be taken for it
    single = {**TINY, "num_peers": 1, "algorithm": "page-pg", "seed": 0}
    old_single = sweep.Job("old", "p", {**single, "estimator": former["estimator"]})
    old_dir = tmp_path / "runs" / old_single.slug
    run_experiment(resolve_config(old_single.overrides), old_dir, plot=False)
    (old_dir / "config.toml").write_text(tomli_w.dumps(toml_safe(resolve_config(old_single.overrides).to_dict())))
    assert sweep.finished(old_dir, old_single) is not None
    assert sweep.finished(old_dir, sweep.Job("default", "p", single)) is None


def test_every_named_suite_is_offered_and_builds_valid_jobs() -> None:
    for name in SWEEP_SUITES:
        jobs, title = sweep.suite(name, [0, 1], 100, {})
        configurations = {json.dumps(job.overrides, sort_keys=True) for job in jobs}
        assert title and len({job.slug for job in jobs}) == len(configurations)  # one run per configuration
        for job in jobs:
            resolve_config(job.overrides)
    jobs, _ = sweep.suite("bucketing", [0], None, {})
    assert sorted({job.overrides["aggregation"]["rule"] for job in jobs}) == ["bucketing+rfa", "rfa"]


def test_a_daemon_run_file_runs_in_process_as_the_same_run(tmp_path) -> None:
    import tomllib

    from peer.engine.config import build_config
    from peer.engine.errors import ConfigError
    from peer.lab.cluster import init_run

    cfg = build_config({**TINY, "num_peers": 5, "num_byzantine": 1}, in_process=False)
    path = init_run(tmp_path / "run", cfg, [4], "alie", {"z": 2.0})
    resolved = resolve_config(tomllib.loads(path.read_text()))
    assert resolved.num_byzantine == 1 and resolved.attack.name == "alie" and resolved.attack.params == {"z": 2.0}
    assert resolved.genesis_hash() == cfg.genesis_hash()  # the same coin, streams and initial parameters
    other = init_run(tmp_path / "other", cfg, [0], "alie")  # a Byzantine id the engine cannot place
    with pytest.raises(ConfigError, match="last num_byzantine"):
        resolve_config(tomllib.loads(other.read_text()))


def test_the_stability_suite_is_issue_14s_grid_at_3000_trajectories() -> None:
    jobs, _ = sweep.suite("stability", range(20), None, {})
    assert len(jobs) == 7 * 20 and {j.overrides["trajectories_per_agent"] for j in jobs} == {3000}
    attacked = {(j.overrides["attack"]["name"], j.overrides["attack"].get("params", {}).get("z"),
                 j.overrides["attack"].get("params", {}).get("epsilon")) for j in jobs if j.overrides["num_byzantine"]}
    assert attacked == {("random_action", None, None), ("large_noise", None, None), ("avg_zero", None, None),
                        ("alie", 6.0, None), ("ipm", None, 4.0)}
    assert all(j.overrides["num_peers"] == 13 and j.overrides["num_byzantine"] == 3 for j in jobs
               if j.overrides.get("attack"))
    variant, _ = sweep.suite("stability", [0], 500, {"estimator": {"drift_clip": 0.5}})
    assert all(j.overrides["estimator"]["drift_clip"] == 0.5 and j.overrides["trajectories_per_agent"] == 500
               for j in variant)


def _summary(seed: int, to_475: int | None, tail: float) -> dict:
    return {"seed": seed, "trajectories_to_475": to_475, "last_1000_honest_return": tail}


def test_stability_table_counts_reach_hold_and_names_every_miss() -> None:
    job = sweep.Job("PAGE-PG (K=1)", "single agent", {})
    summaries = [_summary(0, 1200, 490.0), _summary(1, 2600, 480.0), _summary(2, 900, 20.0),
                 _summary(3, None, 9.5), _summary(4, 2500, 450.0)]
    (row,) = sweep.stability_table([(job, s) for s in summaries])
    assert row["seeds"] == 5 and row["reach_475_by_2500"] == 3 and row["hold_450"] == 3 and row["stable"] == 2
    assert row["median_trajectories_to_475"] == 2500  # of 900, 1200, 2500, 2600, never
    assert row["misses (seed: to 475 / last 1000)"] == "1: 2600 / 480; 2: 900 / 20; 3: never / 10"
    (none_reached,) = sweep.stability_table([(job, _summary(s, None, 10.0)) for s in range(3)])
    assert none_reached["median_trajectories_to_475"] is None and none_reached["stable"] == 0


def test_the_475_columns_are_cartpoles_and_a_lunar_lander_table_has_only_its_target() -> None:
    def run(env_target: int, to_target: int | None) -> dict:
        return {"seed": 0, "trajectories_to_475": None, "target_return": env_target,
                "trajectories_to_target": to_target, "final_honest_return": -20.0,
                "last_1000_honest_return": -25.0, "wall_seconds": 1.0}

    job = sweep.Job("DecByzPG (K=13, f=3)", "AvgZero", {})
    (lunar,) = sweep.table([(job, run(200, 6100))])
    assert "reached_475" not in lunar and "median_trajectories_to_475" not in lunar
    assert lunar["median_trajectories_to_target"] == 6100
    (cartpole,) = sweep.table([(job, run(475, None))])
    assert cartpole["reached_475"] == 0 and cartpole["median_trajectories_to_475"] is None


def test_a_suite_runs_its_essential_jobs_first_and_keeps_the_figure_order(tmp_path, monkeypatch) -> None:
    jobs, _ = sweep.suite("lunar-attacks", [0], None, {})
    assert {j.overrides["trajectories_per_agent"] for j in jobs} == {sweep.LUNAR_BUDGET}
    assert [j.label for j in jobs[:4]] == ["PAGE-PG (K=1)", "Dec-PAGE-PG (K=13, f=0)", "Dec-PAGE-PG (K=13, f=3)",
                                           "DecByzPG (K=13, f=3)"]  # the paper's legend order
    ran = []
    monkeypatch.setattr(sweep, "_run", lambda label, panel, overrides, directory: ran.append(
        (overrides["algorithm"], overrides["attack"]["name"] if overrides.get("num_byzantine") else "none")) or {})
    sweep.run_jobs(jobs, tmp_path, workers=1)
    assert ran[:4] == [("decbyzpg", "random_action"), ("decbyzpg", "large_noise"), ("dec-page-pg", "avg_zero"),
                       ("decbyzpg", "avg_zero")]
    assert len(ran) == 8  # PAGE-PG and Dec-PAGE-PG without Byzantines once, shared by the three panels
