"""Equivocation proofs: checked by anyone, shared with every peer, turned into exclusions.

A proof is two envelopes, validly signed by one sender under the round-message domain, for
the same (run, iteration, phase, round) with different bodies.  Honest peers never sign two
bodies for one slot, so a proof convicts its sender without trusting whoever relays it:
a peer that detects one (`RoundStore`) or receives one (the Report RPC) checks it with
`check_proof`, remembers the earliest proof per sender (`ProofBook`), forwards what is new
to every other peer, and the state machine leaves the sender out from the proof's
iteration plus `EXCLUSION_LAG` on (`PeerStateMachine.exclude`).

The checks run cheapest first (sizes, sender, identical bytes, parsing, slot) and the two
signature verifications last, so a forged proof costs at most two verifications, as much
as two pushed messages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from decbyzpg.v1 import peer_pb2

from peer.engine.errors import ProtocolError
from peer.engine.schedule import Phase, RoundKey
from peer.net import crypto
from peer.net.wire import DOMAIN, decode_body


class InvalidProof(ProtocolError):
    """A reported equivocation proof that does not prove anything (one-line reason)."""


@dataclass(frozen=True)
class Proof:
    """A checked proof: who equivocated, in which round, and the two envelopes."""

    sender: int
    round_key: RoundKey
    message: peer_pb2.Equivocation


def check_proof(message: peer_pb2.Equivocation, run_id: bytes, roster: Mapping[int, Ed25519PublicKey],
                max_message_bytes: int) -> Proof:
    """The proof `message` makes, or InvalidProof saying why it makes none."""
    first, second = message.first, message.second
    if not first.body or not second.body:
        raise InvalidProof("a proof needs two envelopes with bodies")
    if max(first.ByteSize(), second.ByteSize()) > max_message_bytes:
        raise InvalidProof("an envelope of the proof is larger than any message")
    if first.sender != second.sender:
        raise InvalidProof(f"the envelopes come from two senders ({first.sender} and {second.sender})")
    sender = first.sender
    public_key = roster.get(sender)
    if public_key is None:
        raise InvalidProof(f"sender {sender} is not in the roster")
    if first.body == second.body:
        raise InvalidProof("the two envelopes carry the same body")
    slots = []
    for envelope in (first, second):
        body, canonical = decode_body(envelope.body)
        if body is None:
            raise InvalidProof("a body is not a RoundMessage")
        if not canonical:
            raise InvalidProof("a body is not canonical")
        if body.sender != sender or body.run_id != run_id:
            raise InvalidProof("a body names another sender or run")
        slots.append((int(body.iteration), int(body.phase), int(body.round)))
    if slots[0] != slots[1]:
        raise InvalidProof(f"the bodies are for different rounds {slots[0]} and {slots[1]}")
    try:
        round_key = RoundKey(slots[0][0], Phase(slots[0][1]), slots[0][2])
    except ValueError:
        raise InvalidProof(f"phase {slots[0][1]} does not exist") from None
    for envelope in (first, second):
        if not crypto.verify(public_key, DOMAIN, envelope.body, envelope.signature):
            raise InvalidProof(f"a signature does not verify with peer {sender}'s key")
    return Proof(sender, round_key, message)


class ProofBook:
    """The earliest checked proof against each sender (thread-safe).

    Only the earliest matters: it fixes the iteration the sender is excluded from, and a
    peer that learns an earlier proof later moves its exclusion earlier (not yet run
    iterations only).  One proof per sender bounds the memory by the roster.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._earliest: dict[int, Proof] = {}

    def offer(self, proof: Proof) -> bool:
        """Keep `proof` if it is the first or an earlier one against its sender; True if kept."""
        with self._lock:
            known = self._earliest.get(proof.sender)
            if known is not None and known.round_key.iteration <= proof.round_key.iteration:
                return False
            self._earliest[proof.sender] = proof
            return True

    def known_at_or_before(self, sender: int, iteration: int) -> bool:
        """Whether a proof against `sender` no later than `iteration` is held (checked before verifying)."""
        with self._lock:
            known = self._earliest.get(sender)
            return known is not None and known.round_key.iteration <= iteration

    def proven_at(self) -> dict[int, int]:
        """sender -> iteration of its earliest proof."""
        with self._lock:
            return {s: p.round_key.iteration for s, p in self._earliest.items()}

    def proofs(self) -> list[Proof]:
        with self._lock:
            return list(self._earliest.values())
