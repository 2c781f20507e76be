"""The gRPC implementation of the exchange: signed envelopes on long-lived streams.

Every peer runs a `Peer` gRPC server and is a client of every other peer's.  All of a
process's network I/O runs on one asyncio event loop (grpc.aio) in a thread of its own; the
peer's driver (the state machine) stays synchronous and hands work to the loop thread-safely.
Nothing holds a thread per call: a client that opens calls and never finishes them costs
this peer a little memory, not its thread pool (there is none).

Sending: a broadcast signs its vector once and serializes the envelope once; one sender
task per destination writes those bytes, in order, to one long-lived Deliver stream to that
peer, reopened when it breaks.  A message that could not be written is retried until its
round's deadline, or dropped as soon as a newer one is queued behind it (the destination
pulls what it missed).  Receiving: every envelope -- from a Deliver stream, a unary Push or
a Pull reply -- goes through the same validator (`peer.net.wire.Validator`) before it
touches state, and the first valid one per (sender, round) is stored
(`peer.net.store.RoundStore`); a byte-identical copy of a stored envelope is recognised
without verifying its signature again.  A peer missing messages pulls them, so a late or
restarted peer catches up and lost messages are repaired.

A round ends when all K vectors are in, at its deadline, or a short grace period after
K - f are in: up to f silent peers cost at most the grace period per round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Mapping, Sequence

import grpc
import numpy as np
from decbyzpg.v1 import peer_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from peer.engine.errors import ConfigError
from peer.engine.schedule import EXCLUSION_LAG, Phase, RoundKey, Schedule
from peer.net import reads, wire
from peer.net.evidence import InvalidProof, Proof, ProofBook, check_proof
from peer.net.rejections import RejectionLog
from peer.net.runfile import RunFile
from peer.net.store import RoundStore
from peer.net.tls import TlsFiles, peer_name
from peer.net.usage import Traffic

log = logging.getLogger("decbyzpg.transport")

SERVICE = "decbyzpg.v1.Peer"

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
    # a connection that carries no call for 5 minutes is closed (peers reopen theirs on demand)
    ("grpc.max_connection_idle_ms", 300_000),
]


# How long a peer retries binding its roster address (a container's name may resolve late).
BIND_PATIENCE_SECONDS = 10.0

# The longest wait between two rounds of pulls within one round.
MAX_PULL_INTERVAL = 2.0

# How long one attempt to write a message waits for an unreachable peer before the sender
# looks for a newer message to send instead.
LINK_ATTEMPT_SECONDS = 1.0


def server_call_limits(num_peers: int) -> tuple[int, int]:
    """(concurrent calls per peer, concurrent streams per connection).

    An honest peer holds one Deliver stream to us and at most a few Pull or Status calls
    at a time; the limits leave ample room for that and bound what anyone else can pile up.
    """
    return 16 * num_peers + 64, 2 * num_peers + 8


# --------------------------------------------------------------------------- the event loop

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
loop_thread_id: int | None = None  # the loop thread's native id (for per-thread CPU figures)


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's one asyncio loop for gRPC, running in a daemon thread (started on first use).

    One loop per process, shared by every transport in it (tests run several peers in one
    process): grpc.aio objects belong to the loop that created them.
    """
    global _loop, loop_thread_id
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="grpc-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, loop_thread_id = loop, thread.native_id
        return _loop


def open_channel(address: str, peer_id: int, tls: TlsFiles | None, options: Sequence[tuple[str, Any]] = ()
                 ) -> grpc.aio.Channel:
    """A channel to roster member `peer_id`: plaintext, or mutual TLS checking that the server's
    certificate names that peer (not the address dialed; see `peer.net.tls`)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.private_key,
                                               certificate_chain=tls.certificate)
    return grpc.aio.secure_channel(address, credentials,
                                   options=[*options, ("grpc.ssl_target_name_override", peer_name(peer_id))])


def _host_is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or (_host_is_ip(address) and ipaddress.ip_address(host).is_loopback)


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
    data: bytes  # the serialized SignedMessage, shared by every destination of a broadcast
    deadline: float
    not_before: float = 0.0  # injected link delay (network.inject_delay, tests only)


class _Link:
    """This peer's sending side towards one other peer: a queue and one Deliver stream.

    Lives on the event loop.  Messages go out in the order they were queued; a broken or
    stalled stream is abandoned and reopened on the next attempt.
    """

    def __init__(self, transport: "PeerTransport", destination: int, channel: grpc.aio.Channel) -> None:
        self.transport = transport
        self.destination = destination
        self.queue: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self._channel = channel
        self._open_stream = channel.stream_unary(f"/{SERVICE}/Deliver", request_serializer=None,
                                                 response_deserializer=peer_pb2.DeliverReply.FromString)
        self._call: Any = None
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"deliver-{destination}")

    async def run(self) -> None:
        t = self.transport
        retry = t.run.network.retry_interval
        while True:
            item = await self.queue.get()
            if item is None:
                break
            hold = item.not_before - t.clock()
            if hold > 0:
                await asyncio.sleep(hold)
            while not t.stopping.is_set() and t.clock() < item.deadline:
                attempt_started = t.clock()
                if await self._write(item, min(item.deadline - t.clock(), LINK_ATTEMPT_SECONDS)):
                    break
                # Retry only the newest message: with newer ones queued behind a failing one,
                # move on (the destination pulls what it missed), so a dead peer's queue stays
                # bounded instead of holding every round until its deadline.
                if not self.queue.empty():
                    break
                if t.clock() - attempt_started < retry:  # failed at once: do not spin
                    await asyncio.sleep(retry)
        await self.close()

    async def _write(self, item: _Outgoing, budget: float) -> bool:
        try:
            if self._call is None:
                # While the peer is down, wait for gRPC's own reconnect (backoff up to 2 s)
                # instead of opening calls that fail at once, in a loop: no call exists until
                # the connection is up.
                if self._channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
                    async with asyncio.timeout(max(budget, 0.001)):
                        await self._channel.channel_ready()
                self._call = self._open_stream(wait_for_ready=True)
            async with asyncio.timeout(max(budget, 0.001)):  # no task per write, unlike wait_for
                await self._call.write(item.data)
        except asyncio.CancelledError:
            raise
        except Exception:  # the stream broke (peer down, reset) or stalled past the attempt
            self._abandon()
            return False
        self.transport.traffic.messages_sent += 1
        self.transport.traffic.bytes_sent += len(item.data)
        return True

    def _abandon(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def close(self) -> None:
        """Half-close the stream (the receiver then answers its DeliverReply), then let it go."""
        if self._call is not None:
            try:
                await asyncio.wait_for(self._call.done_writing(), timeout=0.5)
            except Exception:  # already broken: nothing to close politely
                pass
            self._abandon()


def _enqueue(outgoing: Sequence[tuple[_Link, _Outgoing]]) -> None:
    """On the loop: hand messages to their links' queues (called thread-safely by `send`)."""
    for link, item in outgoing:
        link.queue.put_nowait(item)


class _Servicer:
    """The Peer service on the event loop; every handler returns at once (no waiting inside)."""

    def __init__(self, transport: "PeerTransport") -> None:
        self.t = transport

    async def Push(self, request: bytes, context: grpc.aio.ServicerContext) -> peer_pb2.PushReply:
        # Raw bytes: the validator sizes and parses them itself, so garbage gets a reason code.
        return peer_pb2.PushReply(reason=self.t.receive(request))

    async def Deliver(self, requests: Any, context: grpc.aio.ServicerContext) -> peer_pb2.DeliverReply:
        received = accepted = 0
        async for request in requests:
            received += 1
            accepted += self.t.receive(request) == wire.ACCEPTED
        return peer_pb2.DeliverReply(received=received, accepted=accepted)

    async def _refuse(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Abort the call UNAUTHENTICATED unless a roster member signed it (`peer.net.reads`)."""
        started = time.thread_time()
        refusal = self.t.read_gate.refusal(method, request)
        with self.t._crypto_lock:
            self.t.crypto_seconds += time.thread_time() - started
        if refusal is not None:
            self.t.refused_reads += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)

    async def Pull(self, request: peer_pb2.PullRequest, context: grpc.aio.ServicerContext) -> peer_pb2.PullReply:
        await self._refuse("Pull", request, context)
        if request.run_id != self.t.run_id:
            return peer_pb2.PullReply()
        try:
            round_key = RoundKey(int(request.iteration), Phase(int(request.phase)), int(request.round))
        except ValueError:
            return peer_pb2.PullReply()
        return peer_pb2.PullReply(messages=self.t.held(round_key, set(request.senders)))

    async def Evidence(self, request: peer_pb2.EvidenceRequest,
                       context: grpc.aio.ServicerContext) -> peer_pb2.EvidenceReply:
        await self._refuse("Evidence", request, context)
        return peer_pb2.EvidenceReply(equivocations=self.t.store.evidence())

    async def Report(self, request: peer_pb2.Equivocation, context: grpc.aio.ServicerContext) -> peer_pb2.ReportReply:
        reason = self.t.report(request)
        return peer_pb2.ReportReply(accepted=reason is None, reason=reason or "")

    async def Status(self, request: peer_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> peer_pb2.StatusReply:
        await self._refuse("Status", request, context)
        return peer_pb2.StatusReply(run_id=self.t.run_id, peer_id=self.t.peer_id, iteration=self.t.iteration,
                                    finished=self.t.finished, rejected=self.t.rejections.counts(),
                                    accepted=self.t.accepted)

    def handler(self) -> grpc.GenericRpcHandler:
        """The Peer service, with Push and Deliver taking undecoded bytes (see Push)."""
        def serialize(reply: Any) -> bytes:
            return reply.SerializeToString()

        def unary(fn: Callable, request_type: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.FromString if request_type else None,
                response_serializer=serialize)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Push": unary(self.Push, None),
            "Deliver": grpc.stream_unary_rpc_method_handler(self.Deliver, request_deserializer=None,
                                                            response_serializer=serialize),
            "Pull": unary(self.Pull, peer_pb2.PullRequest),
            "Evidence": unary(self.Evidence, peer_pb2.EvidenceRequest),
            "Report": unary(self.Report, peer_pb2.Equivocation),
            "Status": unary(self.Status, peer_pb2.StatusRequest),
        })


class _Client:
    """Unary calls to one other peer (Push for raw bytes, Pull, Status) on a shared channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.push = channel.unary_unary(f"/{SERVICE}/Push", request_serializer=None,
                                        response_deserializer=peer_pb2.PushReply.FromString)
        self.pull = channel.unary_unary(f"/{SERVICE}/Pull", request_serializer=peer_pb2.PullRequest.SerializeToString,
                                        response_deserializer=peer_pb2.PullReply.FromString)
        self.report = channel.unary_unary(f"/{SERVICE}/Report",
                                          request_serializer=peer_pb2.Equivocation.SerializeToString,
                                          response_deserializer=peer_pb2.ReportReply.FromString)
        self.status = channel.unary_unary(f"/{SERVICE}/Status",
                                          request_serializer=peer_pb2.StatusRequest.SerializeToString,
                                          response_deserializer=peer_pb2.StatusReply.FromString)


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
        self.store = RoundStore()
        self.validator = wire.Validator(run.run_id, run.public_keys(), peer_id, dim, self.schedule.shape(),
                                        max_message_bytes=net.max_message_bytes,
                                        window_ahead=net.window_ahead, keep_behind=net.retain_iterations,
                                        already_held=self.store.holds)
        self.rejections = RejectionLog()
        # equivocation proofs (peer.net.evidence): the earliest per sender, and to whom each
        # still has to be reported (retried at every iteration until it got through)
        self.proofs = ProofBook()
        self.store.on_equivocation = self._detected
        self._unreported: dict[int, set[int]] = {}  # destination -> accused senders
        self._reporting: set[tuple[int, int, int]] = set()  # (destination, accused, proof's t): Reports in flight
        self._unreported_lock = threading.Lock()
        self.excluded: frozenset[int] = frozenset()  # left out of the current iteration (set by the daemon)
        self.cross_checks = 0  # rounds compared with another peer (network.cross_check)
        self.cross_check_catches = 0  # equivocations found that way
        self.tls = run.tls.load(peer_id) if run.tls is not None else None  # mutual TLS (peer.net.tls)
        self.read_gate = reads.ReadGate(run.run_id, run.public_keys(), net.read_max_skew, net.open_status)
        self.refused_reads = 0  # Pull, Evidence and Status calls refused for want of a roster signature
        self.own: dict[RoundKey, peer_pb2.SignedMessage] = {}
        self.own_lock = threading.Lock()
        self.iteration = 0
        self.finished = False
        self.accepted = 0
        self.crypto_seconds = 0.0
        self.traffic = Traffic()
        self._crypto_lock = threading.Lock()
        self.stopping = threading.Event()
        self.interrupted = threading.Event()  # set by a signal handler: leave the current round now
        self._delay_rng = random.Random(peer_id)
        self.junk_by_source: Counter[int] = Counter()  # rejected envelopes each peer relayed to us by Pull
        self._pull_strikes: Counter[int] = Counter()
        self._pull_backoff_until: dict[int, float] = {}
        self._pull_failures: Counter[int] = Counter()
        self._unreachable_until: dict[int, float] = {}  # sources whose last pulls failed
        self.first_round = True
        self._seen_finished: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._clients: dict[int, _Client] = {}
        self._links: dict[int, _Link] = {}
        self.health: Any = None

    @property
    def loop_thread_id(self) -> int | None:
        """Native id of the thread running this transport's event loop (None before start)."""
        return loop_thread_id if self._loop is not None else None

    # ------------------------------------------------------------------ lifecycle
    def _call(self, make: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
        """Run `make()` -- a coroutine or a gRPC call, created on the loop as grpc.aio requires --
        on the event loop and wait for its result (from another thread)."""
        assert self._loop is not None, "transport not started"

        async def wait() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result(timeout)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        assert self._loop is not None, "transport not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def start(self, bind: str | None = None) -> int:
        """Start serving on the roster address (and loopback, same port) unless `bind` says otherwise."""
        self._loop = event_loop()
        return self._call(lambda: self._start(bind), timeout=30)

    async def _listen(self, address: str, patience: float) -> int:
        """Add a listening port (TLS or not), trying for `patience` seconds; 0 if it cannot be bound."""
        give_up = time.monotonic() + patience
        while True:
            assert self._server is not None
            try:
                if self.tls is None:
                    port = self._server.add_insecure_port(address)
                else:  # only holders of a certificate from the run's CA may connect
                    port = self._server.add_secure_port(address, grpc.ssl_server_credentials(
                        [(self.tls.private_key, self.tls.certificate)], root_certificates=self.tls.ca,
                        require_client_auth=True))
            except RuntimeError:
                port = 0
            if port != 0 or time.monotonic() >= give_up:
                return port
            await asyncio.sleep(0.5)

    async def _start(self, bind: str | None) -> int:
        limit = 4 * self.run.network.max_message_bytes  # above it gRPC itself refuses
        calls, streams = server_call_limits(len(self.run.peers))
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                   ("grpc.max_concurrent_streams", streams), *SERVER_LINK_OPTIONS]
        self._server = grpc.aio.server(options=options, maximum_concurrent_rpcs=calls)
        self._server.add_generic_rpc_handlers((_Servicer(self).handler(),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        roster_address = self.run.peer(self.peer_id).address
        # a name may not resolve yet when a container starts (swarm registers it with the task)
        patience = 0.0 if bind or _host_is_ip(roster_address) else BIND_PATIENCE_SECONDS
        port = await self._listen(bind or roster_address, patience)
        if port == 0:
            if bind:
                raise ConfigError(f"config error: cannot listen on {bind} (is the port in use?)")
            raise ConfigError(f"config error: cannot listen on the roster address {roster_address} (is the port in "
                              f"use, or is it not an address of this host, e.g. behind NAT? --bind "
                              f"0.0.0.0:{roster_address.rsplit(':', 1)[1]} listens on every interface)")
        if not bind and not _is_loopback(roster_address):
            # local probes (the container health check, `decbyzpg status` on the host) reach it on loopback too
            loopback = "127.0.0.1:" + roster_address.rsplit(":", 1)[1]
            if await self._listen(loopback, patience=0.0) == 0:
                log.warning("peer %d: cannot also listen on %s; local probes must use %s", self.peer_id, loopback,
                            roster_address)
        await self._server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        # A Pull reply may carry one honest-sized message per roster member, and no more.
        client_limit = len(self.run.peers) * (wire.max_envelope_bytes(self.dim) + 16) + 1024
        client_options = [("grpc.max_receive_message_length", client_limit), ("grpc.max_send_message_length", limit),
                          *CLIENT_LINK_OPTIONS]
        for other in self.others:
            channel = open_channel(self.run.peer(other).address, other, self.tls, client_options)
            self._channels[other] = channel
            self._clients[other] = _Client(channel)
            self._links[other] = _Link(self, other, channel)
        return port

    def stop(self, grace: float = 1.0) -> None:
        if self._loop is None or self.stopping.is_set():
            self.stopping.set()
            return
        self.stopping.set()
        try:
            self._call(lambda: self._stop(grace), timeout=grace + 5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("peer %d: the transport did not stop within %.1f s", self.peer_id, grace + 5)

    async def _stop(self, grace: float) -> None:
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        for link in self._links.values():
            link.queue.put_nowait(None)
        if self._links:
            await asyncio.wait([link.task for link in self._links.values()], timeout=1.0)
        for link in self._links.values():
            link.task.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        for channel in self._channels.values():
            await channel.close()

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
            request = self.authorize(peer_pb2.StatusRequest(), "Status")
            reply = self._call(lambda: self._clients[other].status(request, timeout=1.0), timeout=3.0)
        except (grpc.RpcError, concurrent.futures.TimeoutError):
            return False  # down, perhaps restarting: keep serving until `seconds` pass
        if reply.finished:
            self._seen_finished.add(other)  # once finished, it may exit: that is fine
        return bool(reply.finished)

    def set_iteration(self, t: int) -> None:
        """Advance the receive window and forget what no peer can still need."""
        self.iteration = t
        self._report_pending()
        horizon = t - self.run.network.retain_iterations
        if horizon > 0:
            self.store.prune(horizon)
            with self.own_lock:
                for round_key in [k for k in self.own if k.iteration < horizon]:
                    del self.own[round_key]

    # ------------------------------------------------------------------ receiving
    def receive(self, envelope: peer_pb2.SignedMessage | bytes, via: int | None = None) -> int:
        """Validate and store one envelope; `via` is the peer that relayed it (a Pull reply), if any."""
        started = time.thread_time()  # CPU of this thread: immune to being descheduled
        verdict = self.validator.check(envelope, self.iteration)
        with self._crypto_lock:
            self.crypto_seconds += time.thread_time() - started
            self.traffic.messages_received += 1
            self.traffic.bytes_received += len(envelope) if isinstance(envelope, bytes) else envelope.ByteSize()
        reason = verdict.reason
        if verdict.accepted:
            reason = self.store.add(verdict)
        if reason == wire.ACCEPTED:
            self.accepted += 1
        elif reason != peer_pb2.REJECT_REASON_DUPLICATE:
            self.rejections.record(reason, sender=verdict.sender, origin=None if via is None else f"pull from peer {via}")
            # relaying a validly signed second version is what an honest peer does (it is how
            # equivocation gets caught): only invalid envelopes count against the relay
            if via is not None and reason != peer_pb2.REJECT_REASON_EQUIVOCATION:
                with self._crypto_lock:
                    self.junk_by_source[via] += 1
        return reason

    # ------------------------------------------------------------------ equivocation proofs
    def report(self, message: peer_pb2.Equivocation, how: str = "reported to this peer") -> str | None:
        """Check a proof someone handed us; adopt it if it is new. Returns why it was refused, or None."""
        started = time.thread_time()
        try:
            proof = check_proof(message, self.run_id, self.validator.roster, self.run.network.max_message_bytes)
        except InvalidProof as err:
            return str(err)
        finally:
            with self._crypto_lock:
                self.crypto_seconds += time.thread_time() - started
        self._adopt(proof, how)
        return None

    def _detected(self, sender: int, round_key: RoundKey, message: peer_pb2.Equivocation) -> None:
        """The store saw a second body for a slot: a proof of our own making."""
        if self.proofs.known_at_or_before(sender, round_key.iteration):
            return  # an earlier (or as early) proof is held: nothing changes, nothing to verify
        reason = self.report(message, "detected here")
        if reason is not None:  # both envelopes passed the validator: this is a bug
            raise AssertionError(f"a detected equivocation failed its own check: {reason}")

    def _adopt(self, proof: Proof, how: str) -> None:
        if not self.proofs.offer(proof):
            return
        key = proof.round_key
        log.warning("peer %d equivocated in round (%d, %s, %d) (proof %s); it is left out from iteration %d on",
                    proof.sender, key.iteration, key.phase.name.lower(), key.round, how,
                    key.iteration + EXCLUSION_LAG)
        with self._unreported_lock:
            for destination in self.others:
                if destination != proof.sender:
                    self._unreported.setdefault(destination, set()).add(proof.sender)
        if self._loop is not None:
            self._report_pending()

    def _report_pending(self) -> None:
        """Send every proof a peer has not acknowledged yet (fire and forget; retried next iteration)."""
        if self._loop is None or self.stopping.is_set():
            return
        earliest = {p.sender: p for p in self.proofs.proofs()}
        with self._unreported_lock:
            sends = [(destination, earliest[sender]) for destination, accused in self._unreported.items()
                     for sender in accused if self._flight(destination, earliest[sender]) not in self._reporting]
            # one Report per destination and proof in flight, however often this runs
            self._reporting.update(self._flight(destination, proof) for destination, proof in sends)
        for destination, proof in sends:
            self._spawn(self._send_report(destination, proof))

    async def _send_report(self, destination: int, proof: Proof) -> None:
        try:
            await self._clients[destination].report(proof.message, timeout=self.run.network.push_timeout)
        except grpc.RpcError:
            return  # down or slow: stays pending, sent again at the next iteration
        else:
            with self._unreported_lock:
                if self.proofs.known_at_or_before(proof.sender, proof.round_key.iteration - 1):
                    return  # an earlier proof arrived meanwhile: that one is still to be sent
                self._unreported.get(destination, set()).discard(proof.sender)
        finally:
            with self._unreported_lock:
                self._reporting.discard(self._flight(destination, proof))

    @staticmethod
    def _flight(destination: int, proof: Proof) -> tuple[int, int, int]:
        return destination, proof.sender, proof.round_key.iteration


    def held(self, round_key: RoundKey, senders: set[int] | None = None) -> list[peer_pb2.SignedMessage]:
        """What this peer holds for a round, its own message included (for Pull): every
        sender's, or only those in `senders` when it is not empty."""
        messages = list(self.store.envelopes(round_key))
        with self.own_lock:
            if round_key in self.own:
                messages.append(self.own[round_key])
        if senders:
            messages = [m for m in messages if m.sender in senders]
        return messages

    # ------------------------------------------------------------------ sending
    def sign(self, round_key: RoundKey, vector: np.ndarray) -> peer_pb2.SignedMessage:
        started = time.thread_time()
        envelope = wire.sign_message(self.signing_key, self.run_id, round_key, self.peer_id, vector)
        with self._crypto_lock:
            self.crypto_seconds += time.thread_time() - started  # body encoding included: it is tiny
        return envelope

    def authorize(self, request: Any, method: str) -> Any:
        """Sign a read request as this peer's (peers answer reads from roster members only)."""
        started = time.thread_time()
        reads.authorize(request, method, self.run_id, self.peer_id, self.signing_key)
        with self._crypto_lock:
            self.crypto_seconds += time.thread_time() - started
        return request

    def deadline(self) -> float:
        net = self.run.network
        return self.clock() + (net.startup_timeout if self.first_round else net.round_timeout)

    def send(self, round_key: RoundKey, per_receiver: Mapping[int, np.ndarray | None], deadline: float) -> None:
        """Sign and queue one vector per receiver (a broadcast passes the same vector to all).

        Each distinct vector is signed and serialized once; its bytes are shared by every
        destination's queue."""
        signed: dict[int, tuple[peer_pb2.SignedMessage, bytes]] = {}
        outgoing: list[tuple[_Link, _Outgoing]] = []
        for receiver, vector in per_receiver.items():
            if vector is None or receiver == self.peer_id or receiver not in self._links:
                continue
            ident = id(vector)
            if ident not in signed:
                envelope = self.sign(round_key, vector)
                started = time.thread_time()
                data = envelope.SerializeToString()
                self.traffic.serialization_seconds += time.thread_time() - started
                signed[ident] = (envelope, data)
            outgoing.append((self._links[receiver], _Outgoing(signed[ident][1], deadline,
                                                              self.clock() + self._link_delay())))
        if len(signed) == 1:
            with self.own_lock:
                self.own[round_key] = next(iter(signed.values()))[0]
        if outgoing and self._loop is not None:
            self._loop.call_soon_threadsafe(_enqueue, outgoing)

    def broadcast(self, round_key: RoundKey, vector: np.ndarray, deadline: float) -> None:
        self.send(round_key, {other: vector for other in self.others}, deadline)

    # ------------------------------------------------------------------ collecting
    def _link_delay(self) -> float:
        """Injected one-way delay for one message (0 unless the run file asks for it)."""
        net = self.run.network
        return net.inject_delay + (self._delay_rng.uniform(0.0, net.inject_jitter) if net.inject_jitter else 0.0)

    async def _pull(self, source: int, round_key: RoundKey, missing: Sequence[int] = (),
                    cross_check: bool = False) -> None:
        delay = self._link_delay()
        if delay:
            await asyncio.sleep(delay)
        request = self.authorize(peer_pb2.PullRequest(
            run_id=self.run_id, iteration=round_key.iteration, phase=int(round_key.phase), round=round_key.round,
            senders=sorted(missing)), "Pull")
        try:
            if self._channels[source].get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
                raise ConnectionError  # not connected (yet): a call would fail at once
            reply = await self._clients[source].pull(request, timeout=self.run.network.push_timeout)
        except (grpc.RpcError, ConnectionError):
            # down or restarting: ask again after retry_interval * 2^failures, at most 2 s,
            # instead of every retry_interval (K - 1 failing calls per interval at startup)
            failures = self._pull_failures[source] = self._pull_failures[source] + 1
            self._unreachable_until[source] = self.clock() + min(2.0, self.run.network.retry_interval * 2 ** failures)
            return
        self._pull_failures[source] = 0
        self._unreachable_until.pop(source, None)
        self.accept_pulled(source, round_key, reply.messages, cross_check)

    def pull_paused(self, source: int, now: float | None = None) -> bool:
        """Whether `source` is skipped for pulls because it recently relayed junk."""
        return self._pull_backoff_until.get(source, 0.0) > (self.clock() if now is None else now)

    def _may_pull(self, source: int, now: float) -> bool:
        """Neither paused for junk nor backing off after failed pulls."""
        return not self.pull_paused(source, now) and self._unreachable_until.get(source, 0.0) <= now

    def accept_pulled(self, source: int, round_key: RoundKey, envelopes: Sequence[peer_pb2.SignedMessage],
                      cross_check: bool = False) -> int:
        """Verify what a Pull from `source` returned, at a bounded cost; returns how many were verified.

        An honest reply holds at most one envelope per roster member.  Only envelopes from
        senders still missing in this round are looked at (with `cross_check`, also those
        already held: an identical one is a dictionary look-up, a different validly signed
        one an equivocation proof), the first per sender, at most one per roster member: a
        source that answers with thousands of junk envelopes costs this peer at most K
        checks.  Everything rejected is charged to `source` as well as to the claimed
        sender, and a source that delivered junk is not pulled from again for a while.
        """
        # a cross-check skips senders already proven to equivocate: another proof changes nothing
        have = ({self.peer_id} | set(self.proofs.proven_at()) if cross_check
                else set(self.store.vectors(round_key)) | {self.peer_id})
        checked: set[int] = set()
        junk_before = self.junk_by_source[source]
        for envelope in envelopes[: len(self.run.peers)]:
            claimed = envelope.sender
            if claimed in have or claimed in checked:
                continue
            checked.add(claimed)
            reason = self.receive(envelope, via=source)
            if cross_check and reason == peer_pb2.REJECT_REASON_EQUIVOCATION:
                self.cross_check_catches += 1
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
        """Push arbitrary bytes as an envelope by unary Push (Byzantine daemons' protocol misbehaviour).

        Returns the receiver's reason code, or None if the call failed."""
        timeout = self.run.network.push_timeout
        try:
            return self._call(lambda: self._clients[receiver].push(data, timeout=timeout), timeout=timeout + 1).reason
        except (grpc.RpcError, concurrent.futures.TimeoutError):
            return None

    def expected_senders(self, round_key: RoundKey) -> tuple[set[int], int]:
        """The other peers whose vectors round `round_key` carries, and how many of them make a quorum.

        Both come from the schedule; this peer's own vector counts towards the quorum when
        it is one of the round's senders.
        """
        senders = self.schedule.senders(round_key)
        return (set(senders) - {self.peer_id} - self.excluded,
                self.schedule.quorum(round_key) - int(self.peer_id in senders))

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
        pulls = 0  # rounds of pulls so far: the interval doubles with each, up to MAX_PULL_INTERVAL
        pending_pulls: dict[int, concurrent.futures.Future] = {}
        timed_out = False
        while True:
            if self.interrupted.is_set():
                raise Interrupted(f"stopped while waiting in round {round_key}")
            held = self.store.vectors(round_key)  # one snapshot: `have` and the count below agree
            have = set(held) & expected
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
                # A slow round is not a lost message: pulling every peer every retry_interval
                # while 2 cores are saturated multiplies the load that made the round slow,
                # so the interval doubles; and a pull asks only for the senders still missing.
                missing = sorted(expected - have)
                for source in set(missing) | set(also_pull):
                    if not self._may_pull(source, now):
                        continue  # it delivered junk recently, or could not be reached
                    future = pending_pulls.get(source)
                    if future is None or future.done():
                        wanted = () if source in also_pull else missing
                        pending_pulls[source] = self._spawn(self._pull(source, round_key, wanted))
                pulls += 1
                next_pull = now + min(MAX_PULL_INTERVAL, net.retry_interval * 2 ** pulls)
            # At most retry_interval asleep even while pulls back off: a stop request (SIGTERM)
            # is seen on waking, and a signal does not cut a lock wait short in Python.
            limit = min(deadline, next_pull, grace_end or deadline, now + net.retry_interval) - now
            # Sleep until enough new messages for the next milestone (the quorum, then all of
            # them) could be in, not once per message: every wake-up is a context switch.
            needed = quorum - len(have) if grace_end is None else len(expected - have)
            self.store.wait_for(round_key, len(held) + max(1, needed), max(limit, 0.0005))
        self.first_round = False
        vectors = {s: v for s, v in self.store.vectors(round_key).items() if s in expected}
        return vectors, RoundStats(round_key, self.clock() - started, len(vectors), timed_out)

    def exchange(self, round_key: RoundKey, vector: np.ndarray | None) -> tuple[dict[int, np.ndarray], RoundStats]:
        """The exchange interface over the network: broadcast ours, collect the others'."""
        deadline = self.deadline()
        if vector is not None:
            self.broadcast(round_key, vector, deadline)
        expected, quorum = self.expected_senders(round_key)
        result = self.collect(round_key, deadline, expected, quorum)
        if self.run.network.cross_check:
            self.cross_check(round_key)
        return result

    def cross_check_source(self, round_key: RoundKey) -> int | None:
        """The peer this one compares `round_key` with: the others in turn, by round and own id,
        so that over a few rounds every pair of peers has compared notes."""
        candidates = [k for k in self.others if k not in self.excluded]
        if not candidates:
            return None
        turn = round_key.iteration * 7 + int(round_key.phase) * 3 + round_key.round + self.peer_id
        return candidates[turn % len(candidates)]

    def cross_check(self, round_key: RoundKey) -> None:
        """Pull the whole of a closed round from one other peer, in the background (the round's
        result is not held back): a vector its sender signed differently for us and for that
        peer becomes an equivocation proof here (network.cross_check; docs/PROTOCOL.md 12a)."""
        source = self.cross_check_source(round_key)
        if source is None or not self._may_pull(source, self.clock()):
            return
        self.cross_checks += 1
        self._spawn(self._pull(source, round_key, (), cross_check=True))
