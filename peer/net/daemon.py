"""The honest peer daemon: the engine's state machine driven over gRPC.

The daemon owns nothing algorithmic.  It runs `PeerStateMachine.iteration()` and answers
each `Broadcast` the program yields with `PeerTransport.exchange`, then logs the
iteration and checkpoints.  A restarted daemon loads its checkpoint (parameters,
optimizer state, v_{t-1}, theta_{t-1}, t) and catches up by pulling the rounds it missed;
the common coin and all random streams are counter-based, so nothing else is needed.
"""

from __future__ import annotations

import csv
import io
import logging
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from peer.engine.errors import RunStateError
from peer.engine.exchange import Phase
from peer.engine.policy import get_flat
from peer.net.files import atomic_write
from peer.net.runfile import RunFile
from peer.engine.sampling import ActionFn
from peer.engine.state_machine import SERVER_ID, IterationReport, PeerStateMachine, iteration_count
from peer.net.transport import PeerTransport, RoundStats

log = logging.getLogger("decbyzpg.peer")

COLUMNS = ["iteration", "trajectories_per_agent", "return", "x_t", "env_steps", "gradient_received",
           "agreement_diameter", "agreement_kept_own", "rounds", "round_p50_ms", "round_max_ms",
           "rounds_timed_out", "round_ms", "rejected", "equivocators", "comm_seconds", "crypto_seconds",
           "compute_seconds", "seconds"]


class Stopped(Exception):
    """Raised inside the run loop when the daemon is asked to stop (SIGTERM, Ctrl-C)."""


class PeerLog:
    """metrics.csv of one peer, rewritten atomically each iteration; survives restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            with path.open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def truncate(self, iteration: int) -> None:
        """Forget rows of iterations >= `iteration` (not covered by the checkpoint)."""
        self.rows = [r for r in self.rows if int(r["iteration"]) < iteration]

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, buffer.getvalue(), durable=False)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())  # durable: a restart depends on it


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception as err:  # a torn file cannot exist (atomic replace), a foreign one can
        raise RunStateError(f"checkpoint {path} is unreadable: {err}") from None


class PeerDaemon:
    """One honest peer: state machine + transport + metrics + checkpoints."""

    def __init__(self, run: RunFile, peer_id: int, private_key: Any, out_dir: Path,
                 behaviour: ActionFn | None = None,
                 on_iteration: Callable[[IterationReport, PeerStateMachine], None] | None = None) -> None:
        self.run = run
        self.cfg = run.config
        self.peer_id = peer_id
        self.out_dir = Path(out_dir)
        self.key = self.cfg.genesis_hash()
        self.machine = PeerStateMachine(self.cfg, peer_id, self.key, behaviour=behaviour)
        dim = int(get_flat(self.machine.policy).numel())
        self.transport = PeerTransport(run, peer_id, private_key, dim)
        self.on_iteration = on_iteration
        self.stop_requested = threading.Event()
        self.metrics = PeerLog(self.out_dir / "metrics.csv")
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.trajectories = 0
        self.env_steps = 0

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

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

    def _exchange(self, key, vector) -> tuple[dict[int, np.ndarray], RoundStats]:
        if self.stop_requested.is_set():
            raise Stopped
        if key.phase == Phase.MODEL:  # ByzPG: only the server's parameters matter
            deadline = self.transport.deadline()
            if vector is not None:
                self.transport.broadcast(key, vector, deadline)
            expected = set() if self.peer_id == SERVER_ID else {SERVER_ID}
            return self.transport.collect(key, deadline, expected=expected, quorum=len(expected))
        return self.transport.exchange(key, vector)

    def run_iteration(self) -> None:
        t = self.machine.t
        self.transport.set_iteration(t)
        started = time.perf_counter()
        crypto_before = self.transport.crypto_seconds
        program = self.machine.iteration()
        stats: list[RoundStats] = []
        try:
            out = next(program)
            while True:
                received, round_stats = self._exchange(out.key, out.vector)
                stats.append(round_stats)
                out = program.send(received)
        except StopIteration as done:
            report: IterationReport = done.value
        self.trajectories += report.trajectories
        self.env_steps += report.env_steps
        latencies = [s.seconds * 1e3 for s in stats]
        self.metrics.add({
            "iteration": t, "trajectories_per_agent": self.trajectories,
            "return": f"{report.mean_return:.4f}" if report.trajectories else "",
            "x_t": int(report.large_batch), "env_steps": self.env_steps,
            "gradient_received": report.gradient_received,
            "agreement_diameter": f"{report.diameters[-1]:.6g}" if report.diameters else "",
            "agreement_kept_own": report.agreement_kept_own, "rounds": len(stats),
            "round_p50_ms": f"{statistics.median(latencies):.3f}" if latencies else "",
            "round_max_ms": f"{max(latencies):.3f}" if latencies else "",
            "rounds_timed_out": sum(s.timed_out for s in stats),
            # per-round latency, e.g. "g0:41.2 a0:1.9 a1:1.7": g = gradient, a = agreement, m = model
            "round_ms": " ".join(f"{s.key.phase.name[0].lower()}{s.key.round}:{s.seconds * 1e3:.3f}" for s in stats),
            "rejected": sum(self.transport.rejections.counts().values()),
            "equivocators": " ".join(str(i) for i in sorted(self.transport.store.equivocators())),
            "comm_seconds": f"{sum(s.seconds for s in stats):.4f}",
            "crypto_seconds": f"{self.transport.crypto_seconds - crypto_before:.4f}",
            "compute_seconds": f"{report.compute_seconds:.4f}",
            "seconds": f"{time.perf_counter() - started:.4f}",
        })
        save_checkpoint(self.checkpoint_path, {
            "run_id": self.run.run_id, "peer_id": self.peer_id, "machine": self.machine.state_dict(),
            "trajectories": self.trajectories, "env_steps": self.env_steps,
        })
        self.write_network_report()
        if self.on_iteration is not None:
            self.on_iteration(report, self.machine)

    def write_network_report(self) -> None:
        """network.json: rejections by reason, equivocators, evidence count (atomic)."""
        import json

        transport = self.transport
        atomic_write(self.out_dir / "network.json", json.dumps({
            "peer_id": self.peer_id, "iteration": self.machine.t, "accepted": transport.accepted,
            "rejected": transport.rejections.counts(), "equivocators": sorted(transport.store.equivocators()),
            "evidence": len(transport.store.evidence()),
        }, indent=2) + "\n", durable=False)

    def serve(self, bind: str | None = None, linger: float | None = None) -> int:
        """Run to the end of the trajectory budget; returns an exit status (0 = finished)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        total = iteration_count(self.cfg, self.key)
        self.transport.start(bind)
        log.info("peer %d serving; %d iterations planned, starting at %d", self.peer_id, total, self.machine.t)
        try:
            while self.machine.t < total:
                self.run_iteration()
            self.transport.finished = True
            self.transport.set_iteration(total)
            self.transport.linger(self.run.network.linger if linger is None else linger, self.stop_requested)
            return 0
        except Stopped:
            log.info("peer %d stopped at iteration %d; checkpoint kept", self.peer_id, self.machine.t)
            return 130
        finally:
            self.transport.stop()
            self.machine.sampler.close()
