"""peer.net.evidence: a proof convicts only when it proves; the earliest proof per sender wins;
the Report RPC spreads proofs to every peer and refuses forgeries."""

from __future__ import annotations

import time

import numpy as np
import pytest
from decbyzpg.v1 import peer_pb2

from peer.engine.schedule import Phase, RoundKey
from peer.net.evidence import InvalidProof, ProofBook, check_proof
from tests.support.wire_fixtures import G0, KEYS, OTHER_RUN, ROSTER, RUN, STRANGER, VEC, body, signed, unknown_field

LIMIT = 1 << 20


def proof(first: peer_pb2.SignedMessage, second: peer_pb2.SignedMessage) -> peer_pb2.Equivocation:
    return peer_pb2.Equivocation(first=first, second=second)


def test_two_signed_bodies_for_one_slot_prove_an_equivocation() -> None:
    checked = check_proof(proof(signed(body()), signed(body(vec=VEC * 2))), RUN, ROSTER, LIMIT)
    assert checked.sender == 1 and checked.round_key == G0


@pytest.mark.parametrize("first, second, why", [
    (signed(body()), signed(body()), "same body"),
    (signed(body()), signed(body(vec=VEC * 2), signer=STRANGER), "signature"),
    (signed(body(), signer=STRANGER), signed(body(vec=VEC * 2)), "signature"),
    (signed(body()), signed(body(vec=VEC * 2, iteration=G0.iteration + 1)), "different rounds"),
    (signed(body()), signed(body(vec=VEC * 2, phase=int(Phase.AGREEMENT))), "different rounds"),
    (signed(body()), signed(body(vec=VEC * 2, round=1)), "different rounds"),
    (signed(body()), signed(body(vec=VEC * 2, sender=2), sender=2), "two senders"),
    (signed(body(sender=9), sender=9, signer=KEYS[1]), signed(body(sender=9, vec=VEC * 2), sender=9, signer=KEYS[1]),
     "not in the roster"),
    (signed(body(run_id=OTHER_RUN)), signed(body(run_id=OTHER_RUN, vec=VEC * 2)), "another sender or run"),
    (signed(body()), signed(body(vec=VEC * 2) + unknown_field(8)), "not canonical"),
    (signed(body()), signed(b"\xff\xff not protobuf"), "not a RoundMessage"),
    (signed(body()), peer_pb2.SignedMessage(), "two envelopes"),
    (signed(body(phase=7)), signed(body(phase=7, vec=VEC * 2)), "does not exist"),
])
def test_a_forged_or_empty_proof_convicts_nobody(first, second, why: str) -> None:
    with pytest.raises(InvalidProof, match=why):
        check_proof(proof(first, second), RUN, ROSTER, LIMIT)


def test_an_oversize_envelope_is_refused_before_any_signature_is_checked() -> None:
    with pytest.raises(InvalidProof, match="larger"):
        check_proof(proof(signed(body()), signed(body(vec=np.zeros(300, np.float32)))), RUN, ROSTER, 1000)


def test_the_book_keeps_the_earliest_proof_per_sender() -> None:
    book = ProofBook()

    def at(iteration: int, sender: int = 1):
        b = dict(iteration=iteration, sender=sender)
        return check_proof(proof(signed(body(**b), sender=sender), signed(body(vec=VEC * 2, **b), sender=sender)),
                           RUN, ROSTER, LIMIT)

    assert book.offer(at(7)) and not book.offer(at(7)) and not book.offer(at(9))
    assert book.offer(at(4)) and book.offer(at(12, sender=2))
    assert book.proven_at() == {1: 4, 2: 12}
    assert book.known_at_or_before(1, 4) and not book.known_at_or_before(1, 3)


@pytest.mark.network
def test_report_spreads_a_proof_to_every_peer_and_refuses_forgeries(tmp_path) -> None:
    from peer.net import wire
    from tests.support.netutil import key_of, make_run, started_transports

    run = make_run(tmp_path, {"num_peers": 4, "num_byzantine": 0, "trajectories_per_agent": 40,
                              "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}})
    dim = 8
    slot = RoundKey(3, Phase.AGREEMENT, 0)
    liar = key_of(run, 3)
    first = wire.sign_message(liar, run.run_id, slot, 3, np.zeros(dim, np.float32))
    second = wire.sign_message(liar, run.run_id, slot, 3, np.ones(dim, np.float32))
    forged = wire.sign_message(key_of(run, 2), run.run_id, slot, 3, np.ones(dim, np.float32))  # 2 signs as 3
    with started_transports(run, dim) as transports:
        assert "signature" in transports[1].report(proof(first, forged))
        assert all(t.proofs.proven_at() == {} for t in transports)
        assert transports[0].report(proof(first, second)) is None  # handed to peer 0 only
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(t.proofs.proven_at() == {3: 3} for t in transports[:3]):
            time.sleep(0.01)
        assert [t.proofs.proven_at() for t in transports[:3]] == [{3: 3}] * 3  # forwarded to 1 and 2
        assert transports[3].proofs.proven_at() == {}  # the accused is not told
        # detected locally: the store's second body for a slot makes a proof and spreads it
        slot2 = RoundKey(1, Phase.AGREEMENT, 0)
        a = wire.sign_message(key_of(run, 2), run.run_id, slot2, 2, np.zeros(dim, np.float32))
        b = wire.sign_message(key_of(run, 2), run.run_id, slot2, 2, np.ones(dim, np.float32))
        for t in transports:
            t.set_iteration(1)
        assert transports[1].receive(a) == wire.ACCEPTED
        assert transports[1].receive(b) == peer_pb2.REJECT_REASON_EQUIVOCATION
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(2 in t.proofs.proven_at() for t in (transports[0],
                                                                                         transports[1],
                                                                                         transports[3])):
            time.sleep(0.01)
        assert all(t.proofs.proven_at().get(2) == 1 for t in (transports[0], transports[1], transports[3]))


@pytest.mark.network
def test_a_proof_has_one_report_in_flight_per_destination_and_an_earlier_one_is_still_sent(tmp_path,
                                                                                            monkeypatch) -> None:
    from peer.net import wire
    from tests.support.netutil import key_of, make_run, started_transports

    run = make_run(tmp_path, {"num_peers": 4, "num_byzantine": 0, "trajectories_per_agent": 40,
                              "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}})
    liar = key_of(run, 3)

    def pair(iteration: int) -> peer_pb2.Equivocation:
        slot = RoundKey(iteration, Phase.AGREEMENT, 0)
        return proof(*(wire.sign_message(liar, run.run_id, slot, 3, np.full(8, value, np.float32))
                       for value in (0.0, 1.0)))

    with started_transports(run, 8) as transports:
        sender = transports[0]
        spawn, sent = sender._spawn, []

        def hold(coroutine):  # Reports never complete: each stays in flight
            if coroutine.__name__ != "_send_report":
                return spawn(coroutine)
            arguments = coroutine.cr_frame.f_locals
            sent.append((arguments["destination"], arguments["proof"].round_key.iteration))
            coroutine.close()

        monkeypatch.setattr(sender, "_spawn", hold)
        assert sender.report(pair(5)) is None
        for _ in range(3):  # every iteration retries what is unacknowledged
            sender._report_pending()
        assert sorted(sent) == [(1, 5), (2, 5)]  # not to the accused, and once each
        assert sender.report(pair(2)) is None  # an earlier proof replaces it: sent too, once
        sender._report_pending()
        assert sorted(sent) == [(1, 2), (1, 5), (2, 2), (2, 5)]


def test_a_restarted_daemon_keeps_its_exclusions(tmp_path) -> None:
    """The exclusion lives in the state machine's checkpoint: a peer that restarts after its
    proofs were pruned (or from a fresh process) still leaves the equivocator out."""
    from peer.net.daemon import PeerDaemon
    from peer.net.files import save_checkpoint
    from tests.support.netutil import key_of, make_run

    run = make_run(tmp_path, {"num_peers": 5, "num_byzantine": 1, "trajectories_per_agent": 40,
                              "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}})
    before = PeerDaemon(run, 0, key_of(run, 0), tmp_path / "peer0")
    before.machine.exclude(4, proven_at=1)
    before.machine.t = 5
    (tmp_path / "peer0").mkdir()
    save_checkpoint(before.checkpoint_path, {"run_id": run.run_id, "peer_id": 0, "machine": before.machine.state_dict(),
                                             "trajectories": 0, "env_steps": 0})
    after = PeerDaemon(run, 0, key_of(run, 0), tmp_path / "peer0")
    after._resume()
    assert after.machine.excluded == {4: 3} and after.transport.proofs.proven_at() == {}
    after._apply_proofs(after.machine.t)
    assert after.transport.excluded == {4}
    assert after.transport.expected_senders(RoundKey(5, Phase.AGREEMENT, 0))[0] == {1, 2, 3}


@pytest.mark.network
@pytest.mark.parametrize("cross_check", [True, False])
def test_cross_checks_catch_a_vector_split_between_two_halves(tmp_path, cross_check: bool) -> None:
    """Peer 4 signs one vector for peers 0 and 1 and another for 2 and 3, so no honest peer
    receives both.  With network.cross_check each honest peer compares the closed round with
    one other peer: a proof appears and reaches every honest peer; without, none does."""
    from peer.net import wire
    from tests.support.netutil import key_of, make_run, started_transports

    run = make_run(tmp_path, {"num_peers": 5, "num_byzantine": 1, "trajectories_per_agent": 40,
                              "estimator": {"large_batch": 8, "small_batch": 2, "horizon": 50}},
                   network={"cross_check": cross_check})
    dim = 8
    slot = RoundKey(1, Phase.AGREEMENT, 0)
    liar = key_of(run, 4)
    halves = {0: np.zeros(dim, np.float32), 1: np.zeros(dim, np.float32),
              2: np.ones(dim, np.float32), 3: np.ones(dim, np.float32)}
    with started_transports(run, dim) as transports:
        for t in transports:
            t.set_iteration(1)
        for receiver, vector in halves.items():
            envelope = wire.sign_message(liar, run.run_id, slot, 4, vector)
            assert transports[4].push_raw(receiver, envelope.SerializeToString()) == wire.ACCEPTED
        for k in range(4):  # every honest peer also holds the others' honest messages, as after a round
            for j in range(4):
                if j != k:
                    honest = wire.sign_message(key_of(run, j), run.run_id, slot, j, np.full(dim, j, np.float32))
                    assert transports[k].receive(honest) in (wire.ACCEPTED, peer_pb2.REJECT_REASON_DUPLICATE)
        deadline = time.monotonic() + (10 if cross_check else 2)
        while time.monotonic() < deadline and not all(t.proofs.proven_at() == {4: 1} for t in transports[:4]):
            for k in range(4):  # as after each round; repeated while channels still connect
                if run.network.cross_check:
                    transports[k].cross_check(slot)
            time.sleep(0.1)
        found = [t.proofs.proven_at() for t in transports[:4]]
        if cross_check:
            assert found == [{4: 1}] * 4, found
            assert sum(t.cross_check_catches for t in transports[:4]) >= 1
            assert not any(t.junk_by_source for t in transports[:4])  # relaying the other version is not junk
        else:
            assert found == [{}] * 4
