"""The wire format, sans-IO: vector codec, message signing and validation.

Nothing here touches the network, a clock or a thread.  The gRPC transport parses
nothing itself: it hands every pushed or pulled `SignedMessage` to `Validator.check`,
stores accepted verdicts in a `peer.net.store.RoundStore`, counts and logs rejections in
a `peer.net.rejections.RejectionLog`, and answers Pull and Evidence from the store.
Being pure, all of it is tested without sockets.

Security reasoning, in the order a message meets it:

* **Size first.**  Nothing is parsed or verified before the size is bounded, so a huge
  message costs at most a length comparison.  (The transport must also set gRPC's
  max receive size to the same bound, so oversize messages are cut off before they are
  even buffered.)
* **Pinned keys.**  The envelope names its sender; the signature must verify under the
  key pinned for that id in the run's roster.  There is no other notion of identity.
* **Verify before parse.**  The signature is checked over the exact `body` bytes that
  arrived, prefixed by `DOMAIN`, before the body is parsed.  Unauthenticated bytes never
  reach the RoundMessage parser; anyone holding the envelope can re-verify it.
* **Canonical bodies only.**  A body must be exactly the canonical encoding of what it
  parses to (fields in number order, defaults omitted, no unknown fields), else
  NON_CANONICAL: a validly signed message can carry no padding, so what a peer stores and
  relays is never larger than an honest message.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from decbyzpg.v1 import peer_pb2
from google.protobuf.message import DecodeError

from peer.engine.schedule import Phase, RoundKey, RoundShape
from peer.net import crypto

__all__ = [
    "DOMAIN",
    "RUN_ID_BYTES",
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


# --------------------------------------------------------------------------- bodies


def decode_body(body_bytes: bytes) -> tuple[peer_pb2.RoundMessage | None, bool]:
    """The RoundMessage `body_bytes` encode (None if they do not parse), and whether they are
    exactly its canonical encoding (no unknown fields, padding, reordering or default fields
    written out): only canonical bodies are stored and relayed, so a relayed message is never
    larger than an honest one."""
    try:
        body = peer_pb2.RoundMessage.FromString(body_bytes)
    except (DecodeError, ValueError, TypeError):
        return None, False
    body.DiscardUnknownFields()  # protobuf would otherwise re-emit them
    return body, body.SerializeToString() == body_bytes


# --------------------------------------------------------------------------- signing


def sign_body(signing_key: Ed25519PrivateKey, sender: int, body: bytes) -> peer_pb2.SignedMessage:
    """Sign exact `body` bytes under `DOMAIN` and wrap them in an envelope from `sender`.

    Low-level: `sign_message` is the normal way.  Exposed so that tests and simulated
    adversaries can sign arbitrary bodies (receivers must cope with them anyway).
    """
    body = bytes(body)
    return peer_pb2.SignedMessage(sender=sender, body=body, signature=crypto.sign(signing_key, DOMAIN, body))


def sign_message(
    signing_key: Ed25519PrivateKey, run_id: bytes, round_key: RoundKey, sender: int, vector: np.ndarray
) -> peer_pb2.SignedMessage:
    """Build, serialize once, and sign the RoundMessage carrying `vector` for `round_key`.

    The body is serialized exactly once and those bytes are both signed and sent, so
    the signature covers what travels.  The vector is not checked for finiteness here
    (receivers do that); an honest peer should never produce a non-finite vector.
    """
    arr = np.asarray(vector, dtype="<f4")
    if arr.ndim != 1:
        raise ValueError(f"vector must be one-dimensional, got shape {arr.shape}")
    msg = peer_pb2.RoundMessage(
        run_id=bytes(run_id),
        iteration=int(round_key.iteration),
        phase=int(round_key.phase),
        round=int(round_key.round),
        sender=int(sender),
        length=int(arr.size),
        vector=encode_vector(arr),
    )
    return sign_body(signing_key, sender, msg.SerializeToString(deterministic=True))


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
    for SENDER_MISMATCH onwards and for accepted messages).  `round_key` is set for BAD_ROUND,
    BAD_LENGTH, NON_FINITE and accepted messages (the phase is then a known Phase).
    `vector` (read-only float32) and `envelope` (a clean copy holding only sender, body
    and signature) are set only when accepted.
    """

    reason: int
    sender: int | None = None
    round_key: RoundKey | None = None
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
    an envelope byte-identical to one already stored (DUPLICATE, without verifying again) ->
    Ed25519 signature over ``DOMAIN || body`` with the sender's pinned public key
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
        shape: RoundShape,
        max_message_bytes: int = 1 << 20,
        window_ahead: int = 2,
        keep_behind: int = 2,
        already_held: Callable[[int, bytes, bytes], bool] | None = None,
    ) -> None:
        if not isinstance(run_id, (bytes, bytearray)) or len(run_id) != RUN_ID_BYTES:
            raise ValueError(f"run id must be {RUN_ID_BYTES} bytes (a SHA-256 digest)")
        for peer_id, public_key in roster.items():
            if not isinstance(peer_id, int) or not 0 <= peer_id <= _UINT32_MAX:
                raise ValueError(f"roster id {peer_id!r} is not a uint32")
            if not isinstance(public_key, Ed25519PublicKey):
                raise TypeError(f"roster key of peer {peer_id} is a {type(public_key).__name__}, not an Ed25519PublicKey")
        if dim < 0:
            raise ValueError(f"dim must be >= 0, got {dim}")
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
        self.shape = shape  # which (phase, round) slots the run's schedule can have
        self._phase_values = frozenset(int(p) for p in shape.phases)
        self.max_message_bytes = int(max_message_bytes)
        self.window_ahead = int(window_ahead)
        self.keep_behind = int(keep_behind)
        # (sender, body, signature) -> bool: the exact envelope is already stored, hence verified
        self.already_held = already_held

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

        # 3. every field present: an empty or field-less envelope is malformed, not a claim by peer 0
        if not env.body or len(env.signature) != crypto.SIGNATURE_BYTES:
            return Verdict(_R.REJECT_REASON_MALFORMED, env.sender if env.sender in self.roster else None)

        # 4. sender identity (still unauthenticated)
        sender = env.sender
        public_key = self.roster.get(sender)
        if public_key is None:
            return Verdict(_R.REJECT_REASON_UNKNOWN_SENDER, sender)
        if sender == self.self_id:
            return Verdict(_R.REJECT_REASON_SELF, sender)

        # 5. signature over the exact bytes received -- before parsing them -- unless these
        # exact bytes were verified and stored before (a push repeated by a pull or a retry)
        body_bytes = env.body
        if self.already_held is not None and self.already_held(sender, body_bytes, env.signature):
            return Verdict(_R.REJECT_REASON_DUPLICATE, sender)
        if not crypto.verify(public_key, DOMAIN, body_bytes, env.signature):
            return Verdict(_R.REJECT_REASON_BAD_SIGNATURE, sender)

        # 6. from here on the body is authentic: the sender really signed it
        body, canonical = decode_body(body_bytes)
        if body is None:
            return Verdict(_R.REJECT_REASON_MALFORMED, sender)
        # 7. canonical bytes only, so a stored and relayed message is never larger than an honest one
        if not canonical:
            return Verdict(_R.REJECT_REASON_NON_CANONICAL, sender)
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
        round_key = RoundKey(int(body.iteration), Phase(body.phase), int(body.round))
        if not self.shape.admits(body.phase, body.round):
            return Verdict(_R.REJECT_REASON_BAD_ROUND, sender, round_key)
        if body.length != self.dim or len(body.vector) != 4 * body.length:
            return Verdict(_R.REJECT_REASON_BAD_LENGTH, sender, round_key)
        vector = decode_vector(body.vector, body.length)
        if not np.isfinite(vector).all():
            return Verdict(_R.REJECT_REASON_NON_FINITE, sender, round_key)
        vector.flags.writeable = False
        clean = peer_pb2.SignedMessage(sender=sender, body=body_bytes, signature=env.signature)
        return Verdict(ACCEPTED, sender, round_key, vector, clean)
