"""Runs K peers' state machines in one process, delivering messages in memory.

This is the in-process implementation of the exchange: every round it collects the
honest peers' broadcasts, lets the Byzantine coalition choose its messages having seen
them, and resumes each honest peer with the vectors addressed to it.  The daemon
replaces only this file's role; the state machines are the same objects.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from adversary.coalition import Coalition
from peer.engine.agreement import pairwise_distances
from peer.engine.config import RunConfig
from peer.engine.exchange import Broadcast
from peer.engine.state_machine import IterationReport, PeerStateMachine, batch_size


@dataclass
class IterationRow:
    """One line of metrics.csv: the honest peers' view of one iteration."""

    iteration: int
    trajectories_per_agent: int
    honest_mean_return: float
    peer_returns: dict[int, float]
    honest_diameter: float
    agreement_kept_own: int
    x_t: int
    env_steps: int
    seconds: float
    compute_seconds: float
    reports: list[IterationReport] = field(repr=False, default_factory=list)


def honest_diameter(vectors: list[np.ndarray]) -> float:
    """Largest distance between two honest peers' parameters (0 for one peer)."""
    return float(pairwise_distances(np.stack(vectors)).max())


class InProcessRun:
    """All peers of one configuration, advanced iteration by iteration."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.key = cfg.genesis_hash()
        self.honest_ids = tuple(range(cfg.num_honest))
        self.peers = {k: PeerStateMachine(cfg, k, self.key) for k in self.honest_ids}
        self.coalition = Coalition(cfg, self.key)
        self.trajectories = 0
        self.env_steps = 0

    def next_batch_size(self) -> int:
        return batch_size(self.cfg, self.key, self.peers[self.honest_ids[0]].t)

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
            keys = {out.key for out in pending.values()}
            if len(keys) != 1:
                raise RuntimeError(f"honest peers disagree on the round: {sorted(keys)}")
            key = keys.pop()
            honest = {k: out.vector for k, out in pending.items() if out.vector is not None}
            messages = self.coalition.round(key, honest, sorted(pending))
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

    def iterate(self, budget: int, clock: Callable[[], float] = time.perf_counter) -> Iterator[IterationRow]:
        """Yield one row per iteration until the next would exceed `budget` trajectories per agent."""
        started = clock()
        while self.trajectories + self.next_batch_size() <= budget:  # never overshoot the budget
            reports = self.step()
            lead = reports[0]  # peer 0: every peer's count in Dec*, the server's in ByzPG
            self.trajectories += lead.trajectories
            self.env_steps += sum(r.env_steps for r in reports)
            returns = {r.peer_id: r.mean_return for r in reports if r.trajectories > 0}
            yield IterationRow(
                iteration=lead.iteration,
                trajectories_per_agent=self.trajectories,
                honest_mean_return=float(np.mean(list(returns.values()))) if returns else math.nan,
                peer_returns=returns,
                honest_diameter=honest_diameter([p.theta() for p in self.peers.values()]),
                agreement_kept_own=sum(r.agreement_kept_own for r in reports),
                x_t=int(lead.large_batch),
                env_steps=self.env_steps,
                seconds=clock() - started,
                compute_seconds=sum(r.compute_seconds for r in reports),
                reports=reports,
            )

    def close(self) -> None:
        for peer in self.peers.values():
            peer.sampler.close()
        for shadow in self.coalition.shadows.values():
            shadow.sampler.close()
