"""peer.net.store: first wins, equivocation evidence, bounds, waiting, concurrency."""

from __future__ import annotations

import threading
import time

import pytest
from decbyzpg.v1 import peer_pb2

from peer.engine.schedule import Phase, RoundKey
from peer.net import wire
from peer.net.store import RoundStore
from peer.net.wire import Verdict
from tests.support.wire_fixtures import (
    A1,
    G0,
    KEYS,
    NOW,
    ROUNDS,
    RR,
    RUN,
    VEC,
    accepted,
    bits,
    body,
    make_validator,
    signed,
)

# --------------------------------------------------------------------------- round store


def test_store_first_wins_duplicate_equivocation() -> None:
    store = RoundStore()
    first = accepted(1)
    assert store.add(first) == RR.REJECT_REASON_UNSPECIFIED
    assert store.add(accepted(1)) == RR.REJECT_REASON_DUPLICATE
    assert store.evidence() == [] and store.equivocators() == set()
    second = accepted(1, vec=VEC * 2)
    assert store.add(second) == RR.REJECT_REASON_EQUIVOCATION
    assert bits(store.vectors(G0)[1]) == bits(VEC)  # the first stays
    assert store.count(G0) == 1
    assert store.equivocators() == {1}
    [ev] = store.evidence()
    assert isinstance(ev, peer_pb2.Equivocation)
    assert ev.first.body == first.envelope.body and ev.second.body == second.envelope.body  # type: ignore[union-attr]
    # The evidence is self-contained proof: both halves verify under the pinned key.
    for half in (ev.first, ev.second):
        assert make_validator().check(half.SerializeToString(), NOW).accepted
    # A third version for the same slot: still equivocation, but one record per slot.
    assert store.add(accepted(1, vec=VEC * 3)) == RR.REJECT_REASON_EQUIVOCATION
    assert len(store.evidence()) == 1


def test_the_same_vector_can_only_come_as_the_same_bytes() -> None:
    """Canonical bodies and deterministic Ed25519 leave one envelope per (sender, round, vector):
    a re-sent vector is a DUPLICATE, and a variant of its body never reaches the store."""
    store = RoundStore()
    v = make_validator()
    store.add(v.check(signed(body()), NOW))
    assert store.add(v.check(signed(body()), NOW)) == RR.REJECT_REASON_DUPLICATE
    assert v.check(signed(body() + b"\xf8\x06\x01"), NOW).reason == RR.REJECT_REASON_NON_CANONICAL


def test_store_rounds_and_senders_are_separate() -> None:
    store = RoundStore()
    for sender in (1, 2, 3):
        assert store.add(accepted(sender, G0, VEC + sender)) == RR.REJECT_REASON_UNSPECIFIED
    assert store.add(accepted(1, A1)) == RR.REJECT_REASON_UNSPECIFIED
    assert store.count(G0) == 3 and store.count(A1) == 1
    assert store.count(RoundKey(NOW, Phase.AGREEMENT, 2)) == 0
    got = store.vectors(G0)
    assert sorted(got) == [1, 2, 3] and bits(got[2]) == bits(VEC + 2)
    envs = store.envelopes(G0)
    assert [e.sender for e in envs] == [1, 2, 3]
    for e in envs:  # Pull replies re-verify at the requester
        assert make_validator().check(e, NOW).accepted
    assert store.keys() == [G0, A1]
    assert store.vectors(RoundKey(99, Phase.GRADIENT)) == {}


def test_store_rejects_unaccepted_verdict() -> None:
    with pytest.raises(ValueError, match="only accepted"):
        RoundStore().add(make_validator().check(b"\xff", NOW))


def test_store_vectors_read_only() -> None:
    store = RoundStore()
    store.add(accepted())
    with pytest.raises(ValueError):
        store.vectors(G0)[1][0] = 1.0


def test_store_evidence_bounded() -> None:
    store = RoundStore(max_evidence=3, max_evidence_per_sender=2)
    validator = make_validator(window_ahead=100)
    for sender in (1, 2, 3):
        for t in range(NOW, NOW + 5):
            key = RoundKey(t, Phase.GRADIENT)
            store.add(accepted(sender, key, VEC, validator))
            assert store.add(accepted(sender, key, VEC + 1, validator)) == RR.REJECT_REASON_EQUIVOCATION
    evidence = store.evidence()
    assert len(evidence) == 3
    assert sorted(e.first.sender for e in evidence) == [1, 1, 2]  # per-sender cap left room for 2
    assert store.equivocators() == {1, 2, 3}  # remembered even without kept evidence


def test_store_evidence_byte_bound() -> None:
    one = accepted().envelope.ByteSize()  # type: ignore[union-attr]
    store = RoundStore(max_evidence_bytes=3 * one)
    validator = make_validator(window_ahead=100)
    for t in range(NOW, NOW + 4):
        key = RoundKey(t, Phase.GRADIENT)
        store.add(accepted(1, key, VEC, validator))
        store.add(accepted(1, key, VEC + 1, validator))
    assert len(store.evidence()) == 1


def test_store_prune_bounds_memory() -> None:
    store = RoundStore()
    validator = make_validator()
    for t in range(200):
        key = RoundKey(t, Phase.AGREEMENT, t % ROUNDS)
        for sender, vec in [(1, VEC), (2, VEC), (3, VEC), (3, VEC + 1)]:  # 3 equivocates every time
            store.add(validator.check(wire.sign_message(KEYS[sender], RUN, key, sender, vec), t))
        assert store.count(key) == 3
        store.prune(t - 2)
        assert len(store.keys()) <= 3
        assert len(store.evidence()) <= 3
    assert [k.iteration for k in store.keys()] == [197, 198, 199]
    assert store.equivocators() == {3}


def test_store_refuses_adds_below_pruned_watermark() -> None:
    store = RoundStore()
    verdict = accepted(1, RoundKey(NOW - 2, Phase.GRADIENT))  # validated while still in window...
    store.prune(NOW - 1)  # ...then the peer moved on
    assert store.add(verdict) == RR.REJECT_REASON_STALE
    assert store.keys() == []


def test_wait_for_with_adding_thread() -> None:
    store = RoundStore()
    verdicts = [accepted(s) for s in (1, 2, 3)]

    def feed() -> None:
        for v in verdicts:
            time.sleep(0.01)
            store.add(v)

    thread = threading.Thread(target=feed)
    start = time.monotonic()
    thread.start()
    assert store.wait_for(G0, 3, timeout=5.0) == 3
    assert time.monotonic() - start < 2.0
    thread.join()
    assert store.wait_for(G0, 2, timeout=0) == 3  # already satisfied
    start = time.monotonic()
    assert store.wait_for(G0, 4, timeout=0.05) == 3  # times out with what it has
    assert 0.04 <= time.monotonic() - start < 1.0


def test_wait_for_empty_round_times_out() -> None:
    store = RoundStore()
    assert store.wait_for(A1, 1, timeout=0.01) == 0


def test_store_concurrent_adds_first_wins() -> None:
    store = RoundStore()
    same = [accepted(1) for _ in range(8)]
    results: list[int] = []
    lock = threading.Lock()

    def add(v: Verdict) -> None:
        r = store.add(v)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=add, args=(v,)) for v in same]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [RR.REJECT_REASON_UNSPECIFIED] + [RR.REJECT_REASON_DUPLICATE] * 7
