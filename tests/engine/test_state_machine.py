"""peer.engine.state_machine: resumable, deterministic, and honest about what it could not do."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from peer.engine.config import build_config
from peer.engine.schedule import SERVER_ID, Phase
from peer.engine.state_machine import PeerStateMachine

SMALL = {"estimator": {"large_batch": 6, "small_batch": 2, "horizon": 60}, "num_peers": 5, "num_byzantine": 0}


def run_alone(machine: PeerStateMachine, iterations: int, answer=lambda out: {}) -> list:
    """Drive `machine` with no other peers (every round receives what `answer` returns)."""
    reports = []
    for _ in range(iterations):
        program = machine.iteration()
        try:
            out = next(program)
            while True:
                out = program.send(answer(out))
        except StopIteration as done:
            reports.append(done.value)
    return reports


def test_a_restored_machine_continues_bit_identically() -> None:
    cfg = build_config(SMALL)
    genesis_hash = cfg.genesis_hash()
    original = PeerStateMachine(cfg, 1, genesis_hash)
    run_alone(original, 4)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # as a checkpoint file would hold it
    buffer.seek(0)
    restored = PeerStateMachine(cfg, 1, genesis_hash)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    run_alone(original, 5)
    run_alone(restored, 5)
    assert np.array_equal(original.theta(), restored.theta())


def test_a_small_batch_step_without_v_is_refused() -> None:
    cfg = build_config(SMALL)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    small = next(t for t in range(1, 100) if not machine.schedule.is_large_batch(t))
    machine.t = small  # as if a checkpoint had been lost
    with pytest.raises(RuntimeError, match="no v_"):
        next(machine.iteration())


def test_agreement_falls_back_to_the_own_vector_when_too_few_arrive() -> None:
    cfg = build_config(SMALL)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    (report,) = run_alone(machine, 1)  # nobody answers: q = 5 can never be met
    assert report.agreement_fallbacks == cfg.agreement.rounds
    assert report.gradient_received == 1  # only its own gradient


def test_byzpg_worker_adopts_the_servers_model() -> None:
    cfg = build_config({**SMALL, "algorithm": "byzpg"})
    worker = PeerStateMachine(cfg, 2, cfg.genesis_hash())
    model = np.full(worker.theta().shape, 0.5, dtype=np.float32)
    run_alone(worker, 1, answer=lambda out: {SERVER_ID: model} if out.round_key.phase == Phase.MODEL else {})
    assert np.array_equal(worker.theta(), model)


def test_peer_ids_outside_the_roster_are_a_bug() -> None:
    cfg = build_config(SMALL)
    with pytest.raises(ValueError, match="outside"):
        PeerStateMachine(cfg, 5, cfg.genesis_hash())



STABILISERS_OFF = {"drift_clip": 0, "max_small_steps": 0}  # each test below turns on only what it is about


def _page(**estimator):
    return build_config({"algorithm": "page-pg", "num_peers": 1, "num_byzantine": 0,
                         "estimator": {**SMALL["estimator"], **STABILISERS_OFF, **estimator}})


def test_correction_clip_bounds_each_correction_by_the_last_large_batch() -> None:
    cfg = _page(correction_clip=0.05)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    clipped = small = 0
    for _ in range(30):
        before, anchor = machine.v, machine.anchor
        (report,) = run_alone(machine, 1)
        if report.large_batch:
            assert torch.equal(machine.anchor, machine.v)
        else:
            small += 1
            limit = 0.05 * float(anchor.norm())
            step = float((machine.v - before).norm())
            assert step <= limit * (1 + 1e-5)
            clipped += step >= limit * (1 - 1e-5)
            assert torch.equal(machine.anchor, anchor)
    assert small and clipped  # the test saw small-batch steps, and the cap acted on some


def test_drift_clip_keeps_v_in_a_ball_around_the_last_large_batch() -> None:
    cfg = _page(drift_clip=0.1)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    on_boundary = small = 0
    for _ in range(30):
        (report,) = run_alone(machine, 1)
        radius = 0.1 * float(machine.anchor.norm())
        drift = float((machine.v - machine.anchor).norm())
        assert drift <= radius * (1 + 1e-5)
        if not report.large_batch:
            small += 1
            on_boundary += drift >= radius * (1 - 1e-5)
    assert small and on_boundary


@pytest.mark.parametrize("option", ["correction_clip", "drift_clip"])
def test_a_clip_that_never_binds_leaves_the_recursion_alone(option: str) -> None:
    """A huge lambda or rho: bit for bit the v and theta of the plain recursion (the genesis hash
    differs, so both machines are given the same one)."""
    off, on = _page(), _page(**{option: 1e9})
    a, b = PeerStateMachine(off, 0, off.genesis_hash()), PeerStateMachine(on, 0, off.genesis_hash())
    run_alone(a, 12)
    run_alone(b, 12)
    assert torch.equal(a.v, b.v) and np.array_equal(a.theta(), b.theta())


def test_restart_replaces_the_correction_by_a_local_large_batch() -> None:
    cfg = _page(restart_ess=1.0)  # every small batch whose weights are not all equal restarts
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    reports = run_alone(machine, 12)
    restarts = [r for r in reports if r.restarted]
    assert restarts and not any(r.large_batch for r in restarts)
    for r in restarts:
        assert r.trajectories == cfg.estimator.small_batch + cfg.estimator.large_batch
    assert all(r.trajectories == cfg.estimator.large_batch for r in reports if r.large_batch)
    assert torch.equal(machine.anchor, machine.v)  # the restart's estimate is the new v_L
    # restarting never happens with a threshold no ESS fraction is below
    never = _page(restart_ess=1e-12)
    assert not any(r.restarted for r in run_alone(PeerStateMachine(never, 0, never.genesis_hash()), 12))


def test_a_restored_machine_with_stabilisers_continues_bit_identically() -> None:
    cfg = _page(correction_clip=0.5, drift_clip=0.5, restart_ess=0.9, max_small_steps=2)
    original = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    run_alone(original, 5)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(restored.anchor, original.anchor)
    run_alone(original, 6)
    run_alone(restored, 6)
    assert np.array_equal(original.theta(), restored.theta())


@pytest.mark.parametrize("drift_clip", [0.1, 0.0])
def test_drift_clip_also_bounds_v_aggregated_in_a_small_batch_step(drift_clip: float) -> None:
    """With aggregation.every_iteration the trust region holds for the aggregate, not only for
    the peer's own v: vectors from others (here a plain mean over far-off ones) cannot carry v
    further than drift_clip ||v_L|| from v_L.  Without the clip they do (the test can fail)."""
    cfg = build_config({**SMALL, "num_byzantine": 1, "aggregation": {"rule": "mean", "every_iteration": True},
                        "agreement": {"rule": "none", "rounds": 0},
                        "estimator": {**SMALL["estimator"], "drift_clip": drift_clip}}, in_process=False)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    dim = machine.theta().size
    rng = np.random.default_rng(0)
    beyond = small = 0
    for _ in range(20):
        (report,) = run_alone(machine, 1, lambda out: {s: rng.normal(0, 3, dim).astype(np.float32) for s in (1, 2, 3, 4)})
        if report.large_batch:
            continue
        small += 1
        drift = float((machine.v - machine.anchor).norm())
        beyond += drift > 0.1 * float(machine.anchor.norm()) * (1 + 1e-5)
    assert small > 0
    assert (beyond == 0) if drift_clip else (beyond > 0)


def _drive(machine: PeerStateMachine, others: dict[int, np.ndarray], iterations: int) -> list:
    """Run `machine` for some iterations, every other peer sending the same fixed vector each round."""
    reports, seen = [], []
    for _ in range(iterations):
        program = machine.iteration()
        try:
            out = next(program)
            while True:
                seen.append((machine.t, out.round_key, sorted(others)))
                out = program.send({s: v.astype(np.float32) for s, v in others.items()})
        except StopIteration as done:
            reports.append(done.value)
    return reports


def test_an_excluded_sender_is_left_out_from_proof_plus_lag_on() -> None:
    """From t_e + EXCLUSION_LAG the excluded sender's vectors change nothing, whatever they are;
    before, they count.  A plain mean every iteration, so any vector that counts shows."""
    from peer.engine.schedule import EXCLUSION_LAG

    cfg = build_config({**SMALL, "num_peers": 5, "num_byzantine": 1, "aggregation": {"rule": "mean",
                        "every_iteration": True}, "agreement": {"rule": "none", "rounds": 0}}, in_process=False)
    dim = PeerStateMachine(cfg, 0, cfg.genesis_hash()).theta().size
    honest = {s: np.full(dim, 0.01 * s) for s in (1, 2, 3)}

    def run(liar_value: float, proven_at: int | None, iterations: int = 6) -> tuple[np.ndarray, list]:
        machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
        if proven_at is not None:
            assert machine.exclude(4, proven_at=proven_at) == proven_at + EXCLUSION_LAG
        reports = _drive(machine, {**honest, 4: np.full(dim, liar_value)}, iterations)
        return machine.theta(), reports

    a, reports = run(5.0, proven_at=1)
    b, _ = run(-5.0, proven_at=1)
    c, _ = run(5.0, proven_at=None)
    assert [r.excluded for r in reports] == [0, 0, 0, 1, 1, 1]
    assert [r.gradient_received for r in reports] == [5, 5, 5, 4, 4, 4]
    assert not np.array_equal(a, b) and not np.array_equal(a, c)  # iterations 0-2 counted the liar
    never_a, _ = run(5.0, proven_at=-EXCLUSION_LAG)  # excluded from iteration 0
    never_b, _ = run(-5.0, proven_at=-EXCLUSION_LAG)
    assert np.array_equal(never_a, never_b)


def test_exclusion_lowers_the_aggregators_bound_with_k() -> None:
    """K - e peers with bound f - e: a trimmed mean over 4 vectors trims nothing once the one
    Byzantine of K = 5, f = 1 is excluded (and 1 at each end before)."""
    cfg = build_config({**SMALL, "num_peers": 5, "num_byzantine": 1, "aggregation": {"rule": "trimmed_mean"}},
                       in_process=False)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    machine.exclude(4, proven_at=-2)
    dim = machine.theta().size
    _drive(machine, {s: np.full(dim, 0.01 * s) for s in (1, 2, 3, 4)}, 1)
    assert {k: a.f for k, a in machine._aggregators.items()} == {1: 1, 0: 0}


def test_the_earliest_proof_wins_and_survives_a_checkpoint() -> None:
    cfg = build_config({**SMALL, "num_peers": 5, "num_byzantine": 1}, in_process=False)
    machine = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    assert machine.exclude(3, proven_at=9) == 11
    assert machine.exclude(3, proven_at=4) == 6  # an earlier proof arrives later
    assert machine.exclude(3, proven_at=7) == 6
    assert machine.excluded_at(5) == frozenset() and machine.excluded_at(6) == {3}
    with pytest.raises(ValueError):
        machine.exclude(0, proven_at=1)  # itself
    with pytest.raises(ValueError):
        machine.exclude(5, proven_at=1)  # outside the roster
    buffer = io.BytesIO()
    torch.save(machine.state_dict(), buffer)
    buffer.seek(0)
    restored = PeerStateMachine(cfg, 0, cfg.genesis_hash())
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.excluded == {3: 6}
