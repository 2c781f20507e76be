"""peer.net.reads: which read requests a peer answers, without sockets."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from decbyzpg.v1 import peer_pb2

from peer.net import crypto, reads

RUN_ID = bytes(range(32))
KEYS = {k: Ed25519PrivateKey.generate() for k in range(3)}
NOW = 1_800_000_000_000


def gate(**kwargs) -> reads.ReadGate:
    return reads.ReadGate(RUN_ID, {k: v.public_key() for k, v in KEYS.items()}, max_skew=300.0,
                          clock_ms=lambda: NOW, **kwargs)


def pull(**fields) -> peer_pb2.PullRequest:
    return peer_pb2.PullRequest(run_id=RUN_ID, iteration=7, phase=2, round=1, **fields)


def test_the_signed_bytes_are_the_documented_layout() -> None:
    """What docs/PROTOCOL.md specifies, byte for byte (a second implementation computes this)."""
    expected = (RUN_ID + b"Pull\0" + struct.pack(">IQ", 2, NOW) + struct.pack(">QII", 7, 2, 1)
                + struct.pack(">III", 2, 4, 0))
    assert reads.signed_bytes("Pull", RUN_ID, 2, NOW, pull(senders=[4, 0])) == expected
    assert reads.signed_bytes("Status", RUN_ID, 2, NOW, peer_pb2.StatusRequest()) == (
        RUN_ID + b"Status\0" + struct.pack(">IQ", 2, NOW))
    request = reads.authorize(pull(senders=[4, 0]), "Pull", RUN_ID, 2, KEYS[2], issued_ms=NOW)
    assert crypto.verify(KEYS[2].public_key(), b"decbyzpg/v1/read-request\0", expected, request.auth.signature)


@pytest.mark.parametrize("method,request_type", [("Pull", pull), ("Evidence", peer_pb2.EvidenceRequest),
                                                 ("Status", peer_pb2.StatusRequest)])
def test_a_roster_member_is_answered_and_nobody_else(method, request_type) -> None:
    assert gate().refusal(method, reads.authorize(request_type(), method, RUN_ID, 1, KEYS[1], NOW)) is None
    assert "no ReadAuth" in gate().refusal(method, request_type())
    impostor = reads.authorize(request_type(), method, RUN_ID, 1, Ed25519PrivateKey.generate(), NOW)
    assert "does not verify" in gate().refusal(method, impostor)
    unknown = reads.authorize(request_type(), method, RUN_ID, 9, KEYS[1], NOW)
    assert "not in the roster" in gate().refusal(method, unknown)
    other_run = reads.authorize(request_type(), method, bytes(32), 1, KEYS[1], NOW)
    assert "does not verify" in gate().refusal(method, other_run)


def test_freshness_is_a_window_either_way() -> None:
    for issued, ok in [(NOW - 300_000, True), (NOW + 300_000, True), (NOW - 300_001, False), (NOW + 300_001, False)]:
        request = reads.authorize(peer_pb2.StatusRequest(), "Status", RUN_ID, 0, KEYS[0], issued)
        assert (gate().refusal("Status", request) is None) is ok


def test_every_signed_pull_field_is_bound() -> None:
    signed = reads.authorize(pull(senders=[1]), "Pull", RUN_ID, 0, KEYS[0], NOW)
    for change in [dict(iteration=8), dict(phase=1), dict(round=0)]:
        altered = peer_pb2.PullRequest()
        altered.CopyFrom(signed)
        for name, value in change.items():
            setattr(altered, name, value)
        assert "does not verify" in gate().refusal("Pull", altered), change
    altered = peer_pb2.PullRequest()
    altered.CopyFrom(signed)
    altered.auth.issued_ms += 1
    assert "does not verify" in gate().refusal("Pull", altered)


def test_an_authorization_for_one_method_is_not_one_for_another() -> None:
    status = reads.authorize(peer_pb2.StatusRequest(), "Status", RUN_ID, 0, KEYS[0], NOW)
    assert "does not verify" in gate().refusal("Evidence", peer_pb2.EvidenceRequest(auth=status.auth))


def test_open_status_opens_status_only() -> None:
    assert gate(open_status=True).refusal("Status", peer_pb2.StatusRequest()) is None
    assert gate(open_status=True).refusal("Evidence", peer_pb2.EvidenceRequest()) is not None
    assert gate(open_status=True).refusal("Pull", pull()) is not None


def test_garbage_signatures_are_refused_not_raised() -> None:
    for signature in [b"", b"x", bytes(64), bytes(65)]:
        request = peer_pb2.StatusRequest(auth=peer_pb2.ReadAuth(reader=0, issued_ms=NOW, signature=signature))
        assert "does not verify" in gate().refusal("Status", request)


def test_a_pull_with_an_out_of_range_phase_is_refused_not_raised() -> None:
    """Phase is an open enum: -1 parses.  It cannot be put in the signed layout (uint32)."""
    request = peer_pb2.PullRequest(run_id=RUN_ID, iteration=7, phase=-1, round=1)
    assert gate().refusal("Pull", request) == "Pull: phase out of range"
