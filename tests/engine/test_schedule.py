"""peer.engine.schedule: the one owner of which rounds exist, checked against the program itself."""

from __future__ import annotations

import pytest

from peer.engine.config import build_config
from peer.engine.schedule import SERVER_ID, Phase, RoundKey, RoundShape, Schedule
from peer.engine.state_machine import PeerStateMachine

SMALL = {"estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}, "trajectories_per_agent": 60}
ALGORITHMS = ["decbyzpg", "dec-page-pg", "byzpg", "page-pg"]


def cfg(algorithm: str, **over):
    peers = 1 if algorithm == "page-pg" else 5
    return build_config({**SMALL, "algorithm": algorithm, "num_peers": peers, "num_byzantine": 0, **over})


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_state_machine_yields_exactly_the_scheduled_rounds(algorithm: str) -> None:
    """Byzantine daemons and the validator rely on `rounds(t)`: the program must go through exactly those."""
    c = cfg(algorithm)
    schedule = Schedule.of(c)
    machine = PeerStateMachine(c, 0, c.genesis_hash())
    seen_small = False
    for t in range(8):
        seen_small |= not schedule.is_large_batch(t)
        program, yielded = machine.iteration(), []
        try:
            out = next(program)
            while True:
                yielded.append(out.round_key)
                out = program.send({})
        except StopIteration:
            pass
        assert tuple(yielded) == schedule.rounds(t), (algorithm, t)
    assert seen_small  # the check covered small-batch iterations too


def _small(schedule: Schedule) -> int:
    return next(t for t in range(100) if not schedule.is_large_batch(t))


def test_rounds_per_algorithm() -> None:
    dec = Schedule.of(cfg("decbyzpg", aggregation={"every_iteration": False}))  # Algorithm 2: local small-batch steps
    large = next(t for t in range(100) if dec.is_large_batch(t) and t > 0)
    small = _small(dec)
    assert dec.rounds(large) == (RoundKey(large, Phase.GRADIENT), *(RoundKey(large, Phase.AGREEMENT, r) for r in range(3)))
    assert dec.rounds(small) == tuple(RoundKey(small, Phase.AGREEMENT, r) for r in range(3))
    every = Schedule.of(cfg("decbyzpg"))  # the default also aggregates v_t in small-batch iterations
    small = _small(every)
    assert every.rounds(small) == (RoundKey(small, Phase.GRADIENT), *(RoundKey(small, Phase.AGREEMENT, r) for r in range(3)))
    naive = Schedule.of(cfg("dec-page-pg"))  # aggregates v_t every iteration, no agreement
    assert naive.rounds(_small(naive)) == (RoundKey(_small(naive), Phase.GRADIENT),)
    byz = Schedule.of(cfg("byzpg"))
    assert byz.rounds(_small(byz)) == (RoundKey(_small(byz), Phase.MODEL),)
    assert byz.rounds(0) == (RoundKey(0, Phase.GRADIENT), RoundKey(0, Phase.MODEL))
    silent = Schedule.of(cfg("decbyzpg", agreement={"rule": "none", "rounds": 0}, aggregation={"every_iteration": False}))
    assert silent.rounds(_small(silent)) == ()


def test_coin_starts_large_and_is_a_pure_function_of_the_genesis_hash() -> None:
    c = cfg("decbyzpg")
    a, b = Schedule.of(c), Schedule.of(c)
    assert a.is_large_batch(0)
    assert [a.is_large_batch(t) for t in range(200)] == [b.is_large_batch(t) for t in range(200)]
    other = Schedule.of(c, genesis_hash=bytes(32))
    assert [a.is_large_batch(t) for t in range(200)] != [other.is_large_batch(t) for t in range(200)]
    share = sum(a.is_large_batch(t) for t in range(1, 2001)) / 2000
    assert abs(share - c.estimator.switch_prob) < 0.04


def test_iteration_count_never_overshoots_the_budget() -> None:
    s = Schedule.of(cfg("decbyzpg"))
    used = sum(s.batch_size(t) for t in range(s.iteration_count))
    assert used <= 60 < used + s.batch_size(s.iteration_count)


def test_senders_and_quorum() -> None:
    c = build_config({**SMALL, "num_peers": 5, "num_byzantine": 1, "attack": {"name": "avg_zero"}})
    s = Schedule.of(c)
    assert s.senders(RoundKey(0, Phase.GRADIENT)) == frozenset(range(5))
    assert s.quorum(RoundKey(0, Phase.AGREEMENT, 1)) == 4  # q = K - f
    byz = Schedule.of(cfg("byzpg"))
    assert byz.senders(RoundKey(0, Phase.MODEL)) == frozenset({SERVER_ID}) and byz.quorum(RoundKey(0, Phase.MODEL)) == 1


def test_shape_admits_exactly_the_slots_some_iteration_has() -> None:
    dec = Schedule.of(cfg("decbyzpg")).shape()
    assert dec.admits(Phase.GRADIENT, 0) and not dec.admits(Phase.GRADIENT, 1)
    assert dec.admits(Phase.AGREEMENT, 2) and not dec.admits(Phase.AGREEMENT, 3)
    assert not dec.admits(Phase.MODEL, 0) and not dec.admits(0, 0)
    byz = Schedule.of(cfg("byzpg")).shape()
    assert byz.admits(Phase.MODEL, 0) and not byz.admits(Phase.AGREEMENT, 0)
    with pytest.raises(ValueError, match="agreement_rounds"):
        RoundShape(frozenset({Phase.AGREEMENT}), 0)
    with pytest.raises(ValueError):
        RoundShape(frozenset(), 0)


@pytest.mark.parametrize("m", [1, 3])
def test_max_small_steps_bounds_every_small_batch_run(m: int) -> None:
    """x_t is forced to 1 after m small-batch iterations in a row; coin-1 iterations stay large."""
    from peer.engine import randomness

    bounded_cfg = cfg("decbyzpg", estimator={**SMALL["estimator"], "switch_prob": 0.1, "max_small_steps": m})
    bounded = Schedule.of(bounded_cfg)
    coin = [randomness.common_coin(bounded.genesis_hash, t, 0.1) for t in range(600)]
    x = [bounded.is_large_batch(t) for t in range(600)]
    assert all(x[t] for t in range(600) if coin[t])
    run = longest = 0
    for large in x:
        run = 0 if large else run + 1
        longest = max(longest, run)
    assert longest == m  # with p = 0.1, a longer run of the coin occurs in 600 iterations
    # forced iterations sit at a + k(m+1) after the last coin-1 iteration a
    last = 0
    for t in range(1, 600):
        if coin[t]:
            last = t
        else:
            assert x[t] == ((t - last) % (m + 1) == 0), t
    # a pure function of (genesis hash, t): a fresh schedule asked in another order agrees
    fresh = Schedule.of(bounded_cfg)
    assert [fresh.is_large_batch(t) for t in reversed(range(600))][::-1] == x


def test_max_small_steps_off_is_the_coin() -> None:
    c = cfg("decbyzpg", estimator={**SMALL["estimator"], "max_small_steps": 0})
    assert c.estimator.max_small_steps == 0
    s = Schedule.of(c)
    from peer.engine import randomness

    assert [s.is_large_batch(t) for t in range(300)] == [
        randomness.common_coin(s.genesis_hash, t, c.estimator.switch_prob) for t in range(300)]
