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
