"""Runs K peers' state machines in one process, delivering messages in memory.

This is the in-process implementation of the exchange: every round it collects the
honest peers' broadcasts, lets the Byzantine coalition choose its messages having seen
them, and resumes each honest peer with the vectors addressed to it.  The daemon
replaces only this file's role; the state machines are the same objects.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator

import numpy as np

from adversary.coalition import Coalition
from peer.engine.config import RunConfig
from peer.engine.exchange import Broadcast
from peer.engine.metrics import IterationMetrics
from peer.engine.schedule import Schedule
from peer.engine.state_machine import IterationReport, PeerStateMachine
from peer.engine.vectors import diameter, pairwise_distances


def honest_diameter(vectors: list[np.ndarray]) -> float:
    """Largest distance between two honest peers' parameters (0 for one peer)."""
    return diameter(pairwise_distances(np.stack(vectors)))


class InProcessRun:
    """All peers of one configuration, advanced iteration by iteration."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.genesis_hash = cfg.genesis_hash()
        self.schedule = Schedule.of(cfg, self.genesis_hash)
        self.honest_ids = tuple(range(cfg.num_honest))
        self.peers = {k: PeerStateMachine(cfg, k, self.genesis_hash) for k in self.honest_ids}
        self.coalition = Coalition(cfg, self.genesis_hash)
        self.trajectories = 0
        self.env_steps = 0
        self.elapsed_seconds = 0.0  # wall time of all iterations so far, across resumptions

    @property
    def t(self) -> int:
        """The next iteration every honest peer will run."""
        return self.peers[self.honest_ids[0]].t

    def next_batch_size(self) -> int:
        return self.schedule.batch_size(self.t)

    def step(self) -> list[IterationReport]:
        """One iteration at every peer: run the programs round by round until all return."""
        programs = {k: peer.iteration() for k, peer in self.peers.items()}
        pending: dict[int, Broadcast] = {}
        reports: dict[int, IterationReport] = {}
        for k, program in programs.items():
            try:
                pending[k] = next(program)
            except StopIteration as done:  # an iteration with no communication at all
                reports[k] = done.value
        self.coalition.begin_iteration()
        while pending:
            current = {out.round_key for out in pending.values()}
            if len(current) != 1:
                raise RuntimeError(f"honest peers disagree on the round: {sorted(current)}")
            round_key = current.pop()
            honest = {k: out.vector for k, out in pending.items() if out.vector is not None}
            messages = self.coalition.round(round_key, honest, sorted(pending))
            for k in list(pending):
                received = {j: v for j, v in honest.items() if j != k}
                for byzantine, addressed in messages.items():
                    vector = addressed.get(k)
                    if vector is not None:
                        received[byzantine] = vector
                try:
                    pending[k] = programs[k].send(received)
                except StopIteration as done:
                    reports[k] = done.value
                    del pending[k]
        self.coalition.end_iteration()
        return [reports[k] for k in sorted(reports)]

    def iterate(self, budget: int, clock: Callable[[], float] = time.perf_counter) -> Iterator[IterationMetrics]:
        """Yield one metrics record per iteration until the next would exceed `budget` trajectories per agent."""
        started, before = clock(), self.elapsed_seconds
        while self.trajectories + self.next_batch_size() <= budget:  # never overshoot the budget
            began = clock()
            reports = self.step()
            lead = reports[0]  # peer 0: every peer's count in Dec*, the server's in ByzPG
            self.trajectories += lead.trajectories
            self.env_steps += sum(r.env_steps for r in reports)
            last_diameters = [r.diameters[-1] for r in reports if r.diameters]
            now = clock()
            self.elapsed_seconds = before + now - started
            yield IterationMetrics(
                iteration=lead.iteration,
                trajectories_per_agent=self.trajectories,
                x_t=int(lead.large_batch),
                peer_returns={r.peer_id: r.mean_return for r in reports if r.trajectories > 0},
                honest_diameter=honest_diameter([p.theta() for p in self.peers.values()]),
                agreement_diameter=max(last_diameters) if last_diameters else math.nan,
                agreement_fallbacks=sum(r.agreement_fallbacks for r in reports),
                gradient_received=min(r.gradient_received for r in reports),
                env_steps=self.env_steps,
                rounds=len(self.schedule.rounds(lead.iteration)),
                compute_seconds=sum(r.compute_seconds for r in reports),
                seconds=now - began,
                elapsed_seconds=self.elapsed_seconds,
            )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, taken between iterations (the streams are counter-based)."""
        return {"peers": {k: peer.state_dict() for k, peer in self.peers.items()},
                "coalition": self.coalition.state_dict(), "trajectories": self.trajectories,
                "env_steps": self.env_steps, "elapsed_seconds": self.elapsed_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, peer in self.peers.items():
            peer.load_state_dict(state["peers"][k])
        self.coalition.load_state_dict(state["coalition"])
        self.trajectories = int(state["trajectories"])
        self.env_steps = int(state["env_steps"])
        self.elapsed_seconds = float(state["elapsed_seconds"])

    def close(self) -> None:
        for peer in self.peers.values():
            peer.sampler.close()
        for shadow in self.coalition.shadows.values():
            shadow.sampler.close()
