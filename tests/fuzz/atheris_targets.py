#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris + libFuzzer) of what strangers and Byzantine peers feed a peer.

Usage::

    python tests/fuzz/atheris_targets.py {validator|pull} [--artifacts DIR] [libFuzzer options] [corpus|crash files]
    python tests/fuzz/atheris_targets.py validator -max_total_time=60
    python tests/fuzz/atheris_targets.py pull /path/to/crash-1234abcd      # replay one input

Why it exists next to the hypothesis tests (`tests/net/test_fuzz.py`): hypothesis draws from
strategies we wrote, so it explores what we thought of; libFuzzer mutates inputs by the
branches they reach in the instrumented project code (`peer.*` is imported under
`atheris.instrument_imports`), so it keeps the inputs that get further into the parsers and
checks.  Both check the same three properties of the security issue, for the validator and
for the Pull reply path: arbitrary bytes never raise, never take longer than a bound per
byte, and never change stored state unless the message is valid.

How each property is checked, independently of the code under test:

* **Never raises.**  `Validator.check` catches everything and logs ``log.exception``, so an
  exception escaping would be caught by libFuzzer, but a *swallowed* internal error would
  not: a handler on the root logger turns any ERROR record into a crash.
* **Bounded time.**  CPU time of the calling thread (`time.thread_time`), so being
  descheduled on a busy machine does not count; see `time_bound` for the bound.
* **Valid messages only.**  `Oracle` decides validity from the bytes alone: its own strict
  decoder of the canonical RoundMessage encoding (not protobuf's), the signature checked
  with `cryptography` directly, and the run's limits re-stated here.  `ShadowStore` models
  first-wins storage; after every call the real `RoundStore` must equal the model, and a
  verdict must be an acceptance exactly when the oracle says valid and not yet held.

Inputs that fail are written by libFuzzer under ``-artifact_prefix`` (``--artifacts DIR``
sets it; by default a fresh temporary directory, printed at start).  Keys are derived from
fixed seeds and Ed25519 signing is deterministic, so a saved input replays identically.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
import os
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import atheris

# Third-party modules are imported before instrumentation starts: only the project's own
# code is worth coverage feedback (protobuf and cryptography are C underneath anyway).
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

with atheris.instrument_imports(include=["peer"]):
    from decbyzpg.v1 import peer_pb2

    from peer.engine.config import build_config
    from peer.engine.schedule import Phase, RoundKey, RoundShape
    from peer.net import crypto, wire
    from peer.net.runfile import NetworkConfig, PeerEntry, RunFile
    from peer.net.store import RoundStore
    from peer.net.transport import PeerTransport

Envelope = peer_pb2.SignedMessage | bytes | bytearray | memoryview
SlotKey = tuple[tuple[int, int, int], int]  # ((iteration, phase, round), sender)

# Re-stated, not imported: if the protocol's domain string changes, this harness should notice.
DOMAIN = b"decbyzpg/v1/round-message\0"
ACCEPTED = peer_pb2.REJECT_REASON_UNSPECIFIED
DUPLICATE = peer_pb2.REJECT_REASON_DUPLICATE
EQUIVOCATION = peer_pb2.REJECT_REASON_EQUIVOCATION
KNOWN_REASONS = frozenset(peer_pb2.RejectReason.values())
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
GRADIENT, AGREEMENT = int(Phase.GRADIENT), int(Phase.AGREEMENT)

BASE_SECONDS = 0.050
PER_BYTE_SECONDS = 10e-6


def time_bound(size: int) -> float:
    """CPU seconds one call may take for an input of `size` bytes: 50 ms + 10 us per byte.

    An honest message costs one Ed25519 verification (~0.1 ms) plus protobuf and numpy
    work linear in its size; the instrumentation atheris adds to every line of `peer.*`
    makes that a few times slower, and a garbage collection can land inside a call (the
    long-lived heap is frozen in `main` so that costs little).  Time is the thread's CPU
    time, so the other work sharing the machine's two cores does not inflate it by
    descheduling us.  The bound is ~100 times the
    expected cost, so a failure means pathological work -- a loop over attacker-chosen
    counts, repeated verification, quadratic parsing (even at 10 ns per pair of bytes, a
    4 KB input would take 170 ms against a bound of 91 ms) -- not noise.  A Pull reply
    gets the same bound for its total serialized size.
    """
    return BASE_SECONDS + PER_BYTE_SECONDS * size


def seeded_key(label: str) -> Ed25519PrivateKey:
    """An Ed25519 key from a fixed seed: saved crash inputs must replay with the same keys."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"decbyzpg-atheris/{label}".encode()).digest())


def sign(key: Ed25519PrivateKey, sender: int, body: bytes) -> peer_pb2.SignedMessage:
    """An envelope signed the way the protocol says (own code, not `wire.sign_body`)."""
    return peer_pb2.SignedMessage(sender=sender, body=body, signature=key.sign(DOMAIN + body))


def body_bytes(run_id: bytes, iteration: int, phase: int, round_index: int, sender: int, length: int,
               vector: bytes) -> bytes:
    """A RoundMessage serialized by protobuf (fields the fuzzer chose, possibly nonsense)."""
    return peer_pb2.RoundMessage(run_id=run_id, iteration=iteration, phase=phase, round=round_index, sender=sender,
                                 length=length, vector=vector).SerializeToString(deterministic=True)


# --------------------------------------------------------------------------- failure detectors


class InternalErrors(logging.Handler):
    """Collects ERROR records: the validator logs (and swallows) its own exceptions, which are bugs.

    Installed on the root logger with the root level at ERROR, which also keeps the
    transport's rate-limited WARNING lines about rejections out of the fuzzer's output.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def raise_if_any(self) -> None:
        """Turn a logged internal error into a crash, with the swallowed traceback in the message."""
        if not self.records:
            return
        record = self.records[0]
        self.records.clear()
        detail = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        raise AssertionError(f"internal error logged by {record.name}: {record.getMessage()}\n{detail}")

    @classmethod
    def install(cls) -> InternalErrors:
        handler = cls()
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.ERROR)
        return handler


class VerifyCounter:
    """Counts real Ed25519 verifications by replacing `peer.net.crypto.verify` in this process.

    The validator looks the function up on the module at each call, so every signature
    check it does passes through here; nothing on disk changes.
    """

    def __init__(self) -> None:
        self.calls = 0
        self._real = crypto.verify

    def _counting(self, public_key: Ed25519PublicKey, domain: bytes, body: bytes, signature: bytes) -> bool:
        self.calls += 1
        return self._real(public_key, domain, body, signature)

    def install(self) -> VerifyCounter:
        crypto.verify = self._counting
        return self


class CountingValidator:
    """Stands in for a transport's validator (the transport calls only `check`) to count its calls."""

    def __init__(self, inner: wire.Validator) -> None:
        self.inner = inner
        self.calls = 0

    def check(self, envelope: Envelope, current_iteration: int) -> wire.Verdict:
        self.calls += 1
        return self.inner.check(envelope, current_iteration)


class Stats:
    """Per-target figures, printed at every power-of-two run count (libFuzzer's own rhythm).

    The outcome histogram shows how deep the fuzzer gets (e.g. whether it reaches NON_FINITE
    or ACCEPTED at all); the worst time ratio shows how close any call came to the bound.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.runs = 0
        self.calls = 0
        self.max_seconds = 0.0
        self.worst_ratio = 0.0
        self.outcomes: Counter[str] = Counter()

    def timed(self, seconds: float, size: int, what: str) -> None:
        """Record one call's CPU time and fail if it broke `time_bound`."""
        bound = time_bound(size)
        self.calls += 1
        self.max_seconds = max(self.max_seconds, seconds)
        self.worst_ratio = max(self.worst_ratio, seconds / bound)
        if seconds > bound:
            raise AssertionError(f"{what} took {seconds * 1e3:.1f} ms of CPU for {size} bytes "
                                 f"(bound {bound * 1e3:.1f} ms)")

    def tick(self) -> None:
        self.runs += 1
        if self.runs >= 256 and self.runs & (self.runs - 1) == 0:
            top = ", ".join(f"{name} {n}" for name, n in self.outcomes.most_common())
            print(f"[{self.target}] {self.runs} inputs, {self.calls} timed calls, slowest "
                  f"{self.max_seconds * 1e3:.2f} ms (worst {self.worst_ratio:.1%} of its bound); outcomes: {top}",
                  file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Valid:
    """What a valid envelope carries, as the oracle read it from the bytes."""

    sender: int
    slot: tuple[int, int, int]  # (iteration, phase, round)
    body: bytes
    signature: bytes
    vector: bytes  # little-endian float32, exactly as on the wire


_VARINT, _LEN = 0, 2
# field number -> (wire type, largest value; None for bytes)
_ROUND_MESSAGE_FIELDS: dict[int, tuple[int, int | None]] = {
    1: (_LEN, None),  # run_id
    2: (_VARINT, UINT64_MAX),  # iteration
    3: (_VARINT, (1 << 31) - 1),  # phase (an int32 enum; negative values are never a valid phase)
    4: (_VARINT, UINT32_MAX),  # round
    5: (_VARINT, UINT32_MAX),  # sender
    6: (_VARINT, UINT32_MAX),  # length
    7: (_LEN, None),  # vector
}
_FIELD_NAMES = {1: "run_id", 2: "iteration", 3: "phase", 4: "round", 5: "sender", 6: "length", 7: "vector"}


def _minimal_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position) of the varint at `pos`, or None unless it is the shortest encoding."""
    value = shift = 0
    start = pos
    while pos < len(data) and pos - start < 10:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                return None  # a trailing zero group: padding, not the canonical encoding
            return (value, pos) if value <= UINT64_MAX else None
    return None


def canonical_round_message(body: bytes) -> dict[str, int | bytes] | None:
    """The fields of `body` if it is exactly the canonical proto3 encoding of a RoundMessage.

    Written from the encoding rules, not with protobuf, so it can judge the validator's
    "parse, then re-serialize and compare" check: known fields only, in increasing field
    order, each at most once, shortest varints, default values (0, empty) omitted.
    Returns None for anything else -- including encodings protobuf would accept, which the
    validator must reject as NON_CANONICAL or MALFORMED.
    """
    fields: dict[str, int | bytes] = {"run_id": b"", "iteration": 0, "phase": 0, "round": 0, "sender": 0,
                                      "length": 0, "vector": b""}
    pos, last = 0, 0
    while pos < len(body):
        key = _minimal_varint(body, pos)
        if key is None:
            return None
        tag, pos = key
        number, wire_type = tag >> 3, tag & 7
        spec = _ROUND_MESSAGE_FIELDS.get(number)
        if spec is None or number <= last or wire_type != spec[0]:
            return None
        last = number
        item = _minimal_varint(body, pos)
        if item is None:
            return None
        value, pos = item
        if spec[0] == _LEN:
            if value == 0 or pos + value > len(body):
                return None
            fields[_FIELD_NAMES[number]] = body[pos:pos + value]
            pos += value
        else:
            limit = spec[1]
            if value == 0 or limit is None or value > limit:
                return None
            fields[_FIELD_NAMES[number]] = value
    return fields


@dataclass(frozen=True)
class Oracle:
    """Decides from the bytes alone whether an envelope is a valid round message for this peer.

    It restates the rules of docs/PROTOCOL.md, not the validator's code path: the order of
    checks does not matter here, only the conjunction.
    """

    run_id: bytes
    roster: Mapping[int, Ed25519PublicKey]
    self_id: int
    dim: int
    phases: frozenset[int]
    agreement_rounds: int
    now: int
    keep_behind: int
    window_ahead: int
    max_bytes: int

    def judge(self, item: Envelope) -> Valid | None:
        if isinstance(item, peer_pb2.SignedMessage):
            if item.ByteSize() > self.max_bytes:
                return None
            env = item
        else:
            raw = bytes(item)
            if len(raw) > self.max_bytes:
                return None
            try:
                env = peer_pb2.SignedMessage.FromString(raw)
            except DecodeError:  # anything else escaping protobuf is worth a crash report too
                return None
        sender, body, signature = env.sender, bytes(env.body), bytes(env.signature)
        key = self.roster.get(sender)
        if key is None or sender == self.self_id or not body or len(signature) != 64:
            return None
        try:
            key.verify(signature, DOMAIN + body)
        except InvalidSignature:
            return None
        f = canonical_round_message(body)
        if f is None:
            return None
        iteration, phase, round_index = int(f["iteration"]), int(f["phase"]), int(f["round"])
        vector = bytes(f["vector"])
        if (f["sender"] != sender or f["run_id"] != self.run_id
                or not self.now - self.keep_behind <= iteration <= self.now + self.window_ahead
                or phase not in self.phases
                or not (round_index < self.agreement_rounds if phase == AGREEMENT else round_index == 0)
                or f["length"] != self.dim or len(vector) != 4 * self.dim
                or not all(math.isfinite(v) for v in struct.unpack(f"<{self.dim}f", vector))):
            return None
        return Valid(sender, (iteration, phase, round_index), body, signature, vector)


@dataclass
class ShadowStore:
    """First-wins storage as the protocol describes it, to compare the real RoundStore with."""

    first: dict[SlotKey, Valid] = field(default_factory=dict)
    equivocated: set[SlotKey] = field(default_factory=set)

    def holds(self, message: Valid) -> bool:
        """Whether this exact signed envelope is stored (the validator then says DUPLICATE unverified)."""
        held = self.first.get((message.slot, message.sender))
        return held is not None and held.body == message.body and held.signature == message.signature

    def add(self, message: Valid) -> int:
        """The reason `RoundStore.add` must return for this accepted message."""
        slot = (message.slot, message.sender)
        held = self.first.get(slot)
        if held is None:
            self.first[slot] = message
            return ACCEPTED
        if held.body == message.body:
            return DUPLICATE
        self.equivocated.add(slot)
        return EQUIVOCATION

    def senders(self, slot: tuple[int, int, int]) -> set[int]:
        return {sender for (s, sender) in self.first if s == slot}

    def assert_matches(self, store: RoundStore) -> None:
        """The real store holds exactly the modelled envelopes and vectors, nothing more."""
        real: dict[SlotKey, tuple[bytes, bytes, bytes]] = {}
        for round_key in store.keys():
            vectors = store.vectors(round_key)
            for env in store.envelopes(round_key):
                vector = np.asarray(vectors[env.sender], dtype="<f4").tobytes()
                real[((round_key.iteration, int(round_key.phase), round_key.round), env.sender)] = (
                    bytes(env.body), bytes(env.signature), vector)
        model = {slot: (m.body, m.signature, m.vector) for slot, m in self.first.items()}
        if real != model:
            raise AssertionError(f"store differs from the model:\n  store only: {sorted(set(real) - set(model))}\n"
                                 f"  model only: {sorted(set(model) - set(real))}\n"
                                 f"  different: {sorted(k for k in set(real) & set(model) if real[k] != model[k])}")
        equivocators = {sender for (_, sender) in self.equivocated}
        if store.equivocators() != equivocators or len(store.evidence()) != len(self.equivocated):
            raise AssertionError(f"equivocation record differs: store {store.equivocators()} with "
                                 f"{len(store.evidence())} proofs, model {equivocators} with {len(self.equivocated)}")


def check_accepted_verdict(verdict: wire.Verdict, expected: Valid, dim: int) -> None:
    """An accepted verdict carries exactly what the oracle read: sender, slot, vector bits, clean envelope."""
    rk = verdict.round_key
    got_slot = None if rk is None else (rk.iteration, int(rk.phase), rk.round)
    if verdict.sender != expected.sender or got_slot != expected.slot:
        raise AssertionError(f"accepted verdict says sender {verdict.sender} slot {got_slot}, "
                             f"the bytes say {expected.sender} {expected.slot}")
    vec = verdict.vector
    if vec is None or vec.shape != (dim,) or vec.dtype != np.float32 or vec.flags.writeable:
        raise AssertionError(f"accepted vector is not a read-only float32[{dim}]: {vec!r}")
    if np.asarray(vec, dtype="<f4").tobytes() != expected.vector:
        raise AssertionError("accepted vector differs bitwise from the signed bytes")
    clean = peer_pb2.SignedMessage(sender=expected.sender, body=expected.body, signature=expected.signature)
    if verdict.envelope is None or verdict.envelope.SerializeToString() != clean.SerializeToString():
        raise AssertionError("accepted envelope is not a clean copy of (sender, body, signature)")


# --------------------------------------------------------------------------- building inputs


@dataclass(frozen=True)
class World:
    """The run as the fuzzed messages see it: who can sign, what is valid, what is near-valid."""

    run_id: bytes
    keys: Mapping[int, Ed25519PrivateKey]
    self_id: int
    now: int
    keep_behind: int
    window_ahead: int
    agreement_rounds: int
    dim: int
    stranger: Ed25519PrivateKey = field(default_factory=lambda: seeded_key("stranger"))
    other_run: bytes = hashlib.sha256(b"decbyzpg-atheris/other-run").digest()

    @property
    def sender_choices(self) -> list[int]:
        """Roster ids, others first (so all-zero fuzz data means a plausible sender), then self, then a non-member."""
        others = sorted(k for k in self.keys if k != self.self_id)
        unknown = next(i for i in range(len(self.keys) + 1) if i not in self.keys)
        return [*others, self.self_id, unknown]


def fuzzed_sender(fdp: atheris.FuzzedDataProvider, world: World) -> int:
    """A roster member most of the time, else any uint32 (unknown senders, id games)."""
    choices = world.sender_choices
    pick = fdp.ConsumeIntInRange(0, len(choices))
    return choices[pick] if pick < len(choices) else fdp.ConsumeIntInRange(0, UINT32_MAX)


ROUND_FIELDS = ("run_id", "iteration", "phase", "round", "sender", "length", "vector")  # field numbers 1..7
DEFECTS = ("run_id", "iteration", "phase", "round", "sender", "vector", "length", "encoding")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_fields(values: Mapping[str, int | bytes], order: Sequence[str]) -> bytes:
    """RoundMessage bytes with the fields in `order`, each encoded by protobuf on its own
    (a field at its default value encodes to nothing, as proto3 omits it)."""
    return b"".join(peer_pb2.RoundMessage(**{name: values[name]}).SerializeToString() for name in order)


def non_canonical(fdp: atheris.FuzzedDataProvider, values: Mapping[str, int | bytes]) -> bytes:
    """A body that protobuf parses to `values` (or nearly) but that is not their canonical encoding.

    One of: an unknown field appended, a field sent twice, a field at its default value
    sent explicitly, two fields swapped, a varint padded with a redundant zero group, or
    raw trailing bytes.  A random tail alone rarely parses, hence the constructions.
    """
    parts = [encode_fields(values, [name]) for name in ROUND_FIELDS]
    how = fdp.ConsumeIntInRange(0, 5)
    index = fdp.ConsumeIntInRange(0, len(ROUND_FIELDS) - 1)
    name, number = ROUND_FIELDS[index], index + 1
    value = values[name]
    if how == 0:
        number = fdp.ConsumeIntInRange(8, (1 << 29) - 1)  # beyond RoundMessage's fields; wire type varint
        parts.append(_varint(number << 3) + _varint(fdp.ConsumeIntInRange(0, UINT64_MAX)))
    elif how == 1:
        parts.append(parts[index])
    elif how == 2:
        defaults = [i for i, n in enumerate(ROUND_FIELDS) if values[n] in (0, b"")]
        if defaults:  # in its place, so only the "defaults are omitted" rule is broken
            i = defaults[index % len(defaults)]
            parts[i] = _varint((i + 1) << 3 | (2 if ROUND_FIELDS[i] in ("run_id", "vector") else 0)) + b"\0"
        else:
            parts.append(parts[index])
    elif how == 3:
        other = fdp.ConsumeIntInRange(0, len(ROUND_FIELDS) - 1)
        parts[index], parts[other] = parts[other], parts[index]
    elif how == 4 and isinstance(value, int) and value > 0:
        padded = bytearray(_varint(value & UINT64_MAX))
        padded[-1] |= 0x80
        parts[index] = _varint(number << 3) + bytes(padded) + b"\0"
    else:
        parts.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 12)))
    return b"".join(parts)


def fuzzed_round_message(fdp: atheris.FuzzedDataProvider, world: World, sender: int) -> bytes:
    """A RoundMessage for `sender` that is valid except for at most two chosen defects.

    The defects are chosen first and only a defective field reads more fuzz data, so the
    interesting inputs -- valid but for one thing -- are a short mutation apart rather
    than the product of every field's luck; all-zero data gives a valid message.  Each
    defect may still produce a valid value (e.g. an iteration inside the window): the
    oracle judges the bytes, not the intent.
    """
    defects = {DEFECTS[pick - 1] for pick in (fdp.ConsumeIntInRange(0, len(DEFECTS)) for _ in range(2)) if pick}
    ahead, behind = world.window_ahead, world.keep_behind
    offset = fdp.ConsumeIntInRange(0, ahead + behind)
    slot = fdp.ConsumeIntInRange(0, world.agreement_rounds)  # 0: the gradient round, r + 1: agreement round r
    values: dict[str, int | bytes] = {
        "run_id": world.run_id,
        "iteration": world.now + offset if offset <= ahead else world.now - (offset - ahead),
        "phase": GRADIENT if slot == 0 else AGREEMENT,
        "round": max(0, slot - 1),
        "sender": sender,
    }
    if "run_id" in defects:
        choice = fdp.ConsumeIntInRange(0, 2)
        values["run_id"] = (world.other_run, b"")[choice] if choice < 2 else \
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if "iteration" in defects:
        if fdp.ConsumeBool():
            values["iteration"] = fdp.ConsumeIntInRange(0, UINT64_MAX)
        else:  # just outside (or at) the window's edges
            edge = fdp.ConsumeIntInRange(-2, 2)
            values["iteration"] = max(0, world.now + ahead + edge if fdp.ConsumeBool() else world.now - behind + edge)
    if "phase" in defects:
        choice = fdp.ConsumeIntInRange(0, 5)
        values["phase"] = (0, int(Phase.MODEL), 4, -1, AGREEMENT)[choice] if choice < 5 else \
            fdp.ConsumeIntInRange(-(1 << 31), (1 << 31) - 1)
    if "round" in defects:
        values["round"] = fdp.ConsumeIntInRange(0, world.agreement_rounds + 1) if fdp.ConsumeBool() else \
            fdp.ConsumeIntInRange(0, UINT32_MAX)
    if "sender" in defects:
        values["sender"] = fuzzed_sender(fdp, world)
    if "vector" in defects:
        if fdp.ConsumeBool():  # any doubles: NaN, infinities, overflow to inf in float32
            count = fdp.ConsumeIntInRange(0, world.dim + 2) if fdp.ConsumeBool() else world.dim
            with np.errstate(over="ignore", invalid="ignore"):
                values["vector"] = np.asarray([fdp.ConsumeFloat() for _ in range(count)], dtype=np.float64) \
                    .astype("<f4").tobytes()
        else:
            values["vector"] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4 * world.dim + 6))
    else:
        values["vector"] = np.asarray([fdp.ConsumeFloatInRange(-1e30, 1e30) for _ in range(world.dim)],
                                      dtype=np.float64).astype("<f4").tobytes()
    vector = values["vector"]
    assert isinstance(vector, bytes)
    values["length"] = fdp.ConsumeIntInRange(0, UINT32_MAX) if "length" in defects else len(vector) // 4
    if "encoding" in defects:
        return non_canonical(fdp, values)
    return encode_fields(values, ROUND_FIELDS)


def fuzzed_signature(fdp: atheris.FuzzedDataProvider, world: World, sender: int, body: bytes) -> bytes:
    """Signed by the right key (most often, so the fuzzer gets past the signature), a wrong
    roster key, an outsider's key, or the right key with one bit flipped."""
    how = fdp.ConsumeIntInRange(0, 7)
    right = world.keys.get(sender, world.stranger)
    if how <= 4:
        return right.sign(DOMAIN + body)
    if how == 5:
        ids = sorted(world.keys)
        other = ids[(ids.index(sender) + 1) % len(ids)] if sender in world.keys else ids[0]
        return world.keys[other].sign(DOMAIN + body)
    if how == 6:
        return world.stranger.sign(DOMAIN + body)
    signature = bytearray(right.sign(DOMAIN + body))
    bit = fdp.ConsumeIntInRange(0, 8 * len(signature) - 1)
    signature[bit // 8] ^= 1 << (bit % 8)
    return bytes(signature)


def fuzzed_envelope(fdp: atheris.FuzzedDataProvider, world: World) -> peer_pb2.SignedMessage:
    """One envelope: a structured body, arbitrary body bytes (both signed as `fuzzed_signature`
    says), or an envelope of arbitrary sender, body and signature bytes."""
    sender = fuzzed_sender(fdp, world)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 3:
        return peer_pb2.SignedMessage(sender=sender, body=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 160)),
                                      signature=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70)))
    body = fuzzed_round_message(fdp, world, sender) if mode <= 1 else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 160))
    return peer_pb2.SignedMessage(sender=sender, body=body, signature=fuzzed_signature(fdp, world, sender, body))


# --------------------------------------------------------------------------- target: the validator


def validator_target() -> Callable[[bytes], None]:
    """Fuzz `Validator.check` plus the store hand-off, with raw bytes and with structured envelopes.

    The validator is built as tests/support/wire_fixtures.py builds it (five Ed25519 keys,
    four values, gradient and agreement phases), except that the largest roster id is
    2^32 - 1 (an id at the edge of uint32) and the size limit is just above an honest
    message, so TOO_LARGE is reachable with libFuzzer's default 4 KB inputs.  Each input
    is fed twice: as raw envelope bytes (a Push), then, read through FuzzedDataProvider,
    as 1-4 structured envelopes to one store, so that duplicates and equivocations occur.
    """
    ids = (0, 1, 2, 3, UINT32_MAX)
    keys = {i: seeded_key(f"validator/{i}") for i in ids}
    dim, rounds = 4, 3
    world = World(run_id=hashlib.sha256(b"decbyzpg-atheris/run").digest(), keys=keys, self_id=0, now=10,
                  keep_behind=2, window_ahead=2, agreement_rounds=rounds, dim=dim)
    max_bytes = wire.max_envelope_bytes(dim) + 32
    roster = {i: k.public_key() for i, k in keys.items()}
    oracle = Oracle(world.run_id, roster, world.self_id, dim, frozenset({GRADIENT, AGREEMENT}), rounds, world.now,
                    world.keep_behind, world.window_ahead, max_bytes)
    shape = RoundShape(frozenset({Phase.GRADIENT, Phase.AGREEMENT}), rounds)
    errors = InternalErrors.install()
    verifications = VerifyCounter().install()
    stats = Stats("validator")

    def feed(validator: wire.Validator, store: RoundStore, shadow: ShadowStore, item: Envelope) -> None:
        expected = oracle.judge(item)
        size = item.ByteSize() if isinstance(item, peer_pb2.SignedMessage) else memoryview(item).nbytes
        verified_before = verifications.calls
        started = time.thread_time()
        verdict = validator.check(item, world.now)
        stored = store.add(verdict) if verdict.accepted else None
        stats.timed(time.thread_time() - started, size, "Validator.check + RoundStore.add")
        errors.raise_if_any()
        stats.outcomes[verdict.reason_name] += 1
        if verifications.calls - verified_before > 1:
            raise AssertionError(f"one message cost {verifications.calls - verified_before} signature checks")
        if verdict.reason not in KNOWN_REASONS:
            raise AssertionError(f"unknown reason code {verdict.reason}")
        if expected is None:
            if verdict.accepted:
                shown = item if isinstance(item, peer_pb2.SignedMessage) else bytes(item)
                raise AssertionError(f"accepted an invalid message: {shown!r}")
        elif shadow.holds(expected):
            if verdict.reason != DUPLICATE or verifications.calls != verified_before:
                raise AssertionError(f"a held envelope came back {verdict.reason_name} after "
                                     f"{verifications.calls - verified_before} verifications, not DUPLICATE unverified")
        else:
            if not verdict.accepted:
                raise AssertionError(f"rejected a valid message as {verdict.reason_name}: {expected}")
            check_accepted_verdict(verdict, expected, dim)
            want = shadow.add(expected)
            if stored != want:
                raise AssertionError(f"RoundStore.add returned {wire.reason_name(stored or 0)}, expected "
                                     f"{wire.reason_name(want)}")
        shadow.assert_matches(store)

    def fresh() -> tuple[wire.Validator, RoundStore, ShadowStore]:
        store = RoundStore()
        validator = wire.Validator(world.run_id, roster, world.self_id, dim, shape, max_message_bytes=max_bytes,
                                   window_ahead=world.window_ahead, keep_behind=world.keep_behind,
                                   already_held=store.holds)
        return validator, store, ShadowStore()

    def test_one_input(data: bytes) -> None:
        feed(*fresh(), data)
        fdp = atheris.FuzzedDataProvider(data)
        validator, store, shadow = fresh()
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            env = fuzzed_envelope(fdp, world)
            form = fdp.ConsumeIntInRange(0, 3)  # as gRPC parsed it, or as bytes in each accepted type
            item: Envelope = env if form == 0 else (bytes, bytearray, memoryview)[form - 1](env.SerializeToString())
            feed(validator, store, shadow, item)
        stats.tick()

    return test_one_input


# --------------------------------------------------------------------------- target: the Pull reply path


def pull_target() -> Callable[[bytes], None]:
    """Fuzz `PeerTransport.accept_pulled` on a transport that is never started.

    No socket, no event loop: `accept_pulled` and `receive` are synchronous and touch only
    the validator, the store and counters, which is exactly the path a Pull reply takes
    once gRPC has parsed it.  The clock is frozen, so the junk back-off is deterministic.

    Per input: a fresh transport for peer 0 of five, with some senders already held for the
    pulled round; then a reply of up to 300 envelopes (valid ones from a pre-signed pool,
    relabelled, bit-flipped, stale, too far ahead, non-finite, from another run, freshly
    built by `fuzzed_envelope`, repeats) -- or, sometimes, the raw input parsed as a
    PullReply.  The reply always goes through PullReply bytes, as it does on the wire.

    Checked: at most K (roster size) envelopes reach the validator and at most K signatures
    are verified; the return value counts them; exactly the valid envelopes among the
    first per missing sender in the first K are stored; the relaying peer is charged with
    every rejection plus every envelope beyond K, and paused exactly when charged.
    """
    k_peers, dim, now, self_id, clock_now = 5, 4, 100, 0, 1000.0
    keys = {i: seeded_key(f"pull/{i}") for i in range(k_peers)}
    cfg = build_config({"num_peers": k_peers, "num_byzantine": 1}, in_process=False)
    peers = tuple(PeerEntry(i, f"127.0.0.1:{40000 + i}", crypto.public_key_text(keys[i])) for i in range(k_peers))
    run = RunFile(config=cfg, network=NetworkConfig(), peers=peers)
    net = run.network
    probe = PeerTransport(run, self_id, keys[self_id], dim, clock=lambda: clock_now)
    shape = probe.validator.shape
    world = World(run_id=run.run_id, keys=keys, self_id=self_id, now=now, keep_behind=net.retain_iterations,
                  window_ahead=net.window_ahead, agreement_rounds=shape.agreement_rounds, dim=dim)
    oracle = Oracle(run.run_id, {i: k.public_key() for i, k in keys.items()}, self_id, dim,
                    frozenset(int(p) for p in shape.phases), shape.agreement_rounds, now, net.retain_iterations,
                    net.window_ahead, net.max_message_bytes)
    pulled = RoundKey(now, Phase.GRADIENT)
    pulled_slot = (now, GRADIENT, 0)

    # The pool: (sender, round, variant) -> envelope, signed once here because signing 300
    # envelopes per input would make the harness, not the code under test, the bottleneck.
    pool_senders = [1, 2, 3, 4, 0]  # others first; 0 is ourselves (a relay may echo our own message)
    pool_rounds = [(now, GRADIENT, 0), (now, AGREEMENT, 1), (now + 1, GRADIENT, 0),
                   (now + net.window_ahead + 1, GRADIENT, 0), (now - net.retain_iterations - 1, GRADIENT, 0)]
    rng = np.random.default_rng(0)
    pool: dict[tuple[int, int, int], peer_pb2.SignedMessage] = {}
    for s in pool_senders:
        for r, (it, ph, rd) in enumerate(pool_rounds):
            for variant in range(4):
                vec = rng.normal(size=dim).astype("<f4")
                if variant == 2:
                    vec[0] = np.nan
                run_id = world.other_run if variant == 3 else run.run_id
                pool[s, r, variant] = sign(keys[s], s, body_bytes(run_id, it, ph, rd, s, dim, vec.tobytes()))

    errors = InternalErrors.install()
    verifications = VerifyCounter().install()
    stats = Stats("pull")

    def pool_pick(fdp: atheris.FuzzedDataProvider, shift: int = 0) -> peer_pb2.SignedMessage:
        sender = pool_senders[(fdp.ConsumeIntInRange(0, len(pool_senders) - 1) + shift) % len(pool_senders)]
        return pool[sender, fdp.ConsumeIntInRange(0, len(pool_rounds) - 1), fdp.ConsumeIntInRange(0, 3)]

    def entry(fdp: atheris.FuzzedDataProvider, so_far: Sequence[peer_pb2.SignedMessage],
              budget: list[int]) -> peer_pb2.SignedMessage:
        # Each block of K entries defaults to the next sender, so any reply longer than K
        # carries senders not seen in the first K -- exactly what the bound must ignore.
        shift = len(so_far) // k_peers
        kind = fdp.ConsumeIntInRange(0, 6)
        if kind == 1:  # a valid envelope relabelled as someone else's
            env = peer_pb2.SignedMessage()
            env.CopyFrom(pool_pick(fdp, shift))
            env.sender = fuzzed_sender(fdp, world)
            return env
        if kind == 2:  # one bit flipped in the body or the signature
            env = pool_pick(fdp, shift)
            flip_body = fdp.ConsumeBool()
            data = bytearray(env.body if flip_body else env.signature)
            bit = fdp.ConsumeIntInRange(0, 8 * len(data) - 1)
            data[bit // 8] ^= 1 << (bit % 8)
            body, signature = (bytes(data), env.signature) if flip_body else (env.body, bytes(data))
            return peer_pb2.SignedMessage(sender=env.sender, body=body, signature=signature)
        if kind == 3 and budget[0] > 0:  # freshly built from fuzzed fields (signing is costly: rationed)
            budget[0] -= 1
            return fuzzed_envelope(fdp, world)
        if kind in (3, 4):  # junk
            return peer_pb2.SignedMessage(sender=fuzzed_sender(fdp, world),
                                          body=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 120)),
                                          signature=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70)))
        if kind == 5 and so_far:  # a repeat
            return so_far[fdp.ConsumeIntInRange(0, len(so_far) - 1)]
        if kind == 6:  # a field missing or cut short
            env = pool_pick(fdp, shift)
            cut = fdp.ConsumeIntInRange(0, 63)
            return peer_pb2.SignedMessage(sender=env.sender, body=b"" if fdp.ConsumeBool() else env.body,
                                          signature=env.signature[:cut])
        return pool_pick(fdp, shift)

    def test_one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        transport = PeerTransport(run, self_id, keys[self_id], dim, clock=lambda: clock_now)
        transport.set_iteration(now)
        shadow = ShadowStore()
        for s in pool_senders[:-1]:  # some senders already held for the pulled round
            variant = fdp.ConsumeIntInRange(0, 2)
            if variant:
                env = pool[s, 0, variant - 1]
                expected = oracle.judge(env)
                if expected is None or transport.receive(env) != ACCEPTED:
                    raise AssertionError(f"a valid message from the pool was not accepted: {expected}")
                shadow.add(expected)
        source = fdp.ConsumeIntInRange(1, k_peers - 1)
        if fdp.ConsumeIntInRange(0, 7) == 7:
            try:
                reply = peer_pb2.PullReply.FromString(fdp.ConsumeBytes(fdp.remaining_bytes()))
            except DecodeError:
                return  # gRPC fails the call before accept_pulled sees anything
        else:
            entries: list[peer_pb2.SignedMessage] = []
            budget = [16]
            for _ in range(fdp.ConsumeIntInRange(0, 300)):
                entries.append(entry(fdp, entries, budget))
            reply = peer_pb2.PullReply.FromString(peer_pb2.PullReply(messages=entries).SerializeToString())
        envelopes = reply.messages

        # What should happen, modelled from the documented rule (accept_pulled's docstring).
        have = shadow.senders(pulled_slot) | {self_id}
        looked: list[peer_pb2.SignedMessage] = []
        for env in list(envelopes)[:k_peers]:
            if env.sender not in have and env.sender not in {e.sender for e in looked}:
                looked.append(env)
        accepted_before, new, charged = transport.accepted, 0, max(0, len(envelopes) - k_peers)
        for env in looked:
            expected = oracle.judge(env)
            if expected is None:
                charged += 1
            elif not shadow.holds(expected):
                outcome = shadow.add(expected)
                new += outcome == ACCEPTED
                charged += outcome not in (ACCEPTED, DUPLICATE)

        counting = CountingValidator(transport.validator)
        transport.validator = counting  # type: ignore[assignment]
        verified_before = verifications.calls
        started = time.thread_time()
        checked = transport.accept_pulled(source, pulled, envelopes)
        stats.timed(time.thread_time() - started, reply.ByteSize(), f"accept_pulled of {len(envelopes)} envelopes")
        errors.raise_if_any()
        verified, checks = verifications.calls - verified_before, counting.calls
        stats.outcomes[f"stored {new}"] += 1
        if not checks == checked == len(looked) <= k_peers or verified > checks:
            raise AssertionError(f"accept_pulled returned {checked}, validated {checks}, verified {verified}; "
                                 f"expected {len(looked)} (<= K={k_peers}) of {len(envelopes)} envelopes")
        if transport.accepted - accepted_before != new:
            raise AssertionError(f"{transport.accepted - accepted_before} accepted, expected {new}")
        shadow.assert_matches(transport.store)
        if transport.junk_by_source[source] != charged or transport.pull_paused(source) != (charged > 0):
            raise AssertionError(f"source {source} charged {transport.junk_by_source[source]} "
                                 f"(paused: {transport.pull_paused(source)}), expected {charged}")
        stats.tick()

    return test_one_input


# --------------------------------------------------------------------------- command line

TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {"validator": validator_target, "pull": pull_target}


def main(argv: Sequence[str]) -> None:
    """Pick the target, add an artifact directory unless one is given, and hand the rest to libFuzzer."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(f"usage: {argv[0]} {{{'|'.join(TARGETS)}}} [--artifacts DIR] [libFuzzer options]")
    target, rest = argv[1], list(argv[2:])
    artifacts: str | None = None
    for i, arg in enumerate(rest):
        if arg.startswith("--artifacts="):
            artifacts = arg.split("=", 1)[1]
            del rest[i]
            break
        if arg == "--artifacts" and i + 1 < len(rest):
            artifacts = rest[i + 1]
            del rest[i:i + 2]
            break
    if not any(arg.startswith("-artifact_prefix=") for arg in rest):
        artifacts = artifacts or tempfile.mkdtemp(prefix=f"decbyzpg-atheris-{target}-")
        os.makedirs(artifacts, exist_ok=True)  # libFuzzer refuses a prefix whose directory is missing
        rest.append(f"-artifact_prefix={artifacts.rstrip('/')}/")
        print(f"[{target}] failing inputs go to {artifacts}", file=sys.stderr, flush=True)
    one_input = TARGETS[target]()
    # Everything alive now (modules, keys, pools) lives for the whole run: frozen, a full
    # garbage collection no longer walks it, so one that lands inside a timed call costs
    # well under a millisecond instead of tens (measured: 26 ms on a loaded machine).
    gc.collect()
    gc.freeze()
    atheris.Setup([argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
