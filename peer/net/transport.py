"""The gRPC implementation of the exchange: signed pushes, pulls, round deadlines.

Every peer runs a `Peer` gRPC server and holds a client channel to every other peer.
Broadcasting a vector signs it once and hands the same bytes to one delivery worker per
destination, which retries until the round's deadline; a receiver validates every message
(`peer.net.wire.Validator`) before it touches state and stores the first valid one per
(sender, round) (`peer.net.store.RoundStore`).  A peer missing messages pulls them, so a late
or restarted peer catches up and lost pushes are repaired.

A round ends when all K vectors are in, at its deadline, or a short grace period after
K - f are in: up to f silent peers cost at most the grace period per round.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import grpc
import numpy as np
from decbyzpg.v1 import peer_pb2, peer_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from peer.engine.schedule import Phase, RoundKey, Schedule
from peer.net import wire
from peer.net.rejections import RejectionLog
from peer.net.runfile import RunFile
from peer.net.store import RoundStore

log = logging.getLogger("decbyzpg.transport")


RETRY_LATER = {peer_pb2.REJECT_REASON_TOO_FAR_AHEAD}


# Links fail silently (a cut cable drops packets without a reset), and after an outage TCP's
# retransmission backoff and gRPC's reconnect backoff (up to 120 s by default) would keep a
# healed link idle for tens of seconds.  Clients ping every 5 s and give a connection up after
# 2 s without an answer, then reconnect within 2 s; servers accept those pings.
CLIENT_LINK_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000), ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
SERVER_LINK_OPTIONS = [
    ("grpc.keepalive_time_ms", 10000), ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_recv_ping_interval_without_data_ms", 4000),
    ("grpc.http2.max_ping_strikes", 0),
]


class Interrupted(Exception):
    """Raised out of a round when the peer was asked to stop (SIGTERM, SIGINT) while waiting in it."""


@dataclass
class RoundStats:
    """Per-round timings, summed into the per-iteration metrics."""

    round_key: RoundKey
    seconds: float
    received: int
    timed_out: bool


@dataclass
class _Outgoing:
    envelope: peer_pb2.SignedMessage
    deadline: float
    not_before: float = 0.0  # injected link delay (network.inject_delay, tests only)


class _DeliveryWorker(threading.Thread):
    """Delivers envelopes to one destination in order, retrying until each one's deadline."""

    def __init__(self, name: str, stub: peer_pb2_grpc.PeerStub, transport: "PeerTransport") -> None:
        super().__init__(name=name, daemon=True)
        self.stub = stub
        self.transport = transport
        self.queue: "queue.Queue[_Outgoing | None]" = queue.Queue()

    def run(self) -> None:
        net = self.transport.run.network
        while True:
            item = self.queue.get()
            if item is None:
                return
            hold = item.not_before - time.monotonic()
            if hold > 0 and self.transport.stopping.wait(hold):
                return
            while not self.transport.stopping.is_set() and time.monotonic() < item.deadline:
                try:
                    reply = self.stub.Push(item.envelope, timeout=net.push_timeout)
                    if reply.reason not in RETRY_LATER:
                        break
                except grpc.RpcError:
                    pass
                # Retry only the newest message: with newer ones queued behind a failing one,
                # move on (the destination pulls what it missed), so a dead peer's queue stays
                # bounded instead of holding every round until its deadline.
                if not self.queue.empty():
                    break
                if self.transport.stopping.wait(net.retry_interval):
                    return


class _Servicer(peer_pb2_grpc.PeerServicer):
    def __init__(self, transport: "PeerTransport") -> None:
        self.t = transport

    def Push(self, request: bytes, context: grpc.ServicerContext) -> peer_pb2.PushReply:
        # Raw bytes: the validator sizes and parses them itself, so garbage gets a reason code.
        return peer_pb2.PushReply(reason=self.t.receive(request))

    def handler(self) -> grpc.GenericRpcHandler:
        """The Peer service, with Push taking undecoded bytes (see Push)."""
        def unary(fn, request_type):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.FromString if request_type else None,
                response_serializer=lambda reply: reply.SerializeToString())

        return grpc.method_handlers_generic_handler("decbyzpg.v1.Peer", {
            "Push": unary(self.Push, None),
            "Pull": unary(self.Pull, peer_pb2.PullRequest),
            "Evidence": unary(self.Evidence, peer_pb2.EvidenceRequest),
            "Status": unary(self.Status, peer_pb2.StatusRequest),
        })

    def Pull(self, request: peer_pb2.PullRequest, context: grpc.ServicerContext) -> peer_pb2.PullReply:
        if request.run_id != self.t.run_id:
            return peer_pb2.PullReply()
        try:
            round_key = RoundKey(int(request.iteration), Phase(int(request.phase)), int(request.round))
        except ValueError:
            return peer_pb2.PullReply()
        return peer_pb2.PullReply(messages=self.t.held(round_key))

    def Evidence(self, request: peer_pb2.EvidenceRequest, context: grpc.ServicerContext) -> peer_pb2.EvidenceReply:
        return peer_pb2.EvidenceReply(equivocations=self.t.store.evidence())

    def Status(self, request: peer_pb2.StatusRequest, context: grpc.ServicerContext) -> peer_pb2.StatusReply:
        return peer_pb2.StatusReply(run_id=self.t.run_id, peer_id=self.t.peer_id, iteration=self.t.iteration,
                                    finished=self.t.finished, rejected=self.t.rejections.counts(),
                                    accepted=self.t.accepted)


class PeerTransport:
    """One peer's network endpoint: server, clients, validation, storage, round collection."""

    def __init__(self, run: RunFile, peer_id: int, signing_key, dim: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run = run
        self.peer_id = peer_id
        self.signing_key = signing_key
        self.run_id = run.run_id
        self.dim = dim
        self.clock = clock
        self.others = [p.id for p in run.peers if p.id != peer_id]
        cfg = run.config
        self.schedule = Schedule.of(cfg)
        net = run.network
        self.validator = wire.Validator(run.run_id, run.public_keys(), peer_id, dim, self.schedule.shape(),
                                        max_message_bytes=net.max_message_bytes,
                                        window_ahead=net.window_ahead, keep_behind=net.retain_iterations)
        self.store = RoundStore()
        self.rejections = RejectionLog()
        self.own: dict[RoundKey, peer_pb2.SignedMessage] = {}
        self.own_lock = threading.Lock()
        self.iteration = 0
        self.finished = False
        self.accepted = 0
        self.crypto_seconds = 0.0
        self._crypto_lock = threading.Lock()
        self.stopping = threading.Event()
        self.interrupted = threading.Event()
        self._delay_rng = random.Random(peer_id)
        self.junk_by_source: Counter[int] = Counter()  # rejected envelopes each peer relayed to us by Pull
        self._pull_strikes: Counter[int] = Counter()
        self._pull_backoff_until: dict[int, float] = {}  # set by a signal handler: leave the current round now
        self.first_round = True
        self._seen_finished: set[int] = set()
        self._server: grpc.Server | None = None
        self._channels: dict[int, grpc.Channel] = {}
        self._stubs: dict[int, peer_pb2_grpc.PeerStub] = {}
        self._workers: dict[int, _DeliveryWorker] = {}
        self._pull_pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pull")
        self.health = health.HealthServicer()

    # ------------------------------------------------------------------ lifecycle
    def start(self, bind: str | None = None) -> int:
        """Start serving (on the roster address's port unless `bind` says otherwise)."""
        limit = 4 * self.run.network.max_message_bytes  # above it gRPC itself refuses
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                   *SERVER_LINK_OPTIONS]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max(8, 2 * len(self.run.peers))),
                                   options=options)
        self._server.add_generic_rpc_handlers((_Servicer(self).handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = bind or "[::]:" + self.run.peer(self.peer_id).address.rsplit(":", 1)[1]
        port = self._server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        self._server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set("decbyzpg.v1.Peer", health_pb2.HealthCheckResponse.SERVING)
        # A Pull reply may carry one message per roster entry.
        # A Pull reply may carry one honest-sized message per roster member, and no more.
        client_limit = len(self.run.peers) * (wire.max_envelope_bytes(self.dim) + 16) + 1024
        client_options = [("grpc.max_receive_message_length", client_limit), ("grpc.max_send_message_length", limit),
                          *CLIENT_LINK_OPTIONS]
        for other in self.others:
            channel = grpc.insecure_channel(self.run.peer(other).address, options=client_options)
            self._channels[other] = channel
            self._stubs[other] = peer_pb2_grpc.PeerStub(channel)
            worker = _DeliveryWorker(f"push-{other}", self._stubs[other], self)
            worker.start()
            self._workers[other] = worker
        return port

    def stop(self, grace: float = 1.0) -> None:
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        for worker in self._workers.values():
            worker.queue.put(None)
        self._pull_pool.shutdown(wait=False, cancel_futures=True)
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
        for channel in self._channels.values():
            channel.close()

    def linger(self, seconds: float, stop: threading.Event) -> None:
        """After the last iteration, keep serving Pulls until every other peer reports it
        has finished, at most `seconds`: a peer that is down may be restarting and will
        need this peer's messages to catch up."""
        end = self.clock() + seconds
        while self.clock() < end and not stop.is_set():
            if all(other in self._seen_finished or self._done(other) for other in self.others):
                stop.wait(min(2.0, max(0.0, end - self.clock())))  # let the others see us finished
                return
            stop.wait(min(1.0, max(0.0, end - self.clock())))

    def _done(self, other: int) -> bool:
        try:
            if self._stubs[other].Status(peer_pb2.StatusRequest(), timeout=1.0).finished:
                self._seen_finished.add(other)  # once finished, it may exit: that is fine
                return True
            return False
        except grpc.RpcError:
            return False  # down, perhaps restarting: keep serving until `seconds` pass

    def set_iteration(self, t: int) -> None:
        """Advance the receive window and forget what no peer can still need."""
        self.iteration = t
        horizon = t - self.run.network.retain_iterations
        if horizon > 0:
            self.store.prune(horizon)
            with self.own_lock:
                for round_key in [k for k in self.own if k.iteration < horizon]:
                    del self.own[round_key]

    # ------------------------------------------------------------------ receiving
    def receive(self, envelope: peer_pb2.SignedMessage | bytes, via: int | None = None) -> int:
        """Validate and store one envelope; `via` is the peer that relayed it (a Pull reply), if any."""
        started = time.perf_counter()
        verdict = self.validator.check(envelope, self.iteration)
        with self._crypto_lock:
            self.crypto_seconds += time.perf_counter() - started
        reason = verdict.reason
        if verdict.accepted:
            reason = self.store.add(verdict)
        if reason == wire.ACCEPTED:
            self.accepted += 1
        elif reason != peer_pb2.REJECT_REASON_DUPLICATE:
            self.rejections.record(reason, sender=verdict.sender, origin=None if via is None else f"pull from peer {via}")
            if via is not None:
                with self._crypto_lock:
                    self.junk_by_source[via] += 1
        return reason

    def held(self, round_key: RoundKey) -> list[peer_pb2.SignedMessage]:
        """Everything this peer holds for a round, its own message included (for Pull)."""
        messages = list(self.store.envelopes(round_key))
        with self.own_lock:
            if round_key in self.own:
                messages.append(self.own[round_key])
        return messages

    # ------------------------------------------------------------------ sending
    def sign(self, round_key: RoundKey, vector: np.ndarray) -> peer_pb2.SignedMessage:
        started = time.perf_counter()
        envelope = wire.sign_message(self.signing_key, self.run_id, round_key, self.peer_id, vector)
        with self._crypto_lock:
            self.crypto_seconds += time.perf_counter() - started
        return envelope

    def deadline(self) -> float:
        net = self.run.network
        return self.clock() + (net.startup_timeout if self.first_round else net.round_timeout)

    def send(self, round_key: RoundKey, per_receiver: Mapping[int, np.ndarray | None], deadline: float) -> None:
        """Sign and queue one vector per receiver (a broadcast passes the same vector to all)."""
        signed: dict[int, peer_pb2.SignedMessage] = {}
        for receiver, vector in per_receiver.items():
            if vector is None or receiver == self.peer_id or receiver not in self._workers:
                continue
            ident = id(vector)
            envelope = signed.get(ident) or self.sign(round_key, vector)
            signed[ident] = envelope
            self._workers[receiver].queue.put(_Outgoing(envelope, deadline, time.monotonic() + self._link_delay()))
        if len(signed) == 1:
            with self.own_lock:
                self.own[round_key] = next(iter(signed.values()))

    def broadcast(self, round_key: RoundKey, vector: np.ndarray, deadline: float) -> None:
        self.send(round_key, {other: vector for other in self.others}, deadline)

    # ------------------------------------------------------------------ collecting
    def _link_delay(self) -> float:
        """Injected one-way delay for one message (0 unless the run file asks for it)."""
        net = self.run.network
        return net.inject_delay + (self._delay_rng.uniform(0.0, net.inject_jitter) if net.inject_jitter else 0.0)

    def _pull(self, source: int, round_key: RoundKey) -> None:
        delay = self._link_delay()
        if delay and self.stopping.wait(delay):
            return
        request = peer_pb2.PullRequest(run_id=self.run_id, iteration=round_key.iteration, phase=int(round_key.phase),
                                       round=round_key.round)
        try:
            reply = self._stubs[source].Pull(request, timeout=self.run.network.push_timeout)
        except grpc.RpcError:
            return
        self.accept_pulled(source, round_key, reply.messages)

    def pull_paused(self, source: int, now: float | None = None) -> bool:
        """Whether `source` is skipped for pulls because it recently relayed junk."""
        return self._pull_backoff_until.get(source, 0.0) > (self.clock() if now is None else now)

    def accept_pulled(self, source: int, round_key: RoundKey, envelopes: Sequence[peer_pb2.SignedMessage]) -> int:
        """Verify what a Pull from `source` returned, at a bounded cost; returns how many were verified.

        An honest reply holds at most one envelope per roster member.  Only envelopes from
        senders still missing in this round are looked at, the first per sender, at most one
        per roster member: a source that answers with thousands of junk envelopes costs this
        peer at most K checks.  Everything rejected is charged to `source` as well as to the
        claimed sender, and a source that delivered junk is not pulled from again for a while.
        """
        have = set(self.store.vectors(round_key)) | {self.peer_id}
        checked: set[int] = set()
        junk_before = self.junk_by_source[source]
        for envelope in envelopes[: len(self.run.peers)]:
            claimed = envelope.sender
            if claimed in have or claimed in checked:
                continue
            checked.add(claimed)
            self.receive(envelope, via=source)
        if len(envelopes) > len(self.run.peers):
            with self._crypto_lock:
                self.junk_by_source[source] += len(envelopes) - len(self.run.peers)
            log.warning("pull reply from peer %d held %d envelopes (at most %d possible); the rest were dropped",
                        source, len(envelopes), len(self.run.peers))
        if self.junk_by_source[source] > junk_before:
            strikes = self._pull_strikes[source] = self._pull_strikes[source] + 1
            self._pull_backoff_until[source] = self.clock() + min(
                self.run.network.round_timeout / 4, self.run.network.retry_interval * 2 ** strikes)
        else:
            self._pull_strikes[source] = 0
        return len(checked)

    def push_raw(self, receiver: int, data: bytes) -> int | None:
        """Push arbitrary bytes as an envelope (Byzantine daemons' protocol misbehaviour).

        Returns the receiver's reason code, or None if the call failed."""
        call = self._channels[receiver].unary_unary("/decbyzpg.v1.Peer/Push", request_serializer=None,
                                                    response_deserializer=peer_pb2.PushReply.FromString)
        try:
            return call(data, timeout=self.run.network.push_timeout).reason
        except grpc.RpcError:
            return None

    def expected_senders(self, round_key: RoundKey) -> tuple[set[int], int]:
        """The other peers whose vectors round `round_key` carries, and how many of them make a quorum.

        Both come from the schedule; this peer's own vector counts towards the quorum when
        it is one of the round's senders.
        """
        senders = self.schedule.senders(round_key)
        return set(senders) - {self.peer_id}, self.schedule.quorum(round_key) - int(self.peer_id in senders)

    def collect(self, round_key: RoundKey, deadline: float, expected: set[int], quorum: int,
                also_pull: set[int] = frozenset()) -> tuple[dict[int, np.ndarray], RoundStats]:
        """Wait for the others' vectors of one round; returns them by sender.

        Ends when every expected sender is in, at `deadline`, or `grace` after `quorum`
        of them are in.  Missing senders are pulled from directly; `also_pull` names
        further peers to pull from (colluding Byzantine peers use it as their side channel).
        """
        started = self.clock()
        net = self.run.network
        grace_end: float | None = None
        next_pull = started + net.retry_interval
        pending_pulls: dict[int, futures.Future] = {}
        timed_out = False
        while True:
            if self.interrupted.is_set():
                raise Interrupted(f"stopped while waiting in round {round_key}")
            have = set(self.store.vectors(round_key)) & expected
            now = self.clock()
            if have == expected:
                break
            if grace_end is None and len(have) >= quorum:
                grace_end = now + net.grace
            if grace_end is not None and now >= grace_end:
                break
            if now >= deadline:
                timed_out = True
                break
            if now >= next_pull:
                for source in (expected - have) | set(also_pull):
                    if self.pull_paused(source, now):
                        continue  # it delivered junk recently
                    future = pending_pulls.get(source)
                    if future is None or future.done():
                        pending_pulls[source] = self._pull_pool.submit(self._pull, source, round_key)
                next_pull = now + net.retry_interval
            limit = min(deadline, next_pull, grace_end or deadline) - now
            self.store.wait_for(round_key, len(set(self.store.vectors(round_key))) + 1, max(limit, 0.0005))
        self.first_round = False
        vectors = {s: v for s, v in self.store.vectors(round_key).items() if s in expected}
        return vectors, RoundStats(round_key, self.clock() - started, len(vectors), timed_out)

    def exchange(self, round_key: RoundKey, vector: np.ndarray | None) -> tuple[dict[int, np.ndarray], RoundStats]:
        """The exchange interface over the network: broadcast ours, collect the others'."""
        deadline = self.deadline()
        if vector is not None:
            self.broadcast(round_key, vector, deadline)
        expected, quorum = self.expected_senders(round_key)
        return self.collect(round_key, deadline, expected, quorum)
