"""Fuzzing the paths an outsider or a Byzantine peer feeds: pushed bytes and Pull replies.

For arbitrary input: nothing raises, the cost is bounded (at most K signature checks per Pull
reply, time per byte bounded for pushed bytes), and stored state changes only for valid messages.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from decbyzpg.v1 import peer_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.engine.schedule import Phase, RoundKey
from peer.net import wire
from peer.net.transport import PeerTransport
from tests.support.netutil import key_of, make_run

ROUND = RoundKey(0, Phase.GRADIENT)
DIM = 386
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("fuzz"), {"num_peers": 5, "num_byzantine": 1,
                                                     "estimator": {"large_batch": 8, "small_batch": 2}})
    return run, {k: key_of(run, k) for k in range(5)}


def fresh(setting) -> PeerTransport:
    run, keys = setting
    return PeerTransport(run, 0, keys[0], DIM)  # never started: no sockets, just the receiving path


envelopes = st.builds(peer_pb2.SignedMessage, sender=st.integers(0, 2**32 - 1), body=st.binary(max_size=64),
                      signature=st.binary(max_size=80))


@FUZZ
@given(st.lists(envelopes, max_size=300))
def test_any_pull_reply_is_cheap_and_changes_nothing(setting, reply) -> None:
    transport = fresh(setting)
    checked = transport.accept_pulled(3, ROUND, reply)
    assert checked <= 5 and transport.store.vectors(ROUND) == {} and transport.accepted == 0


@FUZZ
@given(st.lists(st.sampled_from(["valid", "junk", "replay"]), min_size=1, max_size=40))
def test_only_valid_envelopes_in_a_pull_reply_are_stored(setting, kinds) -> None:
    run, keys = setting
    transport = fresh(setting)
    rng = np.random.default_rng(len(kinds))
    reply, expected = [], set()
    for i, kind in enumerate(kinds):
        sender = 1 + i % 4
        if kind == "junk":
            reply.append(peer_pb2.SignedMessage(sender=sender, body=b"\x08\x01", signature=bytes(64)))
        else:
            vector = rng.normal(size=DIM).astype(np.float32)
            reply.append(wire.sign_message(keys[sender], run.run_id, ROUND, sender, vector))
    # the first envelope per sender is the one looked at; a valid one is stored
    first = {}
    for env in reply:
        first.setdefault(env.sender, env)
    expected = {s for s, env in first.items() if env.signature != bytes(64)}
    transport.accept_pulled(3, ROUND, reply)
    assert set(transport.store.vectors(ROUND)) == expected


@FUZZ
@given(st.binary(max_size=4096))
def test_pushed_bytes_never_raise_and_cost_little_per_byte(setting, data) -> None:
    transport = fresh(setting)
    started = time.perf_counter()
    reason = transport.receive(data)
    elapsed = time.perf_counter() - started
    assert reason != wire.ACCEPTED and transport.store.vectors(ROUND) == {}
    assert elapsed < 0.25 + 1e-6 * len(data)  # linear parsing, at most one signature check (~0.2 ms); slack for a busy machine
