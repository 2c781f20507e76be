"""Whole in-process runs, kept tiny: determinism, roles, attacks' effects, budget."""

from __future__ import annotations

import numpy as np
import pytest

from peer.engine.config import build_config
from peer.lab.inprocess import InProcessRun

SMALL = {"estimator": {"large_batch": 8, "small_batch": 2, "horizon": 200}}


def cfg(**over):
    data = {**SMALL, "num_peers": 5, "num_byzantine": 0, **over}
    return build_config(data)


def thetas(run: InProcessRun) -> dict[int, np.ndarray]:
    return {k: p.theta().copy() for k, p in run.peers.items()}


def test_same_config_gives_bit_identical_parameters() -> None:
    c = cfg(num_byzantine=1, attack={"name": "equivocation"})
    runs = [InProcessRun(c), InProcessRun(c)]
    for _ in range(6):
        for run in runs:
            run.step()
    a, b = thetas(runs[0]), thetas(runs[1])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = InProcessRun(cfg(num_byzantine=1, attack={"name": "equivocation"}, seed=1))
    for _ in range(6):
        other.step()
    assert not np.array_equal(thetas(other)[0], a[0])


def test_budget_is_never_overshot() -> None:
    run = InProcessRun(cfg())
    rows = list(run.iterate(30))
    assert rows[-1].trajectories_per_agent <= 30
    assert rows[-1].trajectories_per_agent + run.next_batch_size() > 30


def test_small_batch_steps_are_local_and_agreement_reunites_peers() -> None:
    local = {"every_iteration": False}  # Algorithm 2's local small-batch steps (the default aggregates them)
    no_agree = InProcessRun(cfg(agreement={"rule": "none", "rounds": 0}, aggregation=local,
                                estimator={**SMALL["estimator"], "switch_prob": 0.0, "max_small_steps": 0}))
    agree = InProcessRun(cfg(aggregation=local, estimator={**SMALL["estimator"], "switch_prob": 0.0, "max_small_steps": 0}))
    for _ in range(4):  # t = 0 aggregates, t >= 1 are local small-batch steps
        no_agree.step()
        agree.step()
    spread = [np.linalg.norm(v - thetas(no_agree)[0]) for v in thetas(no_agree).values()]
    assert max(spread) > 0  # peers drift apart between large batches ...
    same = thetas(agree)
    assert all(np.array_equal(same[0], v) for v in same.values())  # ... MDA pulls them together


def test_byzpg_workers_follow_the_server() -> None:
    run = InProcessRun(cfg(algorithm="byzpg", num_byzantine=1, attack={"name": "large_noise"}))
    for _ in range(5):
        reports = run.step()
        server = run.peers[0].theta()
        assert all(np.array_equal(server, p.theta()) for p in run.peers.values())
        if not reports[0].large_batch:
            assert [r.trajectories for r in reports[1:]] == [0] * (len(reports) - 1)  # workers idle


def _first_aggregate(c) -> tuple[float, float]:
    """Norm of v_0 at honest peer 0, and of peer 0's own gradient estimate, after iteration 0."""
    run = InProcessRun(c)
    program = run.peers[0].iteration()
    own = next(program).vector  # peek at peer 0's broadcast gradient, then let the run proceed
    program.close()
    run.peers[0].t = 0
    run.step()
    return float(np.linalg.norm(run.peers[0].v)), float(np.linalg.norm(own))


def test_large_noise_breaks_the_mean_but_not_decbyzpg() -> None:
    noise = {"num_byzantine": 1, "attack": {"name": "large_noise"}}
    naive, own = _first_aggregate(cfg(algorithm="dec-page-pg", allow_beyond_tolerance=True, **noise))
    robust, _ = _first_aggregate(cfg(algorithm="decbyzpg", **noise))
    assert naive > 30 * own  # the mean is dominated by noise of scale 1000
    assert robust < 3 * own  # the robust aggregate stays at the honest gradients' scale


def test_avg_zero_cancels_the_mean() -> None:
    """With the plain mean, AvgZero's gradients cancel the honest ones exactly."""
    attack = {"num_byzantine": 1, "attack": {"name": "avg_zero"}}
    naive, own = _first_aggregate(cfg(algorithm="dec-page-pg", allow_beyond_tolerance=True, **attack))
    robust, _ = _first_aggregate(cfg(algorithm="decbyzpg", **attack))
    assert naive < 1e-4 * own
    assert robust > 0.1 * own


@pytest.mark.parametrize("attack", ["random_action", "silence", "equivocation", "mda_fooling", "alie", "ipm",
                                    "mimic", "sign_flip"])
def test_decbyzpg_survives_every_attack_briefly(attack: str) -> None:
    run = InProcessRun(cfg(num_byzantine=1, attack={"name": attack}))
    rows = list(run.iterate(40))
    assert all(np.isfinite(r.honest_mean_return) for r in rows)
    assert all(np.isfinite(p.theta()).all() for p in run.peers.values())
    assert rows[-1].honest_diameter < 1.0


def test_gaussian_policy_on_a_continuous_task() -> None:
    c = build_config({"env": "Pendulum-v1", "num_peers": 3, "estimator": {"large_batch": 4, "small_batch": 2,
                                                                          "horizon": 50}})
    run = InProcessRun(c)
    rows = list(run.iterate(12))
    assert rows and all(np.isfinite(r.honest_mean_return) for r in rows)
    assert rows[-1].honest_mean_return < 0  # Pendulum's rewards are negative


def test_dec_page_pg_peers_stay_identical_without_byzantines() -> None:
    run = InProcessRun(cfg(algorithm="dec-page-pg"))
    for _ in range(5):
        run.step()
    values = list(thetas(run).values())
    assert all(np.array_equal(values[0], v) for v in values)
