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

from peer.engine import estimators

from peer.engine import randomness
from peer.engine.aggregators import make_aggregator
from peer.engine.agreement import make_agreement
from peer.engine.config import RunConfig
from peer.engine.exchange import Broadcast, Phase, Received, RoundKey
from peer.engine.policy import build_policy, get_flat, set_flat
from peer.engine.sampling import ActionFn, Sampler

SERVER_ID = 0  # ByzPG's trusted server


def is_large_batch(cfg: RunConfig, key: bytes, t: int) -> bool:
    """x_t: the common coin (x_0 = 1).  Every peer, honest or not, can compute it."""
    return randomness.common_coin(key, t, cfg.estimator.switch_prob)


def batch_size(cfg: RunConfig, key: bytes, t: int) -> int:
    """Trajectories peer 0 samples in iteration t (N or B; ByzPG's server likewise)."""
    return cfg.estimator.large_batch if is_large_batch(cfg, key, t) else cfg.estimator.small_batch


def iteration_count(cfg: RunConfig, key: bytes) -> int:
    """Iterations that fit in the trajectory budget without overshooting it."""
    used, t = 0, 0
    while used + batch_size(cfg, key, t) <= cfg.trajectories_per_agent:
        used += batch_size(cfg, key, t)
        t += 1
    return t


def round_keys(cfg: RunConfig, key: bytes, t: int) -> list[RoundKey]:
    """The rounds of iteration t, in the order `PeerStateMachine.iteration` yields them.

    Byzantine daemons, which do not run the learning program, use this to know which
    rounds exist; a test checks it against the program itself.
    """
    exchanges = is_large_batch(cfg, key, t) or (cfg.aggregation.every_iteration and cfg.algorithm != "byzpg")
    keys = [RoundKey(t, Phase.GRADIENT)] if exchanges else []
    if cfg.algorithm == "byzpg":
        keys.append(RoundKey(t, Phase.MODEL))
    elif cfg.agreement.rule != "none":
        keys += [RoundKey(t, Phase.AGREEMENT, r) for r in range(cfg.agreement.rounds)]
    return keys


def phases_used(cfg: RunConfig) -> set[Phase]:
    """The phases a run's messages may carry (anything else is rejected on the wire)."""
    if cfg.algorithm == "byzpg":
        return {Phase.GRADIENT, Phase.MODEL}
    if cfg.agreement.rule != "none" and cfg.agreement.rounds > 0:
        return {Phase.GRADIENT, Phase.AGREEMENT}
    return {Phase.GRADIENT}


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
    agreement_kept_own: int = 0
    compute_seconds: float = 0.0


class PeerStateMachine:
    """The learning state of one peer and the program that advances it by one iteration."""

    def __init__(self, cfg: RunConfig, peer_id: int, key: bytes, behaviour: ActionFn | None = None,
                 sampler: Sampler | None = None) -> None:
        if not 0 <= peer_id < cfg.num_peers:
            raise ValueError(f"peer id {peer_id} outside 0..{cfg.num_peers - 1}")
        torch.set_num_threads(1)  # tiny MLPs: threads only add contention between peers
        self.cfg = cfg
        self.peer_id = peer_id
        self.key = key
        self.sampler = sampler or Sampler(cfg.env, cfg.estimator.horizon)
        init_seed = randomness.torch_seed(key, "theta0")
        self.policy = build_policy(cfg.policy, self.sampler.observation_space, self.sampler.action_space, init_seed)
        # The previous iterate lives in a second module so the correction can differentiate at it.
        self.prev_policy = build_policy(cfg.policy, self.sampler.observation_space,
                                        self.sampler.action_space, init_seed)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.optimizer.step_size)
        self.behaviour: ActionFn = behaviour or self.policy.act
        bucket = {"bucket_size": cfg.aggregation.bucket_size} if cfg.aggregation.rule.startswith("bucketing+") else {}
        self.aggregator = make_aggregator(cfg.aggregation.rule, cfg.num_byzantine, **bucket)
        self.agreement = make_agreement(cfg.agreement.rule)
        self.t = 0
        self.prev_theta: torch.Tensor | None = None  # parameters the last batch was sampled at
        self.v: torch.Tensor | None = None  # v_{t-1}

    # ------------------------------------------------------------------ role helpers
    @property
    def centralized(self) -> bool:
        return self.cfg.algorithm == "byzpg"

    @property
    def is_server(self) -> bool:
        return self.centralized and self.peer_id == SERVER_ID

    def theta(self) -> np.ndarray:
        return get_flat(self.policy).numpy()

    def coin(self, t: int) -> bool:
        return is_large_batch(self.cfg, self.key, t)

    # ------------------------------------------------------------------ the program
    def iteration(self) -> Generator[Broadcast, Received, IterationReport]:
        """Advance by one iteration; yields Broadcasts, returns this peer's report."""
        t = self.t
        large = self.coin(t)
        if not large and self.v is None:
            raise RuntimeError(f"iteration {t} is a small-batch step but no v_(t-1) exists (missing checkpoint?)")
        report = IterationReport(self.peer_id, t, large)
        started = time.perf_counter()
        theta_t = get_flat(self.policy)

        if large:
            batch = self._sample(self.cfg.estimator.large_batch, t, report)
            g = estimators.gpomdp(self.policy, batch, self.cfg.estimator)
            report.compute_seconds += time.perf_counter() - started
            received = yield Broadcast(RoundKey(t, Phase.GRADIENT), g.numpy().astype(np.float32))
            started = time.perf_counter()
            if not self.centralized or self.is_server:
                v = self._aggregate(g.numpy(), received, t, report)
            else:
                v = g  # a worker's own estimate; replaced by the server's model below
        elif not self.centralized or self.is_server:
            batch = self._sample(self.cfg.estimator.small_batch, t, report)
            set_flat(self.prev_policy, self.prev_theta)
            v = self.v + estimators.page_correction(self.policy, self.prev_policy, batch, self.cfg.estimator)
            if self.cfg.aggregation.every_iteration and not self.centralized:
                report.compute_seconds += time.perf_counter() - started
                received = yield Broadcast(RoundKey(t, Phase.GRADIENT), v.numpy().astype(np.float32))
                started = time.perf_counter()
                v = self._aggregate(v.numpy(), received, t, report)
        else:
            v = self.v  # ByzPG workers idle in small-batch iterations

        self.prev_theta = theta_t
        self.v = v
        self._ascent_step(v)
        report.compute_seconds += time.perf_counter() - started

        if self.centralized:
            own = self.theta() if self.is_server else None
            received = yield Broadcast(RoundKey(t, Phase.MODEL), own)
            if not self.is_server and SERVER_ID in received:
                set_flat(self.policy, received[SERVER_ID])
        elif self.cfg.agreement.rule != "none" and self.cfg.agreement.rounds > 0:
            y = self.theta()
            q = self.cfg.num_peers - self.cfg.num_byzantine
            for r in range(self.cfg.agreement.rounds):
                received = yield Broadcast(RoundKey(t, Phase.AGREEMENT, r), y.astype(np.float32))
                started = time.perf_counter()
                result = self.agreement(y, self._with_own(y, received), q)
                y = result.vector.astype(np.float32)
                report.diameters.append(float(result.diameter))
                report.agreement_kept_own += int(not result.kept)
                report.compute_seconds += time.perf_counter() - started
            set_flat(self.policy, y)
        self.t = t + 1
        return report

    # ------------------------------------------------------------------ internals
    def _sample(self, n: int, t: int, report: IterationReport) -> Any:
        rng = randomness.stream(self.key, "sample", self.peer_id, t)
        batch = self.sampler.sample(n, self.behaviour, rng)
        report.trajectories = n
        report.env_steps = batch.env_steps
        report.mean_return = float(batch.episode_returns.mean())
        return batch

    def _aggregate(self, own: np.ndarray, received: Received, t: int, report: IterationReport) -> torch.Tensor:
        vectors = self._with_own(own, received)
        report.gradient_received = len(vectors)
        rng = randomness.stream(self.key, "aggregate", self.peer_id, t)
        return torch.from_numpy(self.aggregator(vectors, rng).astype(np.float32))

    def _with_own(self, own: np.ndarray, received: Received) -> np.ndarray:
        """Own vector plus the others', ordered by sender id (the aggregators' contract)."""
        rows = {sender: vec for sender, vec in received.items() if sender != self.peer_id}
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
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        set_flat(self.policy, state["theta"])
        self.prev_theta = state["prev_theta"]
        self.v = state["v"]
        self.optimizer.load_state_dict(state["optimizer"])
