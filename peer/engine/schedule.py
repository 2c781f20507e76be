"""The round schedule: which (iteration, phase, round) slots a run has, and who sends in each.

This module is the one owner of that knowledge.  The state machine iterates `rounds(t)`;
the wire validator admits only the (phase, round) shapes of `shape()`; the honest daemon
and the Byzantine daemon wait for `senders(key)` with `quorum(key)`.  Nothing else in the
project spells out which rounds exist.

Per iteration t of the four algorithms (x_t is the common coin, R the agreement rounds):
  DecByzPG, ByzPG-less decentralised methods:
    GRADIENT round 0 if x_t = 1 (or in every iteration with aggregation.every_iteration),
    then AGREEMENT rounds 0..R-1 unless agreement.rule = "none".
  ByzPG (a trusted server, peer SERVER_ID):
    GRADIENT round 0 if x_t = 1, then MODEL round 0, in which only the server sends.
  PAGE-PG (K = 1): the same rules; with no other peer nothing travels.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property

from peer.engine import randomness
from peer.engine.config import RunConfig

SERVER_ID = 0  # ByzPG's trusted server
# A sender proven to equivocate in iteration t_e (two validly signed, different messages for
# one slot) is left out of aggregation and agreement from iteration t_e + EXCLUSION_LAG on.
# The point depends only on the signed proof, so every honest peer that holds a proof of
# t_e by then excludes from the same iteration; the lag is the time the proof has to reach
# them (docs/PROTOCOL.md, "Equivocation").
EXCLUSION_LAG = 2


class Phase(enum.IntEnum):
    """What a round carries; the numbers are the wire values."""

    GRADIENT = 1  # batch gradient estimates (or v_t), aggregated robustly
    AGREEMENT = 2  # parameter vectors, averaged by the agreement rule (R rounds)
    MODEL = 3  # ByzPG only: the trusted server's parameters


@dataclass(frozen=True, order=True)
class RoundKey:
    """Identifies one all-to-all round: (iteration t, phase, agreement round r)."""

    iteration: int
    phase: Phase
    round: int = 0


@dataclass(frozen=True)
class RoundShape:
    """Which (phase, round) pairs can occur in some iteration of a run (no coin needed).

    The wire validator uses it to refuse a message for a slot that can never exist.
    """

    phases: frozenset[Phase]
    agreement_rounds: int

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a run has at least one phase")
        if Phase.AGREEMENT in self.phases and self.agreement_rounds < 1:
            raise ValueError(f"an agreement phase needs agreement_rounds >= 1 (got {self.agreement_rounds})")

    def admits(self, phase: int, round_index: int) -> bool:
        if phase not in {int(p) for p in self.phases}:
            return False
        if phase == Phase.AGREEMENT:
            return 0 <= round_index < self.agreement_rounds
        return round_index == 0


@dataclass(frozen=True)
class Schedule:
    """The rounds of every iteration of one run, derived from its configuration and genesis hash."""

    cfg: RunConfig
    genesis_hash: bytes

    @classmethod
    def of(cls, cfg: RunConfig, genesis_hash: bytes | None = None) -> Schedule:
        return cls(cfg, cfg.genesis_hash() if genesis_hash is None else genesis_hash)

    @property
    def centralized(self) -> bool:
        """ByzPG: a trusted server aggregates and sends the model."""
        return self.cfg.algorithm == "byzpg"

    @property
    def agreement_rounds(self) -> int:
        """R, the averaging-agreement rounds after each step (0 for rule "none" and for ByzPG)."""
        if self.centralized or self.cfg.agreement.rule == "none":
            return 0
        return self.cfg.agreement.rounds

    def is_large_batch(self, t: int) -> bool:
        """x_t: the common coin (x_0 = 1).  Every peer, honest or not, can compute it.

        With estimator.max_small_steps = m > 0, an iteration is also large when the m before
        it were all small: counted from the last coin that came up 1 (a), the forced ones are
        a + (m+1), a + 2(m+1), ...  Still a pure function of (genesis hash, t).
        """
        p = self.cfg.estimator.switch_prob
        if randomness.common_coin(self.genesis_hash, t, p):
            return True
        m = self.cfg.estimator.max_small_steps
        if m == 0:
            return False
        return (t - self._last_coin_at_or_before(t - 1)) % (m + 1) == 0

    @cached_property
    def _last_coin(self) -> dict[int, int]:
        return {}

    def _last_coin_at_or_before(self, t: int) -> int:
        """The last t' <= t whose coin came up 1 (0 at the latest: x_0 = 1), memoised."""
        unknown = []
        while t not in self._last_coin:
            if randomness.common_coin(self.genesis_hash, t, self.cfg.estimator.switch_prob):
                self._last_coin[t] = t
                break
            unknown.append(t)
            t -= 1
        for s in unknown:
            self._last_coin[s] = self._last_coin[t]
        return self._last_coin[t]

    def batch_size(self, t: int) -> int:
        """Trajectories a sampling peer draws in iteration t (N or B)."""
        return self.cfg.estimator.large_batch if self.is_large_batch(t) else self.cfg.estimator.small_batch

    @cached_property
    def iteration_count(self) -> int:
        """Iterations that fit in the trajectory budget without overshooting it."""
        used, t = 0, 0
        while used + self.batch_size(t) <= self.cfg.trajectories_per_agent:
            used += self.batch_size(t)
            t += 1
        return t

    def exchanges_gradient(self, t: int) -> bool:
        """Whether iteration t has a GRADIENT round."""
        return self.is_large_batch(t) or (self.cfg.aggregation.every_iteration and not self.centralized)

    def rounds(self, t: int) -> tuple[RoundKey, ...]:
        """The rounds of iteration t, in the order every peer goes through them."""
        keys = [RoundKey(t, Phase.GRADIENT)] if self.exchanges_gradient(t) else []
        if self.centralized:
            keys.append(RoundKey(t, Phase.MODEL))
        else:
            keys += [RoundKey(t, Phase.AGREEMENT, r) for r in range(self.agreement_rounds)]
        return tuple(keys)

    def shape(self) -> RoundShape:
        """The (phase, round) pairs some iteration of this run can have."""
        if self.centralized:
            return RoundShape(frozenset({Phase.GRADIENT, Phase.MODEL}), 0)
        if self.agreement_rounds > 0:
            return RoundShape(frozenset({Phase.GRADIENT, Phase.AGREEMENT}), self.agreement_rounds)
        return RoundShape(frozenset({Phase.GRADIENT}), 0)

    def senders(self, key: RoundKey) -> frozenset[int]:
        """The peers whose vector a round carries (every peer, except ByzPG's MODEL round: the server)."""
        if key.phase == Phase.MODEL:
            return frozenset({SERVER_ID})
        return frozenset(range(self.cfg.num_peers))

    def quorum(self, key: RoundKey) -> int:
        """Senders a round needs before it may close early (after the grace period).

        q = K - f of all peers for aggregated rounds (the receiver's own vector counts);
        all of them where only the server sends.
        """
        if key.phase == Phase.MODEL:
            return 1
        return self.cfg.num_peers - self.cfg.num_byzantine
