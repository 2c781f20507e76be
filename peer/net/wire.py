"""The wire layer, sans-IO: vector codec, message signing, validation, the round store.

Nothing here touches the network.  The gRPC transport parses nothing itself: it hands
every pushed or pulled `SignedMessage` to `Validator.check`, stores accepted verdicts in
a `RoundStore`, counts and logs rejections in a `RejectionLog`, and answers Pull and
Evidence from the store.  Being pure, all of it is tested without sockets.

Security reasoning, in the order a message meets it:

* **Size first.**  Nothing is parsed or verified before the size is bounded, so a huge
  message costs at most a length comparison.  (The transport must also set gRPC's
  max receive size to the same bound, so oversize messages are cut off before they are
  even buffered.)
* **Pinned keys.**  The envelope names its sender; the signature must verify under the
  key pinned for that id in the run's roster.  There is no other notion of identity.
* **Verify before parse.**  The signature is checked over the exact `body` bytes that
  arrived, prefixed by `DOMAIN`, before the body is parsed.  Unauthenticated bytes never
  reach the RoundMessage parser, and since the receiver never re-serializes, there is no
  canonical-encoding question: the signature covers precisely what was sent (unknown
  fields included), and anyone holding the envelope can re-verify it.
* **Domain separation.**  `DOMAIN` ties a signature to this purpose and protocol
  version; a signature made by the same key for anything else cannot be replayed as a
  round message (and vice versa).
* **Sender binding.**  The signed body repeats the sender id, and it must equal the
  envelope's, so a message signed by peer 3 cannot be relabelled as peer 2's (the
  envelope sender selects the key; the body sender is covered by the signature).
* **Run binding and windows.**  The run id (hash of the genesis configuration) must be
  ours; iterations outside a small window around ours are dropped, which bounds the
  memory an adversary can make us spend on future or ancient rounds.
* **Shape and values.**  The length must be the model's and match the bytes exactly,
  and every value must be finite: robust aggregation tolerates Byzantine *values*, but a
  NaN would poison the arithmetic of honest peers' aggregators.
* **First wins.**  A validly signed message is final for its (sender, round): a later,
  different one is not allowed to replace it (that would let a Byzantine peer show
  different peers different vectors over time, or change its mind after seeing others'),
  and is kept as transferable proof of equivocation instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from decbyzpg.v1 import peer_pb2
from google.protobuf.message import DecodeError

from peer.net import crypto
from peer.engine.exchange import Phase, RoundKey

__all__ = [
    "DOMAIN",
    "RUN_ID_BYTES",
    "Equivocation",
    "RejectionLog",
    "RoundStore",
    "Validator",
    "Verdict",
    "decode_vector",
    "encode_vector",
    "max_envelope_bytes",
    "reason_name",
    "sign_body",
    "sign_message",
]

log = logging.getLogger(__name__)

DOMAIN = b"decbyzpg/v1/round-message\0"
"""Prefix of every signed round message (domain separation; see module doc)."""

RUN_ID_BYTES = 32  # SHA-256 of the genesis configuration

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

_R = peer_pb2  # shorthand for the RejectReason constants below
ACCEPTED = _R.REJECT_REASON_UNSPECIFIED


def reason_name(reason: int) -> str:
    """Short name of a RejectReason value: 'BAD_SIGNATURE', 'ACCEPTED', or 'UNKNOWN_<n>'."""
    if reason == ACCEPTED:
        return "ACCEPTED"
    try:
        return peer_pb2.RejectReason.Name(reason).removeprefix("REJECT_REASON_")
    except ValueError:
        return f"UNKNOWN_{reason}"


# --------------------------------------------------------------------------- vectors


def encode_vector(vec: np.ndarray) -> bytes:
    """Little-endian IEEE-754 float32 bytes of `vec` (C order), the wire format.

    Values are converted to float32 first; bit patterns of float32 input (negative zero,
    subnormals, NaN payloads) are preserved exactly.
    """
    return np.asarray(vec, dtype="<f4").tobytes()


def decode_vector(data: bytes, length: int) -> np.ndarray:
    """The float32 vector (native byte order, a fresh writable copy) encoded in `data`.

    Raises ValueError unless ``len(data) == 4 * length``.
    """
    if length < 0 or len(data) != 4 * length:
        raise ValueError(f"vector of {length} float32 values needs {4 * length} bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<f4", count=length).astype(np.float32, copy=True)


# --------------------------------------------------------------------------- signing


def sign_body(private_key: Ed25519PrivateKey, sender: int, body: bytes) -> peer_pb2.SignedMessage:
    """Sign exact `body` bytes under `DOMAIN` and wrap them in an envelope from `sender`.

    Low-level: `sign_message` is the normal way.  Exposed so that tests and simulated
    adversaries can sign arbitrary bodies (receivers must cope with them anyway).
    """
    body = bytes(body)
    return peer_pb2.SignedMessage(sender=sender, body=body, signature=crypto.sign(private_key, DOMAIN, body))


def sign_message(
    private_key: Ed25519PrivateKey, run_id: bytes, key: RoundKey, sender: int, vector: np.ndarray
) -> peer_pb2.SignedMessage:
    """Build, serialize once, and sign the RoundMessage carrying `vector` for `key`.

    The body is serialized exactly once and those bytes are both signed and sent, so
    the signature covers what travels.  The vector is not checked for finiteness here
    (receivers do that); an honest peer should never produce a non-finite vector.
    """
    arr = np.asarray(vector, dtype="<f4")
    if arr.ndim != 1:
        raise ValueError(f"vector must be one-dimensional, got shape {arr.shape}")
    msg = peer_pb2.RoundMessage(
        run_id=bytes(run_id),
        iteration=int(key.iteration),
        phase=int(key.phase),
        round=int(key.round),
        sender=int(sender),
        length=int(arr.size),
        vector=encode_vector(arr),
    )
    return sign_body(private_key, sender, msg.SerializeToString(deterministic=True))


def max_envelope_bytes(dim: int) -> int:
    """Serialized size of the largest honest envelope carrying `dim` values.

    Used to reject a `max_message_bytes` too small for the model (which would make every
    honest message TOO_LARGE) at start-up instead of mid-run.
    """
    body = peer_pb2.RoundMessage(
        run_id=b"\xff" * RUN_ID_BYTES,
        iteration=_UINT64_MAX,
        phase=max(int(p) for p in Phase),
        round=_UINT32_MAX,
        sender=_UINT32_MAX,
        length=dim,
        vector=b"\0" * (4 * dim),
    ).SerializeToString()
    return peer_pb2.SignedMessage(sender=_UINT32_MAX, body=body, signature=b"\0" * crypto.SIGNATURE_BYTES).ByteSize()


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, eq=False)
class Verdict:
    """The outcome of `Validator.check`.

    `reason` is a peer_pb2.RejectReason value; REJECT_REASON_UNSPECIFIED means accepted.
    `sender` is the envelope's sender id whenever the envelope parsed -- *claimed*, not
    authenticated, unless the reason comes after BAD_SIGNATURE in the check order (it is
    for SENDER_MISMATCH onwards and for accepted messages).  `key` is set for BAD_ROUND,
    BAD_LENGTH, NON_FINITE and accepted messages (the phase is then a known Phase).
    `vector` (read-only float32) and `envelope` (a clean copy holding only sender, body
    and signature) are set only when accepted.
    """

    reason: int
    sender: int | None = None
    key: RoundKey | None = None
    vector: np.ndarray | None = None
    envelope: peer_pb2.SignedMessage | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return self.reason == ACCEPTED

    @property
    def reason_name(self) -> str:
        return reason_name(self.reason)


class Validator:
    """Decides whether one incoming SignedMessage is acceptable; never raises.

    Check order (each step assumes the previous passed): size (TOO_LARGE) -> envelope
    parse (MALFORMED) -> sender in roster (UNKNOWN_SENDER), not ourselves (SELF) ->
    Ed25519 signature over ``DOMAIN || body`` with the sender's pinned key
    (BAD_SIGNATURE) -> body parse (MALFORMED) -> body sender equals envelope sender
    (SENDER_MISMATCH) -> run id (WRONG_RUN) -> iteration window (STALE, TOO_FAR_AHEAD)
    -> phase used by this algorithm (BAD_PHASE) -> round (BAD_ROUND) -> length
    (BAD_LENGTH) -> finite values (NON_FINITE).

    The cheap, unauthenticated checks come first and the signature before any parsing of
    the body (see module doc).  The roster is copied at construction: keys are pinned for
    the life of the run.  A Validator is immutable after construction and therefore safe
    to share between threads.
    """

    def __init__(
        self,
        run_id: bytes,
        roster: Mapping[int, Ed25519PublicKey],
        self_id: int,
        dim: int,
        phases: Collection[Phase],
        agreement_rounds: int,
        max_message_bytes: int = 1 << 20,
        window_ahead: int = 2,
        keep_behind: int = 2,
    ) -> None:
        if not isinstance(run_id, (bytes, bytearray)) or len(run_id) != RUN_ID_BYTES:
            raise ValueError(f"run id must be {RUN_ID_BYTES} bytes (a SHA-256 digest)")
        for peer_id, key in roster.items():
            if not isinstance(peer_id, int) or not 0 <= peer_id <= _UINT32_MAX:
                raise ValueError(f"roster id {peer_id!r} is not a uint32")
            if not isinstance(key, Ed25519PublicKey):
                raise TypeError(f"roster key of peer {peer_id} is a {type(key).__name__}, not an Ed25519PublicKey")
        if dim < 0:
            raise ValueError(f"dim must be >= 0, got {dim}")
        phase_values = frozenset(int(Phase(p)) for p in phases)
        if not phase_values:
            raise ValueError("phases must name at least one Phase")
        if int(Phase.AGREEMENT) in phase_values and agreement_rounds < 1:
            raise ValueError(f"agreement phase needs agreement_rounds >= 1, got {agreement_rounds}")
        if window_ahead < 0 or keep_behind < 0:
            raise ValueError("window_ahead and keep_behind must be >= 0")
        needed = max_envelope_bytes(dim)
        if max_message_bytes < needed:
            raise ValueError(
                f"max_message_bytes={max_message_bytes} is too small for dim={dim}: an honest message "
                f"can take {needed} bytes"
            )
        self.run_id = bytes(run_id)
        self.roster: Mapping[int, Ed25519PublicKey] = dict(roster)
        self.self_id = int(self_id)
        self.dim = int(dim)
        self.phases = frozenset(Phase(p) for p in phase_values)
        self._phase_values = phase_values
        self.agreement_rounds = int(agreement_rounds)
        self.max_message_bytes = int(max_message_bytes)
        self.window_ahead = int(window_ahead)
        self.keep_behind = int(keep_behind)

    def check(self, envelope: peer_pb2.SignedMessage | bytes, current_iteration: int) -> Verdict:
        """Validate raw envelope bytes or an envelope gRPC already parsed.

        `current_iteration` is the iteration this peer is working on; the acceptance
        window is ``[current - keep_behind, current + window_ahead]``.  Never raises: an
        unexpected internal error (a bug) is logged and reported as MALFORMED, because a
        peer must not be crashable by what others send.
        """
        try:
            return self._check(envelope, int(current_iteration))
        except Exception:  # pragma: no cover - defensive: inputs must never crash a peer
            log.exception("internal error while validating a message; rejecting it as malformed")
            return Verdict(_R.REJECT_REASON_MALFORMED)

    def _check(self, envelope: peer_pb2.SignedMessage | bytes, current: int) -> Verdict:
        # 1. size, before anything is parsed
        if isinstance(envelope, peer_pb2.SignedMessage):
            if envelope.ByteSize() > self.max_message_bytes:
                return Verdict(_R.REJECT_REASON_TOO_LARGE)
            env = envelope
        elif isinstance(envelope, (bytes, bytearray, memoryview)):
            raw = memoryview(envelope)
            if raw.nbytes > self.max_message_bytes:
                return Verdict(_R.REJECT_REASON_TOO_LARGE)
            # 2. envelope parse
            try:
                env = peer_pb2.SignedMessage.FromString(raw.tobytes())
            except (DecodeError, ValueError, TypeError):
                return Verdict(_R.REJECT_REASON_MALFORMED)
        else:
            return Verdict(_R.REJECT_REASON_MALFORMED)

        # 3. sender identity (still unauthenticated)
        sender = env.sender
        public_key = self.roster.get(sender)
        if public_key is None:
            return Verdict(_R.REJECT_REASON_UNKNOWN_SENDER, sender)
        if sender == self.self_id:
            return Verdict(_R.REJECT_REASON_SELF, sender)

        # 4. signature over the exact bytes received -- before parsing them
        body_bytes = env.body
        if not crypto.verify(public_key, DOMAIN, body_bytes, env.signature):
            return Verdict(_R.REJECT_REASON_BAD_SIGNATURE, sender)

        # 5. from here on the body is authentic: the sender really signed it
        try:
            body = peer_pb2.RoundMessage.FromString(body_bytes)
        except (DecodeError, ValueError, TypeError):
            return Verdict(_R.REJECT_REASON_MALFORMED, sender)
        if body.sender != sender:
            return Verdict(_R.REJECT_REASON_SENDER_MISMATCH, sender)
        if body.run_id != self.run_id:
            return Verdict(_R.REJECT_REASON_WRONG_RUN, sender)
        if body.iteration < current - self.keep_behind:
            return Verdict(_R.REJECT_REASON_STALE, sender)
        if body.iteration > current + self.window_ahead:
            return Verdict(_R.REJECT_REASON_TOO_FAR_AHEAD, sender)
        if body.phase not in self._phase_values:
            return Verdict(_R.REJECT_REASON_BAD_PHASE, sender)
        phase = Phase(body.phase)
        key = RoundKey(int(body.iteration), phase, int(body.round))
        if phase == Phase.AGREEMENT:
            if not 0 <= body.round < self.agreement_rounds:
                return Verdict(_R.REJECT_REASON_BAD_ROUND, sender, key)
        elif body.round != 0:
            return Verdict(_R.REJECT_REASON_BAD_ROUND, sender, key)
        if body.length != self.dim or len(body.vector) != 4 * body.length:
            return Verdict(_R.REJECT_REASON_BAD_LENGTH, sender, key)
        vector = decode_vector(body.vector, body.length)
        if not np.isfinite(vector).all():
            return Verdict(_R.REJECT_REASON_NON_FINITE, sender, key)
        vector.flags.writeable = False
        clean = peer_pb2.SignedMessage(sender=sender, body=body_bytes, signature=env.signature)
        return Verdict(ACCEPTED, sender, key, vector, clean)


# --------------------------------------------------------------------------- round store


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
        self._floor = -1  # iterations below this have been pruned
        self.max_evidence = max_evidence
        self.max_evidence_per_sender = max_evidence_per_sender
        self.max_evidence_bytes = max_evidence_bytes

    def add(self, verdict: Verdict) -> int:
        """Store an accepted verdict; returns UNSPECIFIED, DUPLICATE, EQUIVOCATION or STALE.

        STALE only when the verdict's iteration was pruned meanwhile.  Raises ValueError
        for a verdict that was not accepted (a caller bug, not an input problem).
        """
        if not verdict.accepted or verdict.key is None or verdict.envelope is None or verdict.sender is None:
            raise ValueError(f"only accepted verdicts can be stored (got {verdict.reason_name})")
        key, sender, env = verdict.key, verdict.sender, verdict.envelope
        with self._changed:
            if key.iteration < self._floor:
                return _R.REJECT_REASON_STALE
            held_round = self._rounds.setdefault(key, {})
            held = held_round.get(sender)
            if held is None:
                vector = verdict.vector
                if vector is not None and vector.flags.writeable:
                    vector = vector.copy()
                    vector.flags.writeable = False
                held_round[sender] = _Held(env, vector)
                self._changed.notify_all()
                return ACCEPTED
            if held.envelope.body == env.body:
                return _R.REJECT_REASON_DUPLICATE
            self._equivocators.add(sender)
            self._keep_evidence(sender, key, held.envelope, env)
            return _R.REJECT_REASON_EQUIVOCATION

    def _keep_evidence(
        self, sender: int, key: RoundKey, first: peer_pb2.SignedMessage, second: peer_pb2.SignedMessage
    ) -> None:
        slot = (sender, key)
        size = first.ByteSize() + second.ByteSize()
        if (
            slot in self._evidence
            or len(self._evidence) >= self.max_evidence
            or self._evidence_per_sender.get(sender, 0) >= self.max_evidence_per_sender
            or self._evidence_bytes + size > self.max_evidence_bytes
        ):
            return
        self._evidence[slot] = Equivocation(first, second)
        self._evidence_per_sender[sender] = self._evidence_per_sender.get(sender, 0) + 1
        self._evidence_bytes += size

    def vectors(self, key: RoundKey) -> dict[int, np.ndarray]:
        """The accepted vectors for `key` by sender id (read-only arrays; copy to mutate)."""
        with self._lock:
            return {s: h.vector for s, h in self._rounds.get(key, {}).items()}

    def count(self, key: RoundKey) -> int:
        """How many senders' messages are held for `key`."""
        with self._lock:
            return len(self._rounds.get(key, ()))

    def envelopes(self, key: RoundKey) -> list[peer_pb2.SignedMessage]:
        """The original signed envelopes held for `key`, by sender id (for Pull replies).

        Forwarded unchanged: the requester verifies them against the original senders'
        keys, so relaying peers cannot alter them.
        """
        with self._lock:
            held = self._rounds.get(key, {})
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
            for key in [k for k in self._rounds if k.iteration < before_iteration]:
                del self._rounds[key]
            for slot in [s for s in self._evidence if s[1].iteration < before_iteration]:
                ev = self._evidence.pop(slot)
                self._evidence_per_sender[slot[0]] -= 1
                self._evidence_bytes -= ev.first.ByteSize() + ev.second.ByteSize()
            self._changed.notify_all()

    def wait_for(self, key: RoundKey, count: int, timeout: float | None) -> int:
        """Block until at least `count` messages are held for `key` or `timeout` seconds
        pass (None: no limit); returns the number held at return."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._rounds.get(key, ())) >= count, timeout)
            return len(self._rounds.get(key, ()))


# --------------------------------------------------------------------------- rejection log


class RejectionLog:
    """Counts rejections by reason and logs them without letting floods flood the log.

    Every outcome is counted (`counts`, `accepted`; these feed the Status RPC).  Logging
    happens at most once per (sender, reason) per `interval` seconds; the next line for
    that pair reports how many were suppressed meanwhile (`flush` reports the rest).
    The sender is keyed only where it is bounded: UNKNOWN_SENDER claims an arbitrary id,
    so those share one key, and at most `max_keys` pairs are tracked (beyond that all
    share an overflow key) -- an attacker cannot grow this table or the log.
    DUPLICATE is logged at DEBUG (retries and Pull make it harmless); everything else at
    WARNING.  Thread-safe.
    """

    def __init__(
        self,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        max_keys: int = 1024,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._log = logger or log
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._accepted = 0
        # (sender, reason) -> [time last logged, suppressed since]
        self._limits: dict[tuple[int | None, int], list[float]] = {}

    def record(self, reason: int, sender: int | None = None, origin: str | None = None) -> None:
        """Count one outcome (UNSPECIFIED counts as accepted) and maybe log it.

        `origin` (e.g. the gRPC peer address) only decorates the log line.
        """
        if reason == ACCEPTED:
            with self._lock:
                self._accepted += 1
            return
        name = reason_name(reason)
        if reason in (_R.REJECT_REASON_UNKNOWN_SENDER, _R.REJECT_REASON_MALFORMED, _R.REJECT_REASON_TOO_LARGE):
            sender = None
        now = self._clock()
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            slot = (sender, reason)
            state = self._limits.get(slot)
            if state is None and len(self._limits) >= self._max_keys:
                slot = (None, -1)
                state = self._limits.get(slot)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                return
            suppressed = int(state[1]) if state is not None else 0
            self._limits[slot] = [now, 0]
        self._emit(reason, name, sender, origin, suppressed)

    def record_verdict(self, verdict: Verdict, origin: str | None = None) -> None:
        """`record` for a Validator verdict."""
        self.record(verdict.reason, verdict.sender, origin)

    def _emit(self, reason: int, name: str, sender: int | None, origin: str | None, suppressed: int) -> None:
        level = logging.DEBUG if reason == _R.REJECT_REASON_DUPLICATE else logging.WARNING
        who = "unattributed sender" if sender is None else f"sender {sender}"
        where = f" via {origin}" if origin else ""
        extra = f" ({suppressed} more like it suppressed in the last {self.interval:g}s)" if suppressed else ""
        self._log.log(level, "rejected message from %s%s: %s%s", who, where, name, extra)

    def flush(self) -> None:
        """Log a summary line for every (sender, reason) with suppressed messages."""
        with self._lock:
            pending = [(slot, int(st[1])) for slot, st in self._limits.items() if st[1]]
            for slot, _ in pending:
                self._limits[slot][1] = 0
        for (sender, reason), n in pending:
            who = "unattributed sender" if sender is None else f"sender {sender}"
            name = "various" if reason == -1 else reason_name(reason)
            level = logging.DEBUG if reason == _R.REJECT_REASON_DUPLICATE else logging.WARNING
            self._log.log(level, "rejected %d more message(s) from %s: %s", n, who, name)

    def counts(self) -> dict[str, int]:
        """Rejections so far by reason name (e.g. {'BAD_SIGNATURE': 3})."""
        with self._lock:
            return dict(self._counts)

    def accepted(self) -> int:
        """Accepted messages recorded so far."""
        with self._lock:
            return self._accepted
