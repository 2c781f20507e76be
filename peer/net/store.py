"""The round store: accepted messages by round, first-wins, with equivocation evidence.

Shared between the gRPC server threads that accept messages and the daemon thread that
waits for a round to fill, hence the lock and the condition variable; the transport
prunes it as iterations advance so its memory stays bounded by the retention window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
from decbyzpg.v1 import peer_pb2

from peer.engine.schedule import RoundKey
from peer.net.wire import ACCEPTED, Verdict


@dataclass(frozen=True)
class Equivocation:
    """Two validly signed, different bodies from one sender for one round (first kept)."""

    first: peer_pb2.SignedMessage
    second: peer_pb2.SignedMessage

    def to_proto(self) -> peer_pb2.Equivocation:
        out = peer_pb2.Equivocation()
        out.first.CopyFrom(self.first)
        out.second.CopyFrom(self.second)
        return out


@dataclass(frozen=True, eq=False)
class _Held:
    envelope: peer_pb2.SignedMessage
    vector: np.ndarray


class RoundStore:
    """Accepted messages by round and sender: first valid message wins.

    `add` returns a RejectReason: UNSPECIFIED when stored, DUPLICATE when the identical
    body arrives again (retries and Pull catch-up make this normal), EQUIVOCATION when a
    *different* validly signed body arrives for a (sender, round) already held.  The first
    stays -- a Byzantine peer must not be able to revise its vector after seeing others'
    or to make peers that heard it at different times disagree about it -- and the pair
    is kept as evidence: both envelopes carry the sender's signature, so any third party
    can check the proof.  Honest peers serialize and sign exactly one body per round, so
    two distinct signed bodies for one round prove a faulty signer even if their vectors
    happen to be equal.

    Memory is bounded: rounds exist only inside the validator's iteration window and
    `prune` drops old ones (and refuses later adds below the pruned watermark, so a
    message validated just before a prune cannot resurrect an old round); evidence keeps
    at most one record per (sender, round), at most `max_evidence_per_sender` per sender
    (so one flooding equivocator cannot crowd out proof against others), at most
    `max_evidence` in total and at most `max_evidence_bytes` of envelopes.  Equivocators
    are remembered even when their evidence is not kept or is pruned.

    Thread-safe: gRPC worker threads add while the peer's driver waits in `wait_for`.
    """

    def __init__(
        self,
        max_evidence: int = 1000,
        max_evidence_per_sender: int = 16,
        max_evidence_bytes: int = 64 << 20,
    ) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rounds: dict[RoundKey, dict[int, _Held]] = {}
        self._evidence: dict[tuple[int, RoundKey], Equivocation] = {}
        self._evidence_per_sender: dict[int, int] = {}
        self._evidence_bytes = 0
        self._equivocators: set[int] = set()
        # called with each new proof (the transport shares it and excludes the sender)
        self.on_equivocation: Callable[[int, RoundKey, peer_pb2.Equivocation], None] | None = None
        self._by_signature: dict[bytes, tuple[RoundKey, int]] = {}  # held envelopes, for `holds`
        self._wanted: dict[RoundKey, list[int]] = {}  # counts `wait_for` callers wait for, per round
        self._floor = -1  # iterations below this have been pruned
        self.max_evidence = max_evidence
        self.max_evidence_per_sender = max_evidence_per_sender
        self.max_evidence_bytes = max_evidence_bytes

    def add(self, verdict: Verdict) -> int:
        """Store an accepted verdict; returns UNSPECIFIED, DUPLICATE, EQUIVOCATION or STALE.

        STALE only when the verdict's iteration was pruned meanwhile.  Raises ValueError
        for a verdict that was not accepted (a caller bug, not an input problem).
        """
        if not verdict.accepted or verdict.round_key is None or verdict.envelope is None or verdict.sender is None:
            raise ValueError(f"only accepted verdicts can be stored (got {verdict.reason_name})")
        round_key, sender, env = verdict.round_key, verdict.sender, verdict.envelope
        with self._changed:
            if round_key.iteration < self._floor:
                return peer_pb2.REJECT_REASON_STALE
            held_round = self._rounds.setdefault(round_key, {})
            held = held_round.get(sender)
            if held is None:
                vector = verdict.vector
                if vector is not None and vector.flags.writeable:
                    vector = vector.copy()
                    vector.flags.writeable = False
                held_round[sender] = _Held(env, vector)
                self._by_signature[env.signature] = (round_key, sender)
                # wake a waiter only when its count is reached, not once per message
                if len(held_round) >= min(self._wanted.get(round_key, (0,))):
                    self._changed.notify_all()
                return ACCEPTED
            if held.envelope.body == env.body:
                return peer_pb2.REJECT_REASON_DUPLICATE
            self._equivocators.add(sender)
            proof = Equivocation(held.envelope, env)
            self._keep_evidence(sender, round_key, proof)
        if self.on_equivocation is not None:  # outside the lock: it may verify and send
            self.on_equivocation(sender, round_key, proof.to_proto())
        return peer_pb2.REJECT_REASON_EQUIVOCATION

    def _keep_evidence(self, sender: int, round_key: RoundKey, proof: Equivocation) -> None:
        slot = (sender, round_key)
        size = proof.first.ByteSize() + proof.second.ByteSize()
        if (
            slot in self._evidence
            or len(self._evidence) >= self.max_evidence
            or self._evidence_per_sender.get(sender, 0) >= self.max_evidence_per_sender
            or self._evidence_bytes + size > self.max_evidence_bytes
        ):
            return
        self._evidence[slot] = proof
        self._evidence_per_sender[sender] = self._evidence_per_sender.get(sender, 0) + 1
        self._evidence_bytes += size

    def holds(self, sender: int, body: bytes, signature: bytes) -> bool:
        """Whether exactly this signed envelope is already held (and so was verified once).

        The validator asks before verifying: a message that arrives by push and again by
        pull, or twice by retry, then costs a dictionary look-up instead of a signature check.
        Only a byte-identical (sender, body, signature) matches, so nothing unverified passes.
        """
        with self._lock:
            slot = self._by_signature.get(bytes(signature))
            if slot is None or slot[1] != sender:
                return False
            held = self._rounds.get(slot[0], {}).get(sender)
            return held is not None and held.envelope.body == body

    def vectors(self, round_key: RoundKey) -> dict[int, np.ndarray]:
        """The accepted vectors for `round_key` by sender id (read-only arrays; copy to mutate)."""
        with self._lock:
            return {s: h.vector for s, h in self._rounds.get(round_key, {}).items()}

    def count(self, round_key: RoundKey) -> int:
        """How many senders' messages are held for `round_key`."""
        with self._lock:
            return len(self._rounds.get(round_key, ()))

    def envelopes(self, round_key: RoundKey) -> list[peer_pb2.SignedMessage]:
        """The original signed envelopes held for `round_key`, by sender id (for Pull replies).

        Forwarded unchanged: the requester verifies them against the original senders'
        keys, so relaying peers cannot alter them.
        """
        with self._lock:
            held = self._rounds.get(round_key, {})
            return [held[s].envelope for s in sorted(held)]

    def evidence(self) -> list[peer_pb2.Equivocation]:
        """Equivocation proofs kept so far (for the Evidence RPC)."""
        with self._lock:
            return [e.to_proto() for e in self._evidence.values()]

    def equivocators(self) -> set[int]:
        """Every sender seen equivocating (kept even when its evidence is not)."""
        with self._lock:
            return set(self._equivocators)

    def keys(self) -> list[RoundKey]:
        """The rounds currently held, sorted."""
        with self._lock:
            return sorted(self._rounds)

    def prune(self, before_iteration: int) -> None:
        """Drop every round (and its evidence) with iteration < `before_iteration`.

        Call it as the peer advances, with ``current - keep_behind`` of the validator,
        so memory stays bounded by the validator's window.
        """
        with self._changed:
            self._floor = max(self._floor, before_iteration)
            for round_key in [k for k in self._rounds if k.iteration < before_iteration]:
                for held in self._rounds.pop(round_key).values():
                    self._by_signature.pop(held.envelope.signature, None)
            for slot in [s for s in self._evidence if s[1].iteration < before_iteration]:
                ev = self._evidence.pop(slot)
                self._evidence_per_sender[slot[0]] -= 1
                self._evidence_bytes -= ev.first.ByteSize() + ev.second.ByteSize()
            self._changed.notify_all()

    def wait_for(self, round_key: RoundKey, count: int, timeout: float | None) -> int:
        """Block until at least `count` messages are held for `round_key` or `timeout` seconds
        pass (None: no limit); returns the number held at return."""
        with self._changed:
            wanted = self._wanted.setdefault(round_key, [])
            wanted.append(count)
            try:
                self._changed.wait_for(lambda: len(self._rounds.get(round_key, ())) >= count, timeout)
            finally:
                wanted.remove(count)
                if not wanted:
                    del self._wanted[round_key]
            return len(self._rounds.get(round_key, ()))
