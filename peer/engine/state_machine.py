"""One peer's side of PAGE-PG / Dec-PAGE-PG / ByzPG / DecByzPG, as a sans-IO state machine.

`PeerStateMachine.iteration()` is a generator: it samples, estimates, and yields a
`Broadcast` at every communication point, resuming with what the others sent (see
`peer.engine.exchange`).  It never touches a socket, a clock or a global RNG, so the in-process
experiments and the gRPC daemon run exactly the same arithmetic and, given the same
messages, produce bit-identical parameters.

Algorithm 2 (DecByzPG) at peer k, iteration t:
  x_t = common coin (x_0 = 1)
  x_t = 1: sample N at theta_t^k, broadcast g^k, v_t^k = Aggregate(received + own)
  x_t = 0: sample B, v_t^k = v_{t-1}^k + PAGE correction (local, no messages)
  theta~ = Adam step along v_t^k;  theta_{t+1}^k = AvgAgree_R(theta~)
ByzPG (Algorithm 1) puts peer 0 in the trusted server's place: workers only sample in
large-batch iterations and adopt the server's parameters after every iteration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generator

import numpy as np
import torch

from peer.engine import estimators, randomness
from peer.engine.aggregators import make_aggregator, uses_bucketing
from peer.engine.agreement import make_agreement
from peer.engine.config import RunConfig
from peer.engine.exchange import Broadcast, Received
from peer.engine.policy import build_policy, get_flat, set_flat
from peer.engine.sampling import ActionFn, Sampler
from peer.engine.schedule import EXCLUSION_LAG, SERVER_ID, Phase, Schedule


@dataclass
class IterationReport:
    """What one peer did in one iteration; the experiment log is built from these."""

    peer_id: int
    iteration: int
    large_batch: bool
    trajectories: int = 0
    env_steps: int = 0
    mean_return: float = float("nan")
    gradient_received: int = 0
    diameters: list[float] = field(default_factory=list)
    agreement_fallbacks: int = 0  # agreement rounds with fewer than q vectors: own vector kept
    restarted: bool = False  # estimator.restart_ess: this small-batch step restarted the recursion
    excluded: int = 0  # proven equivocators left out of this iteration
    compute_seconds: float = 0.0


class PeerStateMachine:
    """The learning state of one peer and the program that advances it by one iteration."""

    def __init__(self, cfg: RunConfig, peer_id: int, genesis_hash: bytes, behaviour: ActionFn | None = None,
                 sampler: Sampler | None = None) -> None:
        if not 0 <= peer_id < cfg.num_peers:
            raise ValueError(f"peer id {peer_id} outside 0..{cfg.num_peers - 1}")
        torch.set_num_threads(1)  # tiny MLPs: threads only add contention between peers
        self.cfg = cfg
        self.peer_id = peer_id
        self.genesis_hash = genesis_hash
        self.schedule = Schedule.of(cfg, genesis_hash)
        self.sampler = sampler or Sampler(cfg.env, cfg.estimator.horizon)
        init_seed = randomness.torch_seed(genesis_hash, "theta0")
        self.policy = build_policy(cfg.policy, self.sampler.observation_space, self.sampler.action_space, init_seed)
        # The previous iterate lives in a second module so the correction can differentiate at it.
        self.prev_policy = build_policy(cfg.policy, self.sampler.observation_space,
                                        self.sampler.action_space, init_seed)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.optimizer.step_size)
        self.behaviour: ActionFn = behaviour or self.policy.act
        self._aggregators: dict[int, Any] = {}  # by the Byzantine bound in force (f less the excluded)
        self.aggregator = self._aggregator_for(cfg.num_byzantine)
        self.agreement = make_agreement(cfg.agreement.rule)
        self.t = 0
        self.prev_theta: torch.Tensor | None = None  # parameters the last batch was sampled at
        self.v: torch.Tensor | None = None  # v_{t-1}
        # v_L, v after the last large-batch iteration (or restart): the correction and drift clips' reference
        self.anchor: torch.Tensor | None = None
        # sender -> first iteration it is left out of (proven equivocators; see exclude())
        self.excluded: dict[int, int] = {}
        self._left_out: frozenset[int] = frozenset()  # excluded_at(t) of the iteration running

    # ------------------------------------------------------------------ exclusion of proven equivocators
    def exclude(self, sender: int, proven_at: int) -> int:
        """Leave `sender` out from iteration proven_at + EXCLUSION_LAG on; returns that iteration.

        `proven_at` is the iteration of a verified equivocation proof (the caller checks the
        proof: the engine does no cryptography).  The earliest proof wins, so peers that
        learn of several proofs in any order agree.  Excluding e senders lowers K and f
        together: aggregation runs with the bound f - e over the K - e others, and the
        agreement quorum K - f is unchanged, so a configuration within the tolerance stays
        within it.  Iterations already run are not revisited.
        """
        if sender == self.peer_id or not 0 <= sender < self.cfg.num_peers:
            raise ValueError(f"peer {self.peer_id} cannot exclude {sender}")
        start = proven_at + EXCLUSION_LAG
        self.excluded[sender] = min(start, self.excluded.get(sender, start))
        return self.excluded[sender]

    def excluded_at(self, t: int) -> frozenset[int]:
        """The senders left out of iteration t."""
        return frozenset(s for s, start in self.excluded.items() if start <= t)

    def _aggregator_for(self, bound: int) -> Any:
        if bound not in self._aggregators:
            rule = self.cfg.aggregation.rule
            bucketing = {"bucket_size": self.cfg.aggregation.bucket_size} if uses_bucketing(rule) else {}
            self._aggregators[bound] = make_aggregator(rule, bound, **bucketing)
        return self._aggregators[bound]

    # ------------------------------------------------------------------ role helpers
    @property
    def centralized(self) -> bool:
        return self.schedule.centralized

    @property
    def is_server(self) -> bool:
        return self.centralized and self.peer_id == SERVER_ID

    def theta(self) -> np.ndarray:
        return get_flat(self.policy).numpy()


    # ------------------------------------------------------------------ the program
    def iteration(self) -> Generator[Broadcast, Received, IterationReport]:
        """Advance by one iteration; yields a Broadcast per round of `schedule.rounds(t)`, returns a report."""
        t = self.t
        large = self.schedule.is_large_batch(t)
        if not large and self.v is None:
            raise RuntimeError(f"iteration {t} is a small-batch step but no v_(t-1) exists (missing checkpoint?)")
        report = IterationReport(self.peer_id, t, large)
        self._left_out = self.excluded_at(t)  # fixed for the whole iteration
        report.excluded = len(self._left_out)
        started = time.perf_counter()
        theta_t = get_flat(self.policy)
        v = self._local_estimate(t, large, report)
        stepped = False
        y = None  # the agreement iterate
        for round_key in self.schedule.rounds(t):
            if round_key.phase == Phase.GRADIENT:
                report.compute_seconds += time.perf_counter() - started
                received = yield Broadcast(round_key, v.numpy().astype(np.float32))
                started = time.perf_counter()
                if not self.centralized or self.is_server:
                    v = self._aggregate(v.numpy(), received, t, report)
                    if not large and not report.restarted and self.cfg.estimator.drift_clip > 0:
                        # aggregated in a small-batch step (aggregation.every_iteration): the
                        # trust region holds for what is used, so Byzantine vectors cannot
                        # carry v further from v_L than honest noise could
                        v = self._clip_drift(v, t)
                # a ByzPG worker keeps its own estimate; the server's model replaces the result
                continue
            if not stepped:
                self._commit_step(theta_t, v)
                stepped = True
                report.compute_seconds += time.perf_counter() - started
            if round_key.phase == Phase.MODEL:
                received = yield Broadcast(round_key, self.theta() if self.is_server else None)
                if not self.is_server and SERVER_ID in received:
                    set_flat(self.policy, received[SERVER_ID])
            else:  # AGREEMENT round r
                y = self.theta() if y is None else y
                received = yield Broadcast(round_key, y.astype(np.float32))
                started = time.perf_counter()
                result = self.agreement(y, self._with_own(y, received), self.schedule.quorum(round_key))
                y = result.vector.astype(np.float32)
                report.diameters.append(float(result.diameter))
                report.agreement_fallbacks += int(result.fell_back)
                report.compute_seconds += time.perf_counter() - started
        if not stepped:
            self._commit_step(theta_t, v)
            report.compute_seconds += time.perf_counter() - started
        if y is not None:
            set_flat(self.policy, y)
        if large or report.restarted:
            self.anchor = self.v.clone()
        self.t = t + 1
        return report

    def _local_estimate(self, t: int, large: bool, report: IterationReport) -> torch.Tensor:
        """v_t before any exchange: GPOMDP on N trajectories, or v_{t-1} + the PAGE correction on B."""
        if large:
            batch = self._sample(self.cfg.estimator.large_batch, t, report)
            return estimators.gpomdp(self.policy, batch, self.cfg.estimator)
        if self.centralized and not self.is_server:
            return self.v  # ByzPG workers idle in small-batch iterations
        e = self.cfg.estimator
        batch = self._sample(e.small_batch, t, report)
        set_flat(self.prev_policy, self.prev_theta)
        if e.restart_ess > 0 and estimators.trajectory_ess_fraction(self.policy, self.prev_policy, batch) < e.restart_ess:
            # The weights no longer carry theta_(t-1)'s distribution: start the recursion afresh from
            # a local large batch (no exchange, so the round schedule is unchanged).
            report.restarted = True
            return estimators.gpomdp(self.policy, self._sample(e.large_batch, t, report, "restart"), e)
        correction = estimators.page_correction(self.policy, self.prev_policy, batch, e)
        if e.correction_clip == 0 and e.drift_clip == 0:
            return self.v + correction
        if self.anchor is None:
            raise RuntimeError(f"iteration {t}: the clips need v of the last large batch (missing checkpoint?)")
        anchor_norm = float(self.anchor.norm())
        if e.correction_clip > 0:
            correction = estimators.cap_norm(correction, e.correction_clip * anchor_norm)
        v = self.v + correction
        return self._clip_drift(v, t) if e.drift_clip > 0 else v

    def _clip_drift(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """v_L + cap(v - v_L, drift_clip ||v_L||): the recursion's trust region around its anchor."""
        if self.anchor is None:
            raise RuntimeError(f"iteration {t}: the clips need v of the last large batch (missing checkpoint?)")
        limit = self.cfg.estimator.drift_clip * float(self.anchor.norm())
        drift = v - self.anchor
        if float(drift.norm()) > limit:  # else v as it is (no rounding)
            v = self.anchor + estimators.cap_norm(drift, limit)
        return v

    def _commit_step(self, theta_t: torch.Tensor, v: torch.Tensor) -> None:
        """Remember where this iteration sampled and its v_t, and take the Adam step along v_t."""
        self.prev_theta = theta_t
        self.v = v
        self._ascent_step(v)

    # ------------------------------------------------------------------ internals
    def _sample(self, n: int, t: int, report: IterationReport, purpose: str = "sample") -> Any:
        """n trajectories at theta_t from the peer's stream for (purpose, t); the report counts every batch."""
        rng = randomness.stream(self.genesis_hash, purpose, self.peer_id, t)
        batch = self.sampler.sample(n, self.behaviour, rng)
        if report.trajectories:  # a restart's batch: the mean over both
            report.mean_return = ((report.mean_return * report.trajectories + float(batch.episode_returns.sum()))
                                  / (report.trajectories + n))
        else:
            report.mean_return = float(batch.episode_returns.mean())
        report.trajectories += n
        report.env_steps += batch.env_steps
        return batch

    def _aggregate(self, own: np.ndarray, received: Received, t: int, report: IterationReport) -> torch.Tensor:
        vectors = self._with_own(own, received)
        report.gradient_received = len(vectors)
        rng = randomness.stream(self.genesis_hash, "aggregate", self.peer_id, t)
        aggregator = (self._aggregator_for(max(0, self.cfg.num_byzantine - len(self._left_out)))
                      if self._left_out else self.aggregator)
        return torch.from_numpy(aggregator(vectors, rng).astype(np.float32))

    def _with_own(self, own: np.ndarray, received: Received) -> np.ndarray:
        """Own vector plus the others', ordered by sender id (the aggregators' contract);
        excluded senders' vectors are dropped."""
        rows = {sender: vec for sender, vec in received.items()
                if sender != self.peer_id and sender not in self._left_out}
        rows[self.peer_id] = own
        return np.stack([np.asarray(rows[s], dtype=np.float32) for s in sorted(rows)])

    def _ascent_step(self, v: torch.Tensor) -> None:
        """Adam step with -v as the loss gradient (v is an ascent direction)."""
        direction = v.clone()
        limit = self.cfg.optimizer.max_grad_norm
        if limit > 0:
            norm = float(direction.norm())
            if norm > limit:
                direction *= limit / norm
        offset = 0
        for p in self.policy.parameters():
            n = p.numel()
            p.grad = -direction[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume after a restart (the coin and streams are counter-based)."""
        return {
            "t": self.t,
            "theta": get_flat(self.policy),
            "prev_theta": self.prev_theta,
            "v": self.v,
            "anchor": self.anchor,
            "excluded": dict(self.excluded),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        set_flat(self.policy, state["theta"])
        self.prev_theta = state["prev_theta"]
        self.v = state["v"]
        self.anchor = state.get("anchor")  # absent in checkpoints older than the clips
        self.excluded = {int(s): int(start) for s, start in state.get("excluded", {}).items()}
        self.optimizer.load_state_dict(state["optimizer"])
