"""`decbyzpg conformance`: check a peer under test against decbyzpg.v1, over the wire only.

The peer under test (the *target*) may be this project's daemon, a re-implementation in
another language or a patched fork, so the suite never touches its objects: all it knows
comes from gRPC calls to the target and from what the target sends to the tester's own
servers.  The tester plays the other K - 1 roster members with this project's honest
`PeerDaemon`s, one thread each on its roster address, so the target runs a real run with
real peers.  Every requirement is one row: id, MUST or SHOULD, pass / fail / n/a / not
checked, and the evidence (`REQUIREMENTS`).

Why it is built this way:

* **Every other roster member honest, the run file's Byzantine ids included.**  A
  Byzantine daemon's messages depend on timing (it is rushing: it waits for the honest
  vectors), an honest peer's only on the run file.  With all K - 1 honest, the in-process
  reference of the same configuration (`ReferenceRun`: every roster member an honest state
  machine, f kept as the bound the rules assume) is exact, and the target's every vector is
  compared bit for bit.  Byzantine behaviour on the wire is what the reject probes are.
* **Probes that cannot disturb the run.**  Every probe that names a valid round aims at the
  target's first round, (0, gradient, 0), and claims to come from a tester peer whose genuine
  message for it the suite has already pushed: a target that wrongly lets a probe through
  meets it in its round store behind the genuine message (first wins), so one broken check
  fails its own row and not the rest.  Meanwhile f + 1 tester peers withhold their message
  for that round from the target (`TesterPlan`), so it has fewer than q = K - f vectors and
  must wait in the round, under its startup deadline, whatever its algorithm and grace (a
  ByzPG server would otherwise run ahead through its model rounds) and whatever its
  retain_iterations; the suite pushes those messages itself once it has probed.
* **Outputs against the reference, round by round.**  The vectors the target signed are the
  only view of its estimator, aggregation and agreement.  The engine is bit-identical between
  network and in-process runs when no message is lost, so the first round whose vector differs
  names the first computation the target got wrong -- unless a tester peer deviated first (a
  message late on the tester's side), which the row then says instead.
* **One silent round, only when it is cheap.**  The deadline row makes the target wait out a
  round_timeout, so it runs only when round_timeout is short: the tester peers then withhold one
  round from the target (by Deliver and by Pull), and the reference gives the target nothing
  in that round either, so the outputs still compare exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import shlex
import subprocess
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from decbyzpg.v1 import peer_pb2
from grpc_health.v1 import health_pb2

from adversary.misbehaviour import craft, unknown_field
from peer.engine import randomness
from peer.engine.config import AttackConfig, RunConfig
from peer.engine.errors import (
    ConfigError,
    ExitCode,
    KeyFileError,
    PeerUnreachableError,
    RunStateError,
)
from peer.engine.exchange import Broadcast, PeerProgram, Received
from peer.engine.schedule import Phase, RoundKey, Schedule
from peer.engine.state_machine import IterationReport, PeerStateMachine
from peer.lab.inprocess import InProcessRun
from peer.net import crypto, reads, wire
from peer.net.crypto import load_private_key, public_key_to_text
from peer.net.daemon import PeerDaemon
from peer.net.rejections import RejectionLog
from peer.net.runfile import RunFile, load_run_file
from peer.net.tls import TlsFiles
from peer.net.transport import SERVICE, PeerTransport, event_loop, open_channel

T = TypeVar("T")

# --------------------------------------------------------------------------- requirements

MUST, SHOULD = "MUST", "SHOULD"
FLOOD_ENVELOPES = 2000  # within bounds: a few honest rounds' worth of messages, not a stress test
PASS, FAIL, NOT_APPLICABLE, NOT_CHECKED = "pass", "fail", "n/a", "not checked"


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str  # MUST or SHOULD
    description: str


def reject_row(reason: str) -> str:
    """The requirement id of a RejectReason name: 'BAD_SIGNATURE' -> 'reject-bad-signature'."""
    return "reject-" + reason.lower().replace("_", "-")


# From the proto itself, so a reason added to it appears here (as "not checked" until probed).
REJECT_REASONS = tuple(wire.reason_name(value) for value in sorted(peer_pb2.RejectReason.values())
                       if value != wire.ACCEPTED)

REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("health", MUST, 'grpc.health.v1 Check for "decbyzpg.v1.Peer" answers SERVING'),
    Requirement("status-signed", MUST, "Status with a valid ReadAuth answers the run id and the target's peer id"),
    Requirement("reads-unsigned-refused", MUST, "Status, Pull and Evidence without ReadAuth are refused "
                "UNAUTHENTICATED (with network.open_status, Status is answered instead)"),
    Requirement("reads-forged-refused", MUST, "a read by a reader outside the roster, issued outside "
                "read_max_skew, signed by another key, authorized for another method or widened is refused "
                "UNAUTHENTICATED"),
    *(Requirement(reject_row(name), MUST, f"Push of an envelope that fails only with {name} is answered {name}, "
                  "and the target keeps serving") for name in REJECT_REASONS),
    Requirement("flood", MUST, f"{FLOOD_ENVELOPES} junk envelopes on one Deliver stream (garbage, unknown senders, "
                "bad signatures) are all read and none accepted, and the target still answers Health and a signed "
                "Status"),
    Requirement("progress", MUST, "with the other K - 1 peers honest, the target sends in every round, its "
                "Status.iteration grows and it reports finished"),
    Requirement("messages-valid", MUST, "every message the target sent the tester peers was accepted, and each "
                "got the same signed bytes per round"),
    Requirement("outputs-match", MUST, "every vector the target signed equals, bit for bit, its own in the "
                "in-process reference run (estimator, aggregation and agreement together, and the equivocating "
                "tester peer of the evidence probe left out from iteration 2 on)"),
    Requirement("evidence", MUST, "after two different validly signed messages for one slot, a signed Evidence "
                "read returns that pair"),
    Requirement("report", MUST, "Report accepts the evidence probe's pair as a proof, refuses forged ones (a bad "
                "signature, two rounds, the same body twice) with a reason, and the target keeps serving"),
    Requirement("pull", MUST, "a signed Pull for a round the others finished returns what the target holds, at most one "
                "envelope per sender, each valid and unchanged; the senders filter works"),
    Requirement("deadline", MUST, "in a round no other peer sends in, the target waits for round_timeout "
                "and then leaves it"),
)


@dataclass(frozen=True)
class Outcome:
    result: str  # PASS, FAIL, NOT_APPLICABLE or NOT_CHECKED
    evidence: str


def judged(ok: bool, evidence: str) -> Outcome:
    return Outcome(PASS if ok else FAIL, evidence)


@dataclass(frozen=True)
class Report:
    """The rows of one conformance run, in `REQUIREMENTS` order."""

    target: str
    target_id: int
    seconds: float
    rows: tuple[tuple[Requirement, Outcome], ...]

    @property
    def must_failures(self) -> list[str]:
        return [req.id for req, outcome in self.rows if req.level == MUST and outcome.result == FAIL]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILURE if self.must_failures else ExitCode.SUCCESS

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "target_id": self.target_id, "seconds": round(self.seconds, 2),
            "passed": not self.must_failures, "must_failures": self.must_failures,
            "rows": [{"id": req.id, "level": req.level, "description": req.description, "result": outcome.result,
                      "evidence": outcome.evidence} for req, outcome in self.rows],
        }


def render_table(report: Report) -> str:
    """One row per requirement, then a one-line verdict."""
    width = max(len(req.id) for req, _ in report.rows)
    lines = [f"{'requirement':<{width}}  level   result       evidence"]
    for req, outcome in report.rows:
        lines.append(f"{req.id:<{width}}  {req.level:<6}  {outcome.result:<11}  {outcome.evidence}")
    musts = [o for r, o in report.rows if r.level == MUST]
    failed = report.must_failures
    verdict = "conforms" if not failed else f"does NOT conform (failed: {', '.join(failed)})"
    lines.append(f"\npeer {report.target_id} at {report.target} {verdict}: "
                 f"{sum(o.result == PASS for o in musts)} of {len(musts)} MUST requirements pass "
                 f"({sum(o.result == NOT_APPLICABLE for o in musts)} not applicable); {report.seconds:.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the wire to the target


class RpcFailure(Exception):
    """A call to the target ended with a gRPC status instead of a reply (or was not answered)."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code


_REPLIES: dict[str, tuple[str, Any]] = {
    "Push": (f"/{SERVICE}/Push", peer_pb2.PushReply),
    "Pull": (f"/{SERVICE}/Pull", peer_pb2.PullReply),
    "Evidence": (f"/{SERVICE}/Evidence", peer_pb2.EvidenceReply),
    "Report": (f"/{SERVICE}/Report", peer_pb2.ReportReply),
    "Status": (f"/{SERVICE}/Status", peer_pb2.StatusReply),
    "Health": ("/grpc.health.v1.Health/Check", health_pb2.HealthCheckResponse),
}


class TargetClient:
    """Unary calls to the target, on the process's gRPC event loop (the tester peers' loop).

    It reuses the transport's `open_channel`, so with [tls] the target's certificate is
    checked against its roster id exactly as a peer checks it.  Push sends raw bytes, so
    the suite can send what no protobuf encoder would produce.
    """

    def __init__(self, address: str, target_id: int, tls: TlsFiles | None, timeout: float,
                 max_message_bytes: int) -> None:
        self.address = address
        self.timeout = timeout
        self._loop = event_loop()
        limit = 8 * max_message_bytes  # room for the TOO_LARGE probe and any Pull reply

        async def open_() -> grpc.aio.Channel:
            return open_channel(address, target_id, tls, [("grpc.max_send_message_length", limit),
                                                          ("grpc.max_receive_message_length", limit)])

        self._channel = self._on_loop(open_)

    def _on_loop(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()  # grpc.aio objects must be created on their loop

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self.timeout + 5)

    def _rpc(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run one call on the loop; its gRPC failure (or no answer in time) as RpcFailure."""
        try:
            return self._on_loop(make)
        except grpc.RpcError as err:
            raise RpcFailure(err.code().name, err.details() or "") from None
        except TimeoutError:
            raise RpcFailure("DEADLINE_EXCEEDED", "no answer") from None

    def call(self, method: str, request: Any) -> Any:
        """The reply of `method` ('Push', 'Pull', 'Evidence', 'Status', 'Health'); RpcFailure otherwise."""
        path, reply_type = _REPLIES[method]
        serializer = None if isinstance(request, bytes) else type(request).SerializeToString

        def start() -> Any:
            return self._channel.unary_unary(path, request_serializer=serializer,
                                             response_deserializer=reply_type.FromString)(request, timeout=self.timeout)

        return self._rpc(start)

    def push(self, raw: bytes) -> str:
        """The target's verdict on `raw`: 'ACCEPTED', a reason name, or 'RPC <status>'."""
        try:
            return wire.reason_name(self.call("Push", raw).reason)
        except RpcFailure as err:
            return f"RPC {err.code}"

    def deliver(self, raws: Sequence[bytes]) -> tuple[int, int]:
        """Write `raws` on one Deliver stream and close it: the target's (received, accepted); RpcFailure otherwise."""
        async def run() -> tuple[int, int]:
            call = self._channel.stream_unary(f"/{SERVICE}/Deliver", request_serializer=None,
                                              response_deserializer=peer_pb2.DeliverReply.FromString)(
                iter(raws), timeout=self.timeout)
            reply = await call
            return int(reply.received), int(reply.accepted)

        return self._rpc(run)

    def health(self) -> str:
        """'SERVING', another serving status, or 'RPC <status>' when the check itself failed."""
        try:
            reply = self.call("Health", health_pb2.HealthCheckRequest(service=SERVICE))
        except RpcFailure as err:
            return f"RPC {err.code}"
        try:
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except ValueError:
            return f"status {reply.status}"  # not a value of the enum: still an answer, and a wrong one

    def close(self) -> None:
        try:
            self._on_loop(self._channel.close)
        except Exception:  # closing is best effort: the loop may be shutting down with the process
            pass


def unreachable(health: str) -> bool:
    """Whether a health answer means nobody answered (as opposed to a peer answering wrongly)."""
    return health in ("RPC UNAVAILABLE", "RPC DEADLINE_EXCEEDED")


# --------------------------------------------------------------------------- probes


def fmt(key: RoundKey) -> str:
    return f"({key.iteration}, {key.phase.name.lower()}, {key.round})"


@dataclass(frozen=True)
class ProbeKit:
    """Builds the reject probes: envelopes signed by tester peers' keys, aimed at one slot.

    Each probe fails exactly one check of the validation order (docs/PROTOCOL.md) and passes
    every check before it, so only the reason under test is a correct answer.  `keys` holds
    only tester peers whose genuine message for the slot the target already has, and probes
    claim to come from them, the target, or nobody in the roster: whatever a broken target
    stores in their name comes second.
    """

    run: RunFile
    schedule: Schedule
    dim: int
    target: int
    keys: Mapping[int, Ed25519PrivateKey]  # tester id -> signing key
    slot: RoundKey

    @property
    def signer(self) -> int:
        return min(self.keys)

    @property
    def other(self) -> int:
        """A second roster member besides the signer: another tester, else the target."""
        return next((k for k in sorted(self.keys) if k != self.signer), self.target)

    def body(self, **fields: Any) -> bytes:
        """A canonical RoundMessage of zeros for the slot from the signer, with `fields` replaced."""
        message: dict[str, Any] = {
            "run_id": self.run.run_id, "iteration": self.slot.iteration, "phase": int(self.slot.phase),
            "round": self.slot.round, "sender": self.signer, "length": self.dim,
            "vector": wire.encode_vector(np.zeros(self.dim, np.float32))}
        message.update(fields)
        return peer_pb2.RoundMessage(**message).SerializeToString()

    def signed(self, body: bytes, envelope_sender: int | None = None) -> bytes:
        """`body` signed by the signer's key, in an envelope naming `envelope_sender` (default: the signer)."""
        sender = self.signer if envelope_sender is None else envelope_sender
        return wire.sign_body(self.keys[self.signer], sender, body).SerializeToString()

    def crafted(self, kind: str, round_key: RoundKey | None = None) -> bytes:
        """The first envelope of one `adversary.misbehaviour` kind, signed by the signer."""
        rng = randomness.stream(self.run.config.genesis_hash(), "conformance", kind)
        return craft(kind, self.keys[self.signer], self.run.run_id, round_key or self.slot, self.signer, self.dim,
                     self.target, self.run.network.max_message_bytes, rng, flood=1)[0]


def _malformed(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [("random bytes", kit.crafted("garbage")), ("an empty envelope", b"")]


def _too_large(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [(f"a validly signed envelope over max_message_bytes ({kit.run.network.max_message_bytes})",
             kit.crafted("oversized"))]


def _unknown_sender(kit: ProbeKit) -> list[tuple[str, bytes]]:
    outsider = max(p.id for p in kit.run.peers) + 1
    return [(f"sender {outsider}, not in the roster", kit.signed(kit.body(sender=outsider), outsider))]


def _bad_signature(kit: ProbeKit) -> list[tuple[str, bytes]]:
    cases = [("a corrupted signature", kit.crafted("invalid_signature"))]
    if kit.other != kit.target:  # impersonation: one roster member's id under another's key
        forged = wire.sign_body(kit.keys[kit.signer], kit.other, kit.body(sender=kit.other)).SerializeToString()
        cases.append((f"peer {kit.other}'s id under peer {kit.signer}'s key", forged))
    return cases


def _sender_mismatch(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [(f"envelope from {kit.signer}, body from {kit.other}", kit.signed(kit.body(sender=kit.other)))]


def _wrong_run(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [("another run's id", kit.crafted("wrong_run"))]


def _too_far_ahead(kit: ProbeKit) -> list[tuple[str, bytes]]:
    # beyond the last iteration as well, so even a target that stored it would never use it
    base = RoundKey(kit.schedule.iteration_count + kit.run.network.window_ahead, kit.slot.phase, kit.slot.round)
    return [(f"iteration {base.iteration + 1000}", kit.crafted("flood_future", base))]


def _bad_phase(kit: ProbeKit) -> list[tuple[str, bytes]]:
    unused = next(p for p in (Phase.MODEL, Phase.AGREEMENT, Phase.GRADIENT) if p not in kit.schedule.shape().phases)
    return [(f"phase {unused.name.lower()}, which this algorithm never uses", kit.signed(kit.body(phase=int(unused))))]


def _bad_round(kit: ProbeKit) -> list[tuple[str, bytes]]:
    rounds = kit.schedule.agreement_rounds
    if rounds:
        return [(f"agreement round {rounds} of 0..{rounds - 1}",
                 kit.signed(kit.body(phase=int(Phase.AGREEMENT), round=rounds)))]
    return [("gradient round 1", kit.signed(kit.body(round=1)))]


def _bad_length(kit: ProbeKit) -> list[tuple[str, bytes]]:
    short = wire.encode_vector(np.zeros(max(kit.dim - 1, 0), np.float32))
    return [(f"{kit.dim - 1} values instead of {kit.dim}", kit.crafted("wrong_length")),
            (f"length {kit.dim} over the bytes of {kit.dim - 1} values", kit.signed(kit.body(vector=short)))]


def _non_finite(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [("a NaN or infinity among the values", kit.crafted("non_finite"))]


def _self(kit: ProbeKit) -> list[tuple[str, bytes]]:
    return [(f"sender {kit.target}, the target itself", kit.signed(kit.body(sender=kit.target), kit.target))]


def _non_canonical(kit: ProbeKit) -> list[tuple[str, bytes]]:
    canonical = kit.body()
    without_run_id = peer_pb2.RoundMessage.FromString(canonical)
    without_run_id.ClearField("run_id")
    run_id_last = (without_run_id.SerializeToString()
                   + peer_pb2.RoundMessage(run_id=kit.run.run_id).SerializeToString())
    cases = [("an unknown field", kit.signed(canonical + unknown_field(16))),
             ("run_id after the other fields", kit.signed(run_id_last))]
    if kit.slot.round == 0:  # a default value written out: round = 0 (field 4, varint 0)
        cases.append(("round = 0 written out", kit.signed(canonical + b"\x20\x00")))
    return cases


def _past_validation(reply: str, expected: str) -> str:
    """A note when a probe's answer shows it got past validation, to the round store."""
    stored = ("ACCEPTED", "DUPLICATE", "EQUIVOCATION")
    return " (it got past validation, to the round store)" if reply in stored and expected not in stored else ""


# The probes pushed at the gate, by the reason each must draw.  STALE, DUPLICATE and
# EQUIVOCATION need the target's state (an old window, a held message) and are probed apart.
REJECT_PROBES: dict[str, Callable[[ProbeKit], list[tuple[str, bytes]]]] = {
    "MALFORMED": _malformed, "TOO_LARGE": _too_large, "UNKNOWN_SENDER": _unknown_sender,
    "BAD_SIGNATURE": _bad_signature, "SENDER_MISMATCH": _sender_mismatch, "WRONG_RUN": _wrong_run,
    "TOO_FAR_AHEAD": _too_far_ahead, "BAD_PHASE": _bad_phase, "BAD_ROUND": _bad_round,
    "BAD_LENGTH": _bad_length, "NON_FINITE": _non_finite, "SELF": _self, "NON_CANONICAL": _non_canonical,
}


# --------------------------------------------------------------------------- the tester peers

GATE_SLOT = RoundKey(0, Phase.GRADIENT, 0)
"""Where slot-bearing probes aim: the first round of every run (x_0 = 1, every peer sends)."""


class TesterPlan:
    """What the suite asks of its tester peers, and what they saw of the target.  Thread-safe.

    Until the suite has probed (`probed`), the peers in `withheld_at_gate` send their
    `GATE_SLOT` message to everyone but the target, no tester peer relays anything of that
    round by Pull, and all hold back their later messages (`hold`).  `silent_round` is
    withheld from the target.  Tester peers say they are finished only after `may_finish`,
    so the target keeps serving (it lingers until every other peer is finished) while the
    suite reads its last Status.
    """

    def __init__(self, target: int, withheld_at_gate: frozenset[int], silent_round: RoundKey | None,
                 hold_patience: float) -> None:
        self.target = target
        self.withheld_at_gate = withheld_at_gate
        self.silent_round = silent_round
        self.hold_patience = hold_patience
        self.probed = threading.Event()
        self.may_finish = threading.Event()
        self._lock = threading.Lock()
        self._sent: dict[tuple[int, RoundKey], peer_pb2.SignedMessage] = {}
        self._from_target: dict[RoundKey, dict[int, bytes]] = {}
        self._first_arrival: dict[RoundKey, float] = {}

    def hold(self, round_key: RoundKey) -> None:
        if round_key > GATE_SLOT:
            self.probed.wait(self.hold_patience)

    def withholds(self, sender: int, round_key: RoundKey) -> bool:
        """Whether `sender`'s message for `round_key` must not reach the target (yet)."""
        if round_key == self.silent_round:
            return True
        return round_key == GATE_SLOT and sender in self.withheld_at_gate and not self.probed.is_set()

    def relays(self, round_key: RoundKey) -> bool:
        """Whether tester peers may answer Pulls for `round_key` (else the target would fetch what is withheld)."""
        return round_key != self.silent_round and (round_key != GATE_SLOT or self.probed.is_set())

    def record_sent(self, tester: int, round_key: RoundKey, envelope: peer_pb2.SignedMessage) -> None:
        with self._lock:
            self._sent.setdefault((tester, round_key), envelope)

    def record_accepted(self, tester: int, envelope: peer_pb2.SignedMessage | bytes, now: float) -> None:
        """Keep what a tester peer accepted if the target signed it (by whatever way it came)."""
        if isinstance(envelope, (bytes, bytearray, memoryview)):
            envelope = peer_pb2.SignedMessage.FromString(bytes(envelope))
        if envelope.sender != self.target:
            return
        body = peer_pb2.RoundMessage.FromString(envelope.body)  # accepted, so it parses
        round_key = RoundKey(int(body.iteration), Phase(body.phase), int(body.round))
        clean = peer_pb2.SignedMessage(sender=envelope.sender, body=envelope.body, signature=envelope.signature)
        with self._lock:
            self._from_target.setdefault(round_key, {})[tester] = clean.SerializeToString()
            self._first_arrival.setdefault(round_key, now)

    def sent(self, tester: int, round_key: RoundKey) -> peer_pb2.SignedMessage | None:
        with self._lock:
            return self._sent.get((tester, round_key))

    def from_target(self) -> dict[RoundKey, dict[int, bytes]]:
        """The target's serialized envelopes by round and receiving tester peer."""
        with self._lock:
            return {key: dict(by_tester) for key, by_tester in self._from_target.items()}

    def first_arrival(self) -> dict[RoundKey, float]:
        with self._lock:
            return dict(self._first_arrival)

    def sent_vectors(self) -> dict[tuple[int, RoundKey], bytes]:
        """Each tester peer's vector bytes by (tester, round), to compare with the reference."""
        with self._lock:
            envelopes = dict(self._sent)
        return {slot: peer_pb2.RoundMessage.FromString(env.body).vector for slot, env in envelopes.items()}


class AttributedRejections(RejectionLog):
    """A RejectionLog that also counts rejections by claimed sender (None: unattributable)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_sender: Counter[tuple[int | None, str]] = Counter()
        self._by_sender_lock = threading.Lock()

    def record(self, reason: int, sender: int | None = None, origin: str | None = None) -> None:
        super().record(reason, sender, origin)
        if reason != wire.ACCEPTED:
            with self._by_sender_lock:
                self._by_sender[(sender, wire.reason_name(reason))] += 1

    def charged_to(self, senders: set[int | None]) -> Counter[str]:
        with self._by_sender_lock:
            return Counter({reason: n for (sender, reason), n in self._by_sender.items() if sender in senders})


class TesterTransport(PeerTransport):
    """An honest peer's transport, plus the suite's interventions (`TesterPlan`) and records."""

    def __init__(self, run: RunFile, peer_id: int, signing_key: Ed25519PrivateKey, dim: int,
                 plan: TesterPlan) -> None:
        super().__init__(run, peer_id, signing_key, dim)
        self.plan = plan
        self.rejections = AttributedRejections()

    @property
    def finished(self) -> bool:  # what Status says: held back until the suite allows it
        return self.iterations_done and self.plan.may_finish.is_set()

    @finished.setter
    def finished(self, value: bool) -> None:
        self.iterations_done = value

    def receive(self, envelope: peer_pb2.SignedMessage | bytes, via: int | None = None) -> int:
        reason = super().receive(envelope, via)
        if reason == wire.ACCEPTED:
            self.plan.record_accepted(self.peer_id, envelope, self.clock())
        return reason

    def send(self, round_key: RoundKey, per_receiver: Mapping[int, np.ndarray | None], deadline: float) -> None:
        self.plan.hold(round_key)
        if self.plan.withholds(self.peer_id, round_key):
            per_receiver = {r: v for r, v in per_receiver.items() if r != self.plan.target}
        super().send(round_key, per_receiver, deadline)
        with self.own_lock:
            envelope = self.own.get(round_key)
        if envelope is not None:
            self.plan.record_sent(self.peer_id, round_key, envelope)

    def held(self, round_key: RoundKey, senders: set[int] | None = None) -> list[peer_pb2.SignedMessage]:
        if not self.plan.relays(round_key):
            return []  # withheld by Pull too, or the target would fetch what Deliver withheld
        return super().held(round_key, senders)


class TesterDaemon(PeerDaemon):
    """This project's honest daemon playing one roster member for the suite."""

    def __init__(self, run: RunFile, peer_id: int, signing_key: Ed25519PrivateKey, out_dir: Path,
                 plan: TesterPlan) -> None:
        super().__init__(run, peer_id, signing_key, out_dir)
        # PeerDaemon made a plain transport (not started: no socket yet); the tester's replaces it
        self.transport = TesterTransport(run, peer_id, signing_key, self.transport.dim, plan)


TESTER_LINGER = 120.0  # tester peers are stopped by the suite; this only bounds a forgotten one


def tester_run(run: RunFile) -> RunFile:
    """The run file as the tester peers use it: patient, so they always wait for the target.

    [network] is not part of the run id, so patient tester peers still speak the target's run:
    they never close a round without the target's message while it can still come, which keeps
    the reference comparison exact and makes a silent round cost the target, not them.
    """
    net = run.network
    patience = 2 * net.round_timeout + 10.0
    network = dataclasses.replace(net, round_timeout=patience, grace=patience, linger=TESTER_LINGER,
                                  startup_timeout=max(net.startup_timeout, patience))
    return dataclasses.replace(run, network=network)


class DaemonThreads:
    """Tester daemons' serve() in threads; what ended them, if anything did."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, daemon: PeerDaemon) -> None:
        def serve() -> None:
            try:
                daemon.serve()
            except BaseException as err:  # surfaced to the suite's thread by `raise_first_error`
                err.add_note("".join(traceback.format_exception(err)))
                self.errors.append(err)

        thread = threading.Thread(target=serve, name=f"tester-{daemon.peer_id}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def raise_first_error(self) -> None:
        if self.errors:
            raise self.errors[0]

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)


# --------------------------------------------------------------------------- the reference


class _ObservedMachine:
    """A state machine whose broadcasts are written down, and which may be left alone in one round."""

    def __init__(self, machine: PeerStateMachine, broadcasts: dict[tuple[int, RoundKey], bytes | None],
                 silent_round: RoundKey | None) -> None:
        self.machine = machine
        self.broadcasts = broadcasts
        self.silent_round = silent_round

    def iteration(self) -> PeerProgram:
        program = self.machine.iteration()
        try:
            out: Broadcast = next(program)
            while True:
                self.broadcasts[(self.machine.peer_id, out.round_key)] = (
                    None if out.vector is None else wire.encode_vector(out.vector))
                received: Received = yield out
                out = program.send({} if out.round_key == self.silent_round else received)
        except StopIteration as done:
            report: IterationReport = done.value
            return report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.machine, name)


class ReferenceRun(InProcessRun):
    """The conformance run in process: every roster member an honest machine, broadcasts recorded.

    InProcessRun runs only the honest ids and a coalition for the rest; here the run file's
    Byzantine ids are honest machines too (as the tester plays them), f stays the bound the
    aggregation and agreement rules assume, and the coalition is silent.  The target's machine
    gets nothing in `silent_round`, as over the wire.
    """

    def __init__(self, cfg: RunConfig, target: int, silent_round: RoundKey | None,
                 equivocation: tuple[int, int] | None = None) -> None:
        super().__init__(dataclasses.replace(cfg, attack=AttackConfig(name="silence")))  # the attack is not hashed
        machines = dict(self.peers)
        for k in self.cfg.byzantine_ids:
            machines[k] = PeerStateMachine(self.cfg, k, self.genesis_hash)
        if equivocation is not None:  # (tester peer, iteration) of the evidence probe's proof
            liar, proven_at = equivocation
            for k, machine in machines.items():
                if k != liar:
                    machine.exclude(liar, proven_at)
        self.honest_ids = tuple(sorted(machines))
        self.broadcasts: dict[tuple[int, RoundKey], bytes | None] = {}
        self.peers = {k: _ObservedMachine(m, self.broadcasts, silent_round if k == target else None)  # type: ignore[misc]
                      for k, m in machines.items()}

    def play(self) -> dict[tuple[int, RoundKey], bytes | None]:
        """Every iteration of the run; the vector bytes each peer broadcast, by (peer, round)."""
        try:
            for _ in range(self.schedule.iteration_count):
                self.step()
        finally:
            self.close()
        return self.broadcasts


# --------------------------------------------------------------------------- checks after the run


@dataclass(frozen=True)
class StatusSample:
    seconds: float  # since the suite started
    iteration: int
    finished: bool


def target_rounds(schedule: Schedule, target: int) -> list[RoundKey]:
    """Every round of the run in which the target sends, in order."""
    return [key for t in range(schedule.iteration_count) for key in schedule.rounds(t)
            if target in schedule.senders(key)]


def vector_of(envelope: bytes) -> bytes:
    return peer_pb2.RoundMessage.FromString(peer_pb2.SignedMessage.FromString(envelope).body).vector


def check_progress(samples: Sequence[StatusSample], expected: Sequence[RoundKey],
                   from_target: Mapping[RoundKey, Mapping[int, bytes]], total: int, note: str) -> Outcome:
    if not samples:
        return Outcome(FAIL, f"no signed Status was answered during the run{note}")
    iterations = [s.iteration for s in samples]
    finished = next((s for s in samples if s.finished), None)
    missing = [key for key in expected if key not in from_target]
    evidence = (f"Status.iteration {iterations[0]} -> {max(iterations)} of {total} over {len(samples)} reads; "
                + (f"finished after {finished.seconds:.1f} s" if finished else "never reported finished")
                + f"; messages for {len(expected) - len(missing)} of {len(expected)} rounds"
                + (f" (first missing {fmt(missing[0])})" if missing else "") + note)
    return judged(max(iterations) > iterations[0] and finished is not None and not missing, evidence)


def check_messages_valid(testers: Mapping[int, TesterDaemon], from_target: Mapping[RoundKey, Mapping[int, bytes]],
                         target: int) -> Outcome:
    """Rejections the tester peers charged to the target: by its id, relayed by it, or
    unattributable (garbage names no sender, and the tester peers send each other none)."""
    rejected: Counter[str] = Counter()
    relayed = 0
    for daemon in testers.values():
        transport: TesterTransport = daemon.transport  # type: ignore[assignment]
        rejected += transport.rejections.charged_to({target, None})
        relayed += transport.junk_by_source.get(target, 0)
    accepted = sum(len(by_tester) for by_tester in from_target.values())
    split = [key for key, by_tester in sorted(from_target.items()) if len(set(by_tester.values())) > 1]
    evidence = (f"{accepted} messages of peer {target} accepted by {len(testers)} tester peers, "
                f"{sum(rejected.values())} rejected" + (f" ({dict(rejected)})" if rejected else "")
                + (f", {relayed} rejected envelopes relayed by its Pull replies" if relayed else "")
                + (f"; different signed messages to different peers in {len(split)} rounds, first {fmt(split[0])}"
                   if split else "; the same signed bytes to every tester peer"))
    return judged(accepted > 0 and not rejected and not relayed and not split, evidence)


def _first_difference(got: bytes, want: bytes) -> str:
    a, b = np.frombuffer(got, "<f4"), np.frombuffer(want, "<f4")
    if a.size != b.size:
        return f"{a.size} values instead of {b.size}"
    delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return f"{int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))} of {a.size} values differ, max |diff| {np.nanmax(delta):.3g}"


def check_outputs(target: int, expected: Sequence[RoundKey], from_target: Mapping[RoundKey, Mapping[int, bytes]],
                  reference: Mapping[tuple[int, RoundKey], bytes | None],
                  tester_vectors: Mapping[tuple[int, RoundKey], bytes], hint: str) -> Outcome:
    """The target's vectors against its reference, round by round; a tester deviating first voids the comparison."""
    differing = [key for key in expected if key in from_target
                 and vector_of(next(iter(from_target[key].values()))) != reference.get((target, key))]
    missing = [key for key in expected if key not in from_target]
    if not differing and not missing:
        return Outcome(PASS, f"all {len(expected)} vectors the target signed are bit-identical to its own in the "
                             "in-process reference run")
    first = min(differing + missing)
    deviations = sorted((key, tester) for (tester, key), data in tester_vectors.items()
                        if reference.get((tester, key)) not in (None, data))
    if deviations and deviations[0][0] < first:
        key, tester = deviations[0]
        return Outcome(FAIL, f"inconclusive: tester peer {tester} deviated from the reference first, at {fmt(key)} "
                             f"(a message late on the tester's side?), before the target at {fmt(first)}{hint}")
    if first in missing:
        return Outcome(FAIL, f"no message from the target for {len(missing)} of {len(expected)} rounds, "
                             f"first {fmt(first)}")
    data = vector_of(next(iter(from_target[first].values())))
    return Outcome(FAIL, f"{len(differing)} of {len(expected)} vectors differ from the reference; first at "
                         f"{fmt(first)}: {_first_difference(data, reference.get((target, first)) or b'')}{hint}")


DEADLINE_MAX_ROUND_TIMEOUT = 5.0  # seconds the deadline row may add to a conformance run


def choose_silent_round(schedule: Schedule, target: int, round_timeout: float) -> tuple[RoundKey | None, str]:
    """The round the tester peers withhold from the target, or None and why not.

    An agreement round is preferred (fewer than q vectors has a defined outcome there: the own
    vector is kept) and it must be followed by another of the target's rounds in the same
    iteration, so the time to that next message is the deadline plus a little arithmetic,
    not a sampling step.  Never in iteration 0, whose first round has the startup deadline.
    """
    if round_timeout > DEADLINE_MAX_ROUND_TIMEOUT:
        return None, (f"round_timeout is {round_timeout:g} s; with network.round_timeout <= "
                      f"{DEADLINE_MAX_ROUND_TIMEOUT:g} in the run file the suite withholds one round to check it")
    candidates = []
    for t in range(1, schedule.iteration_count):
        keys = schedule.rounds(t)
        for key, following in itertools.pairwise(keys):
            if (target in schedule.senders(key) and schedule.senders(key) - {target}
                    and target in schedule.senders(following)):
                candidates.append(key)
    if not candidates:
        return None, ("no round after iteration 0 is followed by another of the target's rounds in "
                      "the same iteration (a longer run, or more agreement rounds, would have one)")
    return min(candidates, key=lambda k: (k.phase != Phase.AGREEMENT, k)), ""


def check_deadline(silent_round: RoundKey | None, why_not: str, first_arrival: Mapping[RoundKey, float],
                   round_timeout: float) -> Outcome:
    if silent_round is None:
        return Outcome(NOT_CHECKED, why_not)
    entered = first_arrival.get(silent_round)
    later = [key for key in first_arrival if key > silent_round]
    if entered is None or not later:
        return Outcome(FAIL, f"silent in {fmt(silent_round)}: the target's message for it or for a later round "
                             "never came")
    following = min(later)
    gap = first_arrival[following] - entered
    ceiling = round_timeout + max(1.0, 0.5 * round_timeout)
    evidence = (f"silent in {fmt(silent_round)}: the target's next message {fmt(following)} came {gap:.2f} s after "
                f"its message for it (round_timeout {round_timeout:g} s)")
    return judged(0.5 * round_timeout <= gap <= ceiling, evidence)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class ConformanceOptions:
    run_file: Path
    keys: Path  # <id>.key of every roster member but the target (and the target's, for --spawn's {key})
    target_id: int
    target: str | None = None  # HOST:PORT of the target (default with `spawn`: its roster address)
    spawn: str | None = None  # command that starts the target; placeholders in PLACEHOLDERS
    out: Path | None = None  # where tester peers and a spawned target write (default: a temporary directory)
    timeout: float = 600.0  # the whole run: after this the suite stops waiting for the target


RPC_TIMEOUT = 5.0
REACH_PATIENCE = 3.0  # a running target answers its health check within this, or it is unreachable
SPAWN_PATIENCE = 90.0  # a spawned target may take this long to start serving (imports, environments)
HOLD_PATIENCE = 60.0  # at most this long do tester peers hold their messages for the probes
STATUS_POLL = 0.1
END_PATIENCE = 5.0  # how long a spawned target may take to leave once the tester peers are finished
PLACEHOLDERS = ("run_file", "id", "key", "out", "address")


def load_tester_keys(run: RunFile, directory: Path, target: int) -> dict[int, Ed25519PrivateKey]:
    """The signing key of every roster member the tester plays, checked against the roster."""
    if not directory.is_dir():
        raise KeyFileError(f"key directory {directory} does not exist")
    keys = {}
    for entry in run.peers:
        if entry.id == target:
            continue
        path = directory / f"{entry.id}.key"
        key = load_private_key(path)
        if public_key_to_text(key.public_key()) != entry.public_key:
            raise KeyFileError(f"config error: {path} does not match peer {entry.id}'s public key in the roster")
        keys[entry.id] = key
    return keys


def spawn_arguments(template: str, values: Mapping[str, str]) -> list[str]:
    """`--spawn`'s command as arguments, placeholders filled in each (so paths may hold spaces)."""
    try:
        tokens = shlex.split(template)
    except ValueError as err:
        raise ConfigError(f"config error: --spawn: {err}") from None
    if not tokens:
        raise ConfigError("config error: --spawn needs a command")
    try:
        return [token.format_map(values) for token in tokens]
    except (KeyError, IndexError, ValueError) as err:
        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        raise ConfigError(f"config error: --spawn: bad placeholder {err} (known: {known})") from None


class SpawnedTarget:
    """The peer under test when the suite starts it (`--spawn`); stopped at the end."""

    def __init__(self, arguments: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            try:
                self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT)
            except OSError as err:
                raise ConfigError(f"config error: --spawn: cannot start {arguments[0]!r}: "
                                  f"{err.strerror or err}") from None

    def exit_status(self) -> int | None:
        return self.process.poll()

    def last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else "(empty)"

    def stop(self, patience: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(patience)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def withheld_at_gate(testers: Sequence[int], f: int) -> frozenset[int]:
    """The f + 1 tester peers (the highest ids) whose first-round message waits for the probes.

    The target then holds at most K - f - 1 < q vectors of that round and waits in it.  The
    rest, at least the reader, must be left to sign the probes; with too small a roster
    nothing is withheld (the target may then leave the round while it is probed).
    """
    count = f + 1
    return frozenset(testers[-count:]) if len(testers) > count else frozenset()


@contextmanager
def workspace(out: Path | None) -> Iterator[Path]:
    """Where the tester peers write: fresh, or they would resume from an earlier run's checkpoints."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="decbyzpg-conformance-") as tmp:
            yield Path(tmp)
        return
    if out.exists() and any(out.iterdir()):
        raise RunStateError(f"{out} is not empty: tester peers would resume from its checkpoints; "
                            "give a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    yield out


class ConformanceSession:
    """One conformance run: the target, the tester peers, and the outcomes so far."""

    def __init__(self, options: ConformanceOptions, run: RunFile, keys: Mapping[int, Ed25519PrivateKey],
                 workdir: Path) -> None:
        self.options = options
        self.run = run
        self.net = run.network
        self.target = options.target_id
        self.keys = dict(keys)
        self.reader = min(self.keys)  # the tester peer that signs the suite's reads and probes
        self.equivocator: int | None = None  # the reader, once the evidence probe has proved it one
        self.schedule = Schedule.of(run.config)
        self.workdir = workdir
        self.address = options.target or run.peer(self.target).address
        self.started = time.monotonic()
        self.silent_round, self.why_no_deadline = choose_silent_round(self.schedule, self.target,
                                                                      self.net.round_timeout)
        self.withheld = withheld_at_gate(sorted(self.keys), run.config.num_byzantine)
        self.plan = TesterPlan(self.target, self.withheld, self.silent_round, HOLD_PATIENCE)
        patient = tester_run(run)
        self.testers = {k: TesterDaemon(patient, k, key, workdir / f"tester-{k}", self.plan)
                        for k, key in self.keys.items()}
        self.dim = next(iter(self.testers.values())).transport.dim
        self.threads = DaemonThreads()
        self.spawned: SpawnedTarget | None = None
        self.client: TargetClient | None = None
        self.outcomes: dict[str, Outcome] = {}
        self.samples: list[StatusSample] = []
        self.first_iteration: int | None = None
        self.gate_seconds = 0.0
        self.run_note = ""

    # ------------------------------------------------------------------ reaching the target
    def connect(self) -> None:
        if self.options.spawn:
            values = {"run_file": str(Path(self.options.run_file).resolve()), "id": str(self.target),
                      "key": str((Path(self.options.keys) / f"{self.target}.key").resolve()),
                      "out": str(self.workdir / "target"), "address": self.address}
            self.spawned = SpawnedTarget(spawn_arguments(self.options.spawn, values), self.workdir / "target.log")
        tls = self.run.tls.load(self.reader) if self.run.tls is not None else None
        self.client = TargetClient(self.address, self.target, tls, max(RPC_TIMEOUT, self.net.push_timeout),
                                   self.net.max_message_bytes)
        self._await_target(SPAWN_PATIENCE if self.spawned else REACH_PATIENCE)

    def _await_target(self, patience: float) -> None:
        until = time.monotonic() + patience
        while True:
            health = self._client.health()
            if not unreachable(health):
                return
            if self.spawned is not None and self.spawned.exit_status() is not None:
                raise PeerUnreachableError(f"the spawned peer exited with status {self.spawned.exit_status()} "
                                           f"before serving; its log ends: {self.spawned.last_line()}")
            if time.monotonic() >= until:
                raise PeerUnreachableError(f"{self.address}: the peer under test does not answer "
                                           f"({health.removeprefix('RPC ')} after {patience:g} s)")
            time.sleep(0.2)

    @property
    def _client(self) -> TargetClient:
        assert self.client is not None, "connect() first"
        return self.client

    def _signed(self, request: Any, method: str) -> Any:
        return reads.authorize(request, method, self.run.run_id, self.reader, self.keys[self.reader])

    def _read(self, method: str, request: Any) -> Any:
        """A read signed as the reader: the reply, or the RpcFailure it ended with."""
        try:
            return self._client.call(method, self._signed(request, method))
        except RpcFailure as err:
            return err

    def _answer(self, method: str, request: Any) -> str:
        """'answered', or the gRPC status the call ended with (for reads that must be refused)."""
        try:
            self._client.call(method, request)
        except RpcFailure as err:
            return err.code
        return "answered"

    def _pull_request(self, senders: Sequence[int] = (), **fields: Any) -> peer_pb2.PullRequest:
        """A Pull for GATE_SLOT (`fields` replace the request's own)."""
        request: dict[str, Any] = {"run_id": self.run.run_id, "iteration": GATE_SLOT.iteration,
                                   "phase": int(GATE_SLOT.phase), "round": GATE_SLOT.round, "senders": list(senders)}
        request.update(fields)
        return peer_pb2.PullRequest(**request)

    # ------------------------------------------------------------------ before the run
    def check_before_run(self) -> None:
        health = self._client.health()
        self.outcomes["health"] = judged(health == "SERVING", f'Check("{SERVICE}") -> {health}')
        self.outcomes["status-signed"] = self._check_signed_status()
        self.outcomes["reads-unsigned-refused"] = self._check_unsigned_reads()
        self.outcomes["reads-forged-refused"] = self._check_forged_reads()

    def _check_signed_status(self) -> Outcome:
        reply = self._read("Status", peer_pb2.StatusRequest())
        if isinstance(reply, RpcFailure):
            return Outcome(FAIL, f"Status signed by roster member {self.reader} -> {reply}")
        self.first_iteration = int(reply.iteration)
        run_id = "this run's" if reply.run_id == self.run.run_id else f"NOT this run's ({reply.run_id.hex()[:16]})"
        return judged(reply.run_id == self.run.run_id and reply.peer_id == self.target,
                      f"signed by peer {self.reader}: {run_id} run id, peer id {reply.peer_id}, "
                      f"iteration {reply.iteration}")

    def _check_unsigned_reads(self) -> Outcome:
        status = self._answer("Status", peer_pb2.StatusRequest())
        pull = self._answer("Pull", self._pull_request())
        evidence = self._answer("Evidence", peer_pb2.EvidenceRequest())
        open_status = self.net.open_status
        expected_status = "answered" if open_status else "UNAUTHENTICATED"
        return judged(status == expected_status and pull == evidence == "UNAUTHENTICATED",
                      f"unsigned Status -> {status}{' (network.open_status)' if open_status else ''}; "
                      f"Pull -> {pull}; Evidence -> {evidence}")

    def _check_forged_reads(self) -> Outcome:
        run_id, reader, key = self.run.run_id, self.reader, self.keys[self.reader]
        outsider = max(p.id for p in self.run.peers) + 1
        too_old = self.net.read_max_skew + 3600
        status_auth = reads.authorize(peer_pb2.StatusRequest(), "Status", run_id, reader, key).auth
        widened = reads.authorize(self._pull_request([reader]), "Pull", run_id, reader, key)
        del widened.senders[:]
        cases = [
            (f"reader {outsider}, not in the roster", "Pull",
             reads.authorize(self._pull_request(), "Pull", run_id, outsider, key)),
            (f"issued {too_old:g} s ago", "Pull",
             reads.authorize(self._pull_request(), "Pull", run_id, reader, key, reads.unix_ms() - int(too_old * 1000))),
            ("signed by a key outside the roster", "Pull",
             reads.authorize(self._pull_request(), "Pull", run_id, reader, Ed25519PrivateKey.generate())),
            ("a Status authorization on Evidence", "Evidence", peer_pb2.EvidenceRequest(auth=status_auth)),
            ("a Pull for one sender widened to all", "Pull", widened),
        ]
        answers = [(label, self._answer(method, request)) for label, method, request in cases]
        return judged(all(answer == "UNAUTHENTICATED" for _, answer in answers),
                      "; ".join(f"{label} -> {answer}" for label, answer in answers))

    # ------------------------------------------------------------------ during the run
    def run_with_testers(self) -> None:
        for daemon in self.testers.values():
            self.threads.start(daemon)
        try:
            self.probe_at_gate()
        finally:
            self.plan.probed.set()
        self.watch()
        self.let_target_go()

    def _await_gate_messages(self) -> dict[int, peer_pb2.SignedMessage] | None:
        """Every tester peer's signed message for GATE_SLOT, once all have sent theirs."""
        until = time.monotonic() + min(SPAWN_PATIENCE, self.options.timeout)
        while time.monotonic() < until:
            self.threads.raise_first_error()
            sent = {k: self.plan.sent(k, GATE_SLOT) for k in self.testers}
            if all(sent.values()):
                return {k: envelope for k, envelope in sent.items() if envelope is not None}
            time.sleep(0.01)
        return None

    def _probe(self, cases: Sequence[tuple[str, bytes]], expected: str, prefix: str = "") -> Outcome:
        """Push each case, expect `expected` for all, and the target still SERVING after."""
        replies = [(label, self._client.push(raw)) for label, raw in cases]
        health = self._client.health()
        return judged(all(reply == expected for _, reply in replies) and health == "SERVING",
                      prefix + "; ".join(f"{label} -> {reply}{_past_validation(reply, expected)}"
                                         for label, reply in replies) + f"; {health} after")

    def probe_at_gate(self) -> None:
        """Every probe that names a round, at GATE_SLOT, while the target waits in it."""
        genuine = self._await_gate_messages()
        if genuine is None:
            for row in ("reject-duplicate", "reject-equivocation", "evidence", "report", "pull", "flood",
                        *(reject_row(reason) for reason in REJECT_PROBES)):
                self.outcomes[row] = Outcome(FAIL, "the tester peers never sent their first round; nothing was probed")
            return
        started = time.monotonic()
        delivered = {k: envelope for k, envelope in genuine.items() if k not in self.withheld}
        first = {k: self._client.push(envelope.SerializeToString()) for k, envelope in delivered.items()}
        refused = {k: reply for k, reply in first.items() if reply not in ("ACCEPTED", "DUPLICATE")}
        refusal = "; ".join(f"peer {k}'s genuine message -> {reply}" for k, reply in refused.items())
        mine = genuine[self.reader]
        self.outcomes["reject-duplicate"] = self._probe(
            [(f"peer {self.reader}'s genuine {fmt(GATE_SLOT)} message again", mine.SerializeToString())], "DUPLICATE",
            prefix=f"pushed once -> {first[self.reader]}; ")
        if self.reader in refused:  # the target does not hold it: a conflicting one would be first, not second
            self.outcomes["reject-equivocation"] = self.outcomes["evidence"] = self.outcomes["report"] = Outcome(
                FAIL, refusal)
        else:
            conflicting = self._conflicting(mine)
            self.outcomes["reject-equivocation"] = self._probe(
                [(f"a second, different message of peer {self.reader} for {fmt(GATE_SLOT)}",
                  conflicting.SerializeToString())], "EQUIVOCATION")
            self.outcomes["evidence"] = self._check_evidence(mine, conflicting)
            self.outcomes["report"] = self._check_report(mine, conflicting)
            # The probe proved this tester peer an equivocator: the target must leave it out from
            # GATE_SLOT.iteration + EXCLUSION_LAG on, and so do the other tester peers (told here,
            # not by the target, so that the reference does not depend on what the target forwards).
            self.equivocator = self.reader
            proof = peer_pb2.Equivocation(first=mine, second=conflicting)
            for k, daemon in self.testers.items():
                if k != self.reader and daemon.transport.report(proof) is not None:
                    raise AssertionError("the suite's own equivocation proof does not check out")
        signers = {k: self.keys[k] for k in delivered if k not in refused}
        kit = ProbeKit(self.run, self.schedule, self.dim, self.target, signers, GATE_SLOT)
        for reason, build in REJECT_PROBES.items():
            self.outcomes[reject_row(reason)] = self._probe(build(kit), reason) if signers else Outcome(FAIL, refusal)
        self.outcomes["pull"] = self._check_pull(delivered, refused, refusal)
        self.outcomes["flood"] = self._check_flood(kit)
        late = {k: self._client.push(genuine[k].SerializeToString()) for k in sorted(self.withheld)}
        if any(reply != "ACCEPTED" for reply in late.values()):
            self.run_note += "; after the probes, " + ", ".join(f"peer {k}'s first-round message -> {reply}"
                                                                 for k, reply in late.items())
        self.gate_seconds = time.monotonic() - started

    def _check_flood(self, kit: "ProbeKit") -> Outcome:
        """A bounded flood of junk on one stream: every envelope read, none accepted, the target still serving."""
        rng = np.random.default_rng(0)
        junk = [rng.bytes(int(rng.integers(0, 64))) for _ in range(FLOOD_ENVELOPES // 2)]
        kinds = [raw for build in (_unknown_sender, _bad_signature) for _, raw in build(kit)] or [b"\x00"]
        junk += [kinds[i % len(kinds)] for i in range(FLOOD_ENVELOPES - len(junk))]
        started = time.monotonic()
        try:
            received, accepted = self._client.deliver(junk)
        except RpcFailure as err:
            return Outcome(FAIL, f"Deliver of {len(junk)} junk envelopes -> {err}")
        seconds = time.monotonic() - started
        health = self._client.health()
        status = self._read("Status", peer_pb2.StatusRequest())
        answered = "answered" if not isinstance(status, RpcFailure) else str(status)
        return judged(received == len(junk) and accepted == 0 and health == "SERVING" and answered == "answered",
                      f"{len(junk)} junk envelopes on one Deliver stream in {seconds:.2f} s: {received} read, "
                      f"{accepted} accepted; Health {health}; signed Status {answered}")

    def _conflicting(self, envelope: peer_pb2.SignedMessage) -> peer_pb2.SignedMessage:
        body = peer_pb2.RoundMessage.FromString(envelope.body)
        vector = wire.decode_vector(body.vector, body.length) + np.float32(1.0)
        return wire.sign_message(self.keys[self.reader], self.run.run_id, GATE_SLOT, self.reader, vector)

    def _check_evidence(self, genuine: peer_pb2.SignedMessage, conflicting: peer_pb2.SignedMessage) -> Outcome:
        reply = self._read("Evidence", peer_pb2.EvidenceRequest())
        if isinstance(reply, RpcFailure):
            return Outcome(FAIL, f"signed Evidence -> {reply}")
        pair = {(genuine.body, genuine.signature), (conflicting.body, conflicting.signature)}
        found = [proof for proof in reply.equivocations
                 if {(proof.first.body, proof.first.signature), (proof.second.body, proof.second.signature)} == pair
                 and proof.first.sender == proof.second.sender == self.reader]
        if not found:
            return Outcome(FAIL, f"signed Evidence returned {len(reply.equivocations)} proofs, none of them peer "
                                 f"{self.reader}'s two messages for {fmt(GATE_SLOT)}")
        order = "the genuine one first" if found[0].first.body == genuine.body else "the conflicting one first"
        return Outcome(PASS, f"signed Evidence returned peer {self.reader}'s two messages for {fmt(GATE_SLOT)}, "
                             f"{order} (proofs held: {len(reply.equivocations)})")

    def _check_report(self, genuine: peer_pb2.SignedMessage, conflicting: peer_pb2.SignedMessage) -> Outcome:
        """Report: the probe's own pair is a proof; three forgeries of it are not."""
        other = self.keys[next((k for k in sorted(self.keys) if k != self.reader), self.reader)]
        forged_signature = peer_pb2.SignedMessage(sender=self.reader, body=conflicting.body,
                                                  signature=crypto.sign(other, wire.DOMAIN, conflicting.body))
        next_round = RoundKey(GATE_SLOT.iteration + 1, GATE_SLOT.phase, GATE_SLOT.round)
        vector = wire.decode_vector(peer_pb2.RoundMessage.FromString(conflicting.body).vector, self.dim)
        elsewhere = wire.sign_message(self.keys[self.reader], self.run.run_id, next_round, self.reader, vector)
        cases = [("the probe's pair", genuine, conflicting, True),
                 ("a signature by another key", genuine, forged_signature, False),
                 (f"the second message for {fmt(next_round)}", genuine, elsewhere, False),
                 ("the same message twice", genuine, genuine, False)]
        verdicts, ok = [], True
        for label, first, second, valid in cases:
            reply = self._client.call("Report", peer_pb2.Equivocation(first=first, second=second))
            if isinstance(reply, RpcFailure):
                verdicts.append(f"{label} -> {reply}")
                ok = False
                continue
            ok &= reply.accepted == valid and (valid or bool(reply.reason))
            verdicts.append(f"{label} -> {'accepted' if reply.accepted else 'refused: ' + reply.reason}")
        health = self._client.health()
        return judged(ok and health == "SERVING", "; ".join(verdicts) + f"; {health} after")

    def _check_pull(self, genuine: Mapping[int, peer_pb2.SignedMessage], refused: Mapping[int, str],
                    refusal: str) -> Outcome:
        reply = self._read("Pull", self._pull_request())
        if isinstance(reply, RpcFailure):
            return Outcome(FAIL, f"signed Pull for {fmt(GATE_SLOT)} -> {reply}")
        problems = self._pull_problems(reply.messages, genuine, refused)
        if self.target not in {m.sender for m in reply.messages}:
            problems.append("its own message is missing")
        chosen = next((k for k in sorted(genuine) if k != self.reader), self.reader)
        narrowed = self._read("Pull", self._pull_request([chosen]))
        if isinstance(narrowed, RpcFailure):
            problems.append(f"Pull with senders=[{chosen}] -> {narrowed}")
        elif sorted(m.sender for m in narrowed.messages) != [chosen]:
            problems.append(f"Pull with senders=[{chosen}] returned senders {sorted(m.sender for m in narrowed.messages)}")
        for label, request in (("another run's id", self._pull_request(run_id=bytes(32))),
                               ("an unknown phase", self._pull_request(phase=7))):
            answer = self._read("Pull", request)
            if isinstance(answer, RpcFailure) or answer.messages:
                problems.append(f"Pull for {label} -> {answer if isinstance(answer, RpcFailure) else len(answer.messages)}"
                                " (expected an empty reply)")
        if refusal:
            problems.append(refusal)
        senders = sorted(m.sender for m in reply.messages)
        evidence = (f"Pull {fmt(GATE_SLOT)} (finished by the tester peers, the target waiting in it) returned "
                    f"{len(senders)} envelopes from senders {senders}")
        if problems:
            return Outcome(FAIL, evidence + "; " + "; ".join(problems))
        return Outcome(PASS, evidence + f", each valid and as signed, its own included; senders=[{chosen}] returned "
                                        "only that sender's; another run's id and an unknown phase returned nothing")

    def _pull_problems(self, messages: Sequence[peer_pb2.SignedMessage], genuine: Mapping[int, peer_pb2.SignedMessage],
                       refused: Mapping[int, str]) -> list[str]:
        # self_id -1: no roster member is "self" to this check, the reply may hold anyone's message
        validator = wire.Validator(self.run.run_id, self.run.public_keys(), -1, self.dim, self.schedule.shape(),
                                   max_message_bytes=self.net.max_message_bytes, window_ahead=self.net.window_ahead,
                                   keep_behind=self.net.retain_iterations)
        counts = Counter(m.sender for m in messages)
        problems = [f"{n} envelopes from sender {sender}" for sender, n in sorted(counts.items()) if n > 1]
        for message in messages:
            verdict = validator.check(message, GATE_SLOT.iteration)
            if not verdict.accepted:
                problems.append(f"sender {message.sender}'s envelope is {verdict.reason_name}")
            elif verdict.round_key != GATE_SLOT:
                problems.append(f"sender {message.sender}'s envelope is for {fmt(verdict.round_key)}")
        held = {m.sender: m for m in messages}
        for k, envelope in sorted(genuine.items()):
            if k in refused:
                continue
            if k not in held:
                problems.append(f"peer {k}'s message (accepted by the target) is missing")
            elif (held[k].body, held[k].signature) != (envelope.body, envelope.signature):
                problems.append(f"peer {k}'s message came back altered")
        return problems

    def watch(self) -> None:
        """Read the target's Status until it and the tester peers are done, or the suite gives up;
        probe STALE as soon as iteration 0 has left the target's window."""
        give_up = self.started + self.options.timeout
        silence = max(30.0, 2 * self.net.round_timeout)  # no Status answered this long: the target is gone
        last_answer = time.monotonic()
        testers_done_at: float | None = None
        while True:
            self.threads.raise_first_error()
            sample = self._sample_status()
            now = time.monotonic()
            if sample is not None:
                last_answer = now
                self._probe_stale_once(sample.iteration)
                if sample.finished and self._testers_done():
                    return
            if self._testers_done():
                testers_done_at = testers_done_at or now
            if testers_done_at is not None and now - testers_done_at > silence:
                self.run_note = "; the tester peers finished, the target never reported finished"
                return
            if now - last_answer > silence:
                self.run_note = f"; the target stopped answering Status for {silence:g} s"
                return
            if now > give_up:
                self.run_note = f"; the suite gave up after --timeout {self.options.timeout:g} s"
                return
            if self.spawned is not None and self.spawned.exit_status() is not None:
                self.run_note = (f"; the spawned peer exited with status {self.spawned.exit_status()} "
                                 f"(its log ends: {self.spawned.last_line()})")
                return
            time.sleep(STATUS_POLL)

    def _sample_status(self) -> StatusSample | None:
        reply = self._read("Status", peer_pb2.StatusRequest())
        if isinstance(reply, RpcFailure):
            return None
        sample = StatusSample(time.monotonic() - self.started, int(reply.iteration), bool(reply.finished))
        self.samples.append(sample)
        return sample

    def _testers_done(self) -> bool:
        return all(daemon.transport.iterations_done for daemon in self.testers.values())  # type: ignore[attr-defined]

    def _probe_stale_once(self, iteration: int) -> None:
        row = reject_row("STALE")
        if row in self.outcomes or iteration <= self.net.retain_iterations:
            return
        kit = ProbeKit(self.run, self.schedule, self.dim, self.target, self.keys, GATE_SLOT)
        self.outcomes[row] = self._probe(
            [(f"iteration 0 while the target is at {iteration} (retain_iterations {self.net.retain_iterations})",
              kit.signed(kit.body()))], "STALE")

    def let_target_go(self) -> None:
        """Let the tester peers report finished: the target lingers until they do, then leaves."""
        self.plan.may_finish.set()
        patience = END_PATIENCE if self.spawned is not None else 1.5  # its linger polls every second
        until = time.monotonic() + patience
        while time.monotonic() < until:
            if self.spawned is not None and self.spawned.exit_status() is not None:
                return
            if self.spawned is None and unreachable(self._client.health()):
                return
            time.sleep(0.2)

    def close(self) -> None:
        """Stop everything the suite started: tester peers, a spawned target, the channel."""
        self.plan.probed.set()
        self.plan.may_finish.set()
        for daemon in self.testers.values():
            daemon.request_stop()
        self.threads.join(15.0)
        started = {thread.name for thread in self.threads.threads}
        for k, daemon in self.testers.items():
            if f"tester-{k}" not in started:
                daemon.machine.sampler.close()  # serve() closes it; a daemon never served must be closed here
        if self.spawned is not None:
            self.spawned.stop()
        if self.client is not None:
            self.client.close()

    # ------------------------------------------------------------------ after the run
    def check_after_run(self) -> None:
        if reject_row("STALE") not in self.outcomes:
            reached = max((s.iteration for s in self.samples), default=0)
            self.outcomes[reject_row("STALE")] = Outcome(
                NOT_APPLICABLE, f"iteration 0 never left the target's window: retain_iterations is "
                                f"{self.net.retain_iterations} and the target reached iteration {reached} of "
                                f"{self.schedule.iteration_count}")
        expected = target_rounds(self.schedule, self.target)
        from_target = self.plan.from_target()
        note = self.run_note
        if self.first_iteration:
            note += f"; the target was already at iteration {self.first_iteration} when the suite began"
        self.outcomes["progress"] = check_progress(self.samples, expected, from_target,
                                                   self.schedule.iteration_count, note)
        self.outcomes["messages-valid"] = check_messages_valid(self.testers, from_target, self.target)
        reference = ReferenceRun(self.run.config, self.target, self.silent_round,
                                 None if self.equivocator is None else (self.equivocator, GATE_SLOT.iteration)).play()
        self.outcomes["outputs-match"] = check_outputs(self.target, expected, from_target, reference,
                                                       self.plan.sent_vectors(), self._mismatch_hint())
        self.outcomes["deadline"] = check_deadline(self.silent_round, self.why_no_deadline, self.plan.first_arrival(),
                                                   self.net.round_timeout)

    def _mismatch_hint(self) -> str:
        hints = []
        if self.net.grace < 1.0:
            hints.append(f"network.grace is {self.net.grace:g} s: a round closed on K - f messages before the last "
                         "one came computes something else; give the conformance run file a patient grace")
        if self.gate_seconds > 0.5 * self.net.round_timeout:
            hints.append(f"the probes took {self.gate_seconds:.1f} s of the target's {self.net.round_timeout:g} s "
                         "round_timeout")
        return f" ({'; '.join(hints)})" if hints else ""

    def report(self) -> Report:
        rows = tuple((req, self.outcomes.get(req.id, Outcome(NOT_CHECKED, "this suite has no probe for it")))
                     for req in REQUIREMENTS)
        return Report(self.address, self.target, time.monotonic() - self.started, rows)


def run_conformance(options: ConformanceOptions) -> Report:
    """Check the peer under test (running at options.target, or started with options.spawn)."""
    if not options.target and not options.spawn:
        raise ConfigError("config error: give --target HOST:PORT (a running peer) or --spawn COMMAND (the suite "
                          "starts it)")
    if options.timeout <= 0:
        raise ConfigError(f"config error: --timeout must be > 0 (got {options.timeout:g})")
    run = load_run_file(options.run_file)
    ids = [p.id for p in run.peers]
    if options.target_id not in ids:
        raise ConfigError(f"config error: --target-id {options.target_id} is not in the roster (ids {ids[0]}.."
                          f"{ids[-1]})")
    if len(ids) < 2:
        raise ConfigError("config error: conformance needs a roster of at least 2 peers (the tester plays the others)")
    keys = load_tester_keys(run, Path(options.keys), options.target_id)
    with workspace(None if options.out is None else Path(options.out)) as workdir:
        session = ConformanceSession(options, run, keys, workdir)
        try:
            session.connect()
            session.check_before_run()
            session.run_with_testers()
        finally:
            session.close()
        session.check_after_run()
        return session.report()
