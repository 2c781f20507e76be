"""The honest peer daemon: the engine's state machine driven over gRPC.

The daemon owns nothing algorithmic.  It runs `PeerStateMachine.iteration()` and answers
each `Broadcast` the program yields with `PeerTransport.exchange`, then logs the
iteration and checkpoints.  A restarted daemon loads its checkpoint (parameters,
optimizer state, v_{t-1}, theta_{t-1}, t) and catches up by pulling the rounds it missed;
the common coin and all random streams are counter-based, so nothing else is needed.
"""

from __future__ import annotations

import logging
import math
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from peer.engine.errors import ExitCode, RunStateError
from peer.engine.exchange import Broadcast
from peer.engine.metrics import IterationMetrics
from peer.engine.policy import get_flat
from peer.engine.sampling import ActionFn
from peer.engine.state_machine import IterationReport, PeerStateMachine
from peer.net.files import MetricsFile, atomic_write, load_checkpoint, save_checkpoint
from peer.net.runfile import RunFile
from peer.net.transport import Interrupted, PeerTransport, RoundStats
from peer.net.usage import ProcessUsage

log = logging.getLogger("decbyzpg.peer")

LOG_EVERY = 10  # iterations between progress lines in the daemon's log

class PeerDaemon:
    """One honest peer: state machine + transport + metrics + checkpoints."""

    def __init__(self, run: RunFile, peer_id: int, signing_key: Any, out_dir: Path,
                 behaviour: ActionFn | None = None,
                 on_iteration: Callable[[IterationReport, PeerStateMachine], None] | None = None) -> None:
        self.run = run
        self.cfg = run.config
        self.peer_id = peer_id
        self.out_dir = Path(out_dir)
        self.machine = PeerStateMachine(self.cfg, peer_id, self.cfg.genesis_hash(), behaviour=behaviour)
        self.schedule = self.machine.schedule
        dim = int(get_flat(self.machine.policy).numel())
        self.transport = PeerTransport(run, peer_id, signing_key, dim)
        self.on_iteration = on_iteration
        self.stop_requested = threading.Event()
        self.stop_signal: int | None = None
        self.metrics = MetricsFile(self.out_dir / "metrics.csv", self.cfg.num_peers)
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.trajectories = 0
        self.env_steps = 0
        self.usage = ProcessUsage()
        self._exchange_cpu = 0.0

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Stop at once, even inside a round; the last completed iteration's checkpoint is kept."""
        self.stop_signal = signum
        self.stop_requested.set()
        self.transport.interrupted.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        if state is None:
            self.metrics.truncate(0)
            return
        if state.get("run_id") != self.run.run_id or state.get("peer_id") != self.peer_id:
            raise RunStateError(f"checkpoint {self.checkpoint_path} belongs to another run or peer; "
                             "move it away to start fresh")
        self.machine.load_state_dict(state["machine"])
        self.trajectories = int(state["trajectories"])
        self.env_steps = int(state["env_steps"])
        self.metrics.truncate(self.machine.t)
        log.info("resumed from checkpoint at iteration %d", self.machine.t)

    def _exchange(self, out: Broadcast) -> tuple[dict[int, np.ndarray], RoundStats]:
        if self.stop_requested.is_set():
            raise Interrupted("stop requested between rounds")
        cpu_before = time.thread_time()
        try:
            return self.transport.exchange(out.round_key, out.vector)
        finally:
            self._exchange_cpu += time.thread_time() - cpu_before

    def _apply_proofs(self, t: int) -> None:
        """Hand the state machine every proven equivocator, and tell the transport whom iteration t leaves out."""
        for sender, proven_at in self.transport.proofs.proven_at().items():
            if sender == self.peer_id:  # our own key signed two bodies: it leaked, or this is a bug
                raise RunStateError(f"a valid proof shows peer {sender} (this peer) equivocating in iteration "
                                    f"{proven_at}; its signing key may be compromised")
            self.machine.exclude(sender, proven_at)
        self.transport.excluded = self.machine.excluded_at(t)

    def run_iteration(self) -> None:
        t = self.machine.t
        self.transport.set_iteration(t)
        self._apply_proofs(t)
        started = time.perf_counter()
        cpu_before, self._exchange_cpu = time.thread_time(), 0.0
        crypto_before = self.transport.crypto_seconds
        program = self.machine.iteration()
        stats: list[RoundStats] = []
        try:
            out = next(program)
            while True:
                received, round_stats = self._exchange(out)
                stats.append(round_stats)
                out = program.send(received)
        except StopIteration as done:
            report: IterationReport = done.value
        self.trajectories += report.trajectories
        self.env_steps += report.env_steps
        self.usage.rounds += len(stats)
        # CPU, not wall time: this thread's, less what it spent signing and waiting in rounds
        self.usage.learning_seconds += time.thread_time() - cpu_before - self._exchange_cpu
        self.usage.waiting_seconds += sum(s.seconds for s in stats)
        latencies = [s.seconds * 1e3 for s in stats]
        now = time.perf_counter()
        self.metrics.add(IterationMetrics(
            iteration=t, trajectories_per_agent=self.trajectories, x_t=int(report.large_batch),
            peer_returns={self.peer_id: report.mean_return} if report.trajectories else {},
            agreement_diameter=report.diameters[-1] if report.diameters else math.nan,
            agreement_fallbacks=report.agreement_fallbacks, gradient_received=report.gradient_received,
            env_steps=self.env_steps, rounds=len(stats), rounds_timed_out=sum(s.timed_out for s in stats),
            round_p50_ms=statistics.median(latencies) if latencies else math.nan,
            round_max_ms=max(latencies) if latencies else math.nan,
            round_ms=" ".join(f"{s.round_key.phase.name[0].lower()}{s.round_key.round}:{s.seconds * 1e3:.3f}"
                              for s in stats),
            rejected=sum(self.transport.rejections.counts().values()),
            equivocators=" ".join(str(i) for i in sorted(self.transport.store.equivocators())),
            comm_seconds=sum(s.seconds for s in stats),
            crypto_seconds=self.transport.crypto_seconds - crypto_before,
            compute_seconds=report.compute_seconds, seconds=now - started, elapsed_seconds=now - self.started,
        ))
        self._log_progress(self.metrics.rows[-1])
        save_checkpoint(self.checkpoint_path, {
            "run_id": self.run.run_id, "peer_id": self.peer_id, "machine": self.machine.state_dict(),
            "trajectories": self.trajectories, "env_steps": self.env_steps,
        })
        self.write_network_report()
        if self.on_iteration is not None:
            self.on_iteration(report, self.machine)

    def _log_progress(self, row: IterationMetrics) -> None:
        """One plain line every LOG_EVERY iterations, and for any iteration a round timed out in.

        This is what `docker compose logs -f peer-3` shows: a story, not a progress bar.
        """
        last = row.iteration == self.schedule.iteration_count - 1
        if row.iteration % LOG_EVERY and not row.rounds_timed_out and not last:
            return
        own = row.peer_returns.get(self.peer_id)
        log.info("iteration %d/%d: %d trajectories, return %s, round p50 %s ms, %d rounds timed out, "
                 "%d rejected so far%s", row.iteration + 1, self.schedule.iteration_count,
                 row.trajectories_per_agent, "-" if own is None else f"{own:.1f}",
                 "-" if math.isnan(row.round_p50_ms) else f"{row.round_p50_ms:.1f}", row.rounds_timed_out,
                 row.rejected, f"; equivocators {row.equivocators}" if row.equivocators else "")

    def write_network_report(self) -> None:
        """network.json: rejections by reason, equivocators, evidence count (atomic)."""
        import json

        transport = self.transport
        atomic_write(self.out_dir / "network.json", json.dumps({
            "peer_id": self.peer_id, "iteration": self.machine.t, "accepted": transport.accepted,
            "rejected": transport.rejections.counts(), "equivocators": sorted(transport.store.equivocators()),
            "evidence": len(transport.store.evidence()),
            # proven equivocators -> the first iteration they are left out of (the same at every honest peer
            # that held the earliest proof in time)
            "excluded": {str(k): v for k, v in sorted(self.machine.excluded.items())},
            "cross_checks": transport.cross_checks, "cross_check_catches": transport.cross_check_catches,
            "junk_relayed_by": {str(k): v for k, v in sorted(transport.junk_by_source.items())},
            "usage": self.usage.snapshot(transport),
        }, indent=2) + "\n", durable=False)

    def serve(self, bind: str | None = None, linger: float | None = None) -> int:
        """Run to the end of the trajectory budget; returns an exit status (0 = finished)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        total = self.schedule.iteration_count
        self.started = time.perf_counter()
        self.usage.mark_started()
        self.transport.start(bind)
        log.info("peer %d serving; %d iterations planned, starting at %d", self.peer_id, total, self.machine.t)
        try:
            while self.machine.t < total:
                self.run_iteration()
            self.transport.finished = True
            self.transport.set_iteration(total)
            self.transport.linger(self.run.network.linger if linger is None else linger, self.stop_requested)
            return ExitCode.SUCCESS
        except Interrupted:
            log.info("peer %d stopped at iteration %d; checkpoint kept", self.peer_id, self.machine.t)
            return ExitCode.stopped_by(self.stop_signal)
        finally:
            # stopped by a signal: in-flight calls get a short grace, the orchestrator is waiting
            self.transport.stop(grace=0.2 if self.stop_requested.is_set() else 1.0)
            self.machine.sampler.close()
            self.write_network_report()  # the final figures, linger included
