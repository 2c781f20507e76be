"""Byzantine attacks: what the f colluding Byzantine peers send in one round.

The adversary is the paper's strongest: omniscient and rushing (it sees every honest
vector of the round before choosing its own), colluding (one `Attack` object decides for
all Byzantine peers), and free to send different vectors to different honest peers or
nothing at all.  An attack returns, per Byzantine sender, a map receiver -> vector (a
missing receiver or None means silence towards it).

Which exchange each attack acts on (`phases`, overridable with the `phases` parameter):
  random_action   both; it lies only in how it samples: uniform actions, honest protocol
  large_noise     gradient (default) or both; i.i.d. U[-scale, scale] entries
  avg_zero        gradient; -(sum of honest vectors)/f, so the plain mean is ~0
  sign_flip       both; -scale * honest mean
  alie            both; mean - z * std per coordinate ("a little is enough")
  ipm             both; -epsilon * honest mean (inner-product manipulation)
  mimic           both; copies one honest peer's vector (over-weights it)
  equivocation    both; mean +/- spread * direction to two halves of the honest peers
  mda_fooling     agreement; a vector just inside the honest ball in a fixed direction
  drag            agreement; just inside the honest ball, against the last honest mean gradient
  creep           both; z honest standard deviations per coordinate along one fixed sign pattern
  overshoot       agreement; just inside the honest ball, further along the honest peers' last step
  dissensus       agreement; pushes one half of the honest peers away from the rest, silent to the rest
  silence         both; sends nothing
  late_delivery   both; blends in, `delay` seconds late (over the wire); in process: silence
In the phases an attack does not act on, Byzantine peers send the honest mean, so they are
indistinguishable from honest peers there.  random_action is the exception: its peers
run the honest state machine (`needs_shadow`) and send what it computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

from peer.engine.agreement import pairwise_distances
from peer.engine.mda import mda_select
from peer.engine.config import RunConfig
from peer.engine.errors import ConfigError
from peer.engine.schedule import Phase, RoundKey

Messages = dict[int, dict[int, np.ndarray | None]]  # byzantine id -> receiver -> vector


PHASE_NAMES = {"gradient": Phase.GRADIENT, "agreement": Phase.AGREEMENT}
"""How a run file names the phases an attack acts on (`attack.params.phases`)."""


@dataclass(frozen=True)
class RoundView:
    """What the omniscient adversary knows when it chooses its messages for one round."""

    round_key: RoundKey
    honest: Mapping[int, np.ndarray]  # honest sender -> vector (this round)
    receivers: Sequence[int]  # honest peers that listen
    byzantine_ids: Sequence[int]
    own: Mapping[int, np.ndarray]  # shadow vectors of protocol-following Byzantines
    rng: np.random.Generator


class Attack:
    """Base class: parameter checking, phase selection and the blend-in default."""

    name = "abstract"
    default_phases: tuple[Phase, ...] = (Phase.GRADIENT, Phase.AGREEMENT)
    params_spec: dict[str, type] = {}
    needs_shadow = False
    memory: tuple[str, ...] = ()  # attributes it remembers across rounds (kept in in-process checkpoints)

    def __init__(self, **params: Any) -> None:
        spec = {**self.params_spec, "phases": list}
        for param, value in params.items():
            if param not in spec:
                valid = ", ".join(sorted(spec)) or "none"
                raise ConfigError(f"config error: attack.params: unknown parameter {param!r} for {self.name} (valid: {valid})")
            if spec[param] is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, spec[param]) or isinstance(value, bool) != (spec[param] is bool):
                raise ConfigError(f"config error: attack.params.{param} must be {spec[param].__name__} (got {value!r})")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"config error: attack.params.{param} must be finite (got {value!r})")
            setattr(self, param, value)
        if "phases" in params:
            names = params["phases"]
            if not names or not all(name in PHASE_NAMES for name in names):
                raise ConfigError("config error: attack.params.phases must list 'gradient' and/or 'agreement' "
                                  f"(got {names!r})")
            self.phases = frozenset(PHASE_NAMES[name] for name in names)
        else:
            self.phases = frozenset(self.default_phases)

    def acts_on(self, round_key: RoundKey) -> bool:
        # ByzPG's model round is its parameter exchange: attacks on agreement act on it too
        exchanged = Phase.GRADIENT if round_key.phase == Phase.GRADIENT else Phase.AGREEMENT
        return exchanged in self.phases

    def messages(self, view: RoundView) -> Messages:
        if not view.honest:
            return {b: {} for b in view.byzantine_ids}
        if not self.acts_on(view.round_key):
            return self.blend_in(view)
        return self.craft(view)

    def blend_in(self, view: RoundView) -> Messages:
        mean = _stack(view.honest).mean(0).astype(np.float32)
        return _same_to_all(view, {b: mean for b in view.byzantine_ids})

    def craft(self, view: RoundView) -> Messages:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What the attack remembers across rounds (`memory`), for an in-process checkpoint."""
        return {name: getattr(self, name) for name in self.memory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output."""
        for name in self.memory:
            setattr(self, name, state[name])


class AgreementPush(Attack):
    """Base of the agreement attacks that push the honest centre one way: one vector per slot,
    at `_agreement_point` along `direction`, sent to the `addressed` honest peers (all, unless
    overridden); they blend in until they know a direction, and in gradient rounds."""

    default_phases = (Phase.AGREEMENT,)
    params_spec = {"fraction": float, "fit": bool}
    fraction = 0.95
    fit = True

    def direction(self, view: RoundView) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def addressed(self, view: RoundView) -> Sequence[int]:
        return view.receivers

    def craft(self, view: RoundView) -> Messages:
        direction = None if view.round_key.phase == Phase.GRADIENT else self.direction(view)
        if direction is None:
            return self.blend_in(view)
        vec = _agreement_point(_stack(view.honest), direction, self.fraction, self.fit,
                               len(view.byzantine_ids)).astype(np.float32)
        return {b: {r: vec for r in self.addressed(view)} for b in view.byzantine_ids}


def _stack(vectors: Mapping[int, np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(vectors[k], dtype=np.float64) for k in sorted(vectors)])


def _same_to_all(view: RoundView, per_sender: Mapping[int, np.ndarray | None]) -> Messages:
    return {b: {r: per_sender[b] for r in view.receivers} for b in view.byzantine_ids}


class RandomAction(Attack):
    """Fan et al.'s attack: act uniformly at random, otherwise follow the protocol."""

    name = "random_action"
    needs_shadow = True

    def messages(self, view: RoundView) -> Messages:
        return _same_to_all(view, {b: view.own.get(b) for b in view.byzantine_ids})


class LargeNoise(Attack):
    name = "large_noise"
    default_phases = (Phase.GRADIENT,)
    params_spec = {"scale": float}
    scale = 1000.0

    def craft(self, view: RoundView) -> Messages:
        dim = len(next(iter(view.honest.values())))
        return _same_to_all(view, {
            b: view.rng.uniform(-self.scale, self.scale, dim).astype(np.float32) for b in view.byzantine_ids
        })


class AvgZero(Attack):
    """Each Byzantine sends -(sum of honest)/f: the mean of all K vectors becomes 0."""

    name = "avg_zero"
    default_phases = (Phase.GRADIENT,)

    def craft(self, view: RoundView) -> Messages:
        f = len(view.byzantine_ids)
        vec = (-_stack(view.honest).sum(0) / f).astype(np.float32)
        return _same_to_all(view, {b: vec for b in view.byzantine_ids})


class ALIE(Attack):
    """Baruch et al. 2019: shift every coordinate by z standard deviations, staying in-distribution."""

    name = "alie"
    params_spec = {"z": float}
    z: float | None = None

    def craft(self, view: RoundView) -> Messages:
        honest = _stack(view.honest)
        z = self.z
        if z is None:  # the paper's z_max for n peers and f Byzantines
            n, f = len(view.receivers) + len(view.byzantine_ids), len(view.byzantine_ids)
            s = math.floor(n / 2 + 1) - f
            z = NormalDist().inv_cdf(min(max((n - s) / n, 0.5), 0.999))
        vec = (honest.mean(0) - z * honest.std(0)).astype(np.float32)
        return _same_to_all(view, {b: vec for b in view.byzantine_ids})


class IPM(Attack):
    """Xie et al. 2020: -epsilon times the honest mean, to make the inner product negative."""

    name = "ipm"
    params_spec = {"epsilon": float}
    epsilon = 0.1

    def craft(self, view: RoundView) -> Messages:
        vec = (-self.epsilon * _stack(view.honest).mean(0)).astype(np.float32)
        return _same_to_all(view, {b: vec for b in view.byzantine_ids})


class SignFlip(IPM):
    """The honest mean with its sign flipped: IPM at epsilon = `scale` (1 by default), kept under
    its own name because the literature (and the matrix) treat it as an attack of its own."""

    name = "sign_flip"
    params_spec = {"scale": float}
    scale = 1.0

    @property
    def epsilon(self) -> float:  # type: ignore[override]
        return self.scale


class Mimic(Attack):
    """Karimireddy et al. 2022: all Byzantines repeat one honest peer, over-weighting it."""

    name = "mimic"
    params_spec = {"target": int}
    target: int | None = None

    def craft(self, view: RoundView) -> Messages:
        target = self.target if self.target in view.honest else min(view.honest)
        vec = np.asarray(view.honest[target], dtype=np.float32)
        return _same_to_all(view, {b: vec for b in view.byzantine_ids})


def _unit_direction(dim: int, seed: int) -> np.ndarray:
    direction = np.random.default_rng(seed).standard_normal(dim)
    return direction / np.linalg.norm(direction)


def _honest_diameter(honest: np.ndarray) -> float:
    return float(pairwise_distances(honest).max())


FIT_STEPS = 12  # bisection steps of a fitted shift: 2 * diameter / 4096 resolution


def _agreement_point(honest: np.ndarray, direction: np.ndarray, fraction: float, fit: bool,
                     copies: int) -> np.ndarray:
    """Where the Byzantine peers place their one agreement vector: the honest centre moved
    along the unit `direction`.

    Without `fit`, by `fraction` of the honest diameter.  With it, by the largest shift (up
    to twice the diameter) for which MDA, run as every honest peer runs it (the honest
    vectors plus `copies` copies of the point, q = the number of honest vectors), still
    picks a set that contains the point: a far point is simply left out, so the best
    point is as far as MDA tolerates, which depends on how the honest vectors spread.
    """
    centre = honest.mean(0)
    diameter = _honest_diameter(honest)
    if not fit or diameter == 0 or copies == 0:
        return centre + fraction * diameter * direction
    q = len(honest)
    lo, hi = 0.0, 2.0 * diameter
    for _ in range(FIT_STEPS):
        mid = (lo + hi) / 2
        rows = np.vstack([honest, np.repeat((centre + mid * direction)[None], copies, axis=0)])
        chosen, _ = mda_select(rows, q)
        if chosen[-1] >= q:  # a Byzantine copy is in the chosen set
            lo = mid
        else:
            hi = mid
    return centre + lo * direction


class Equivocation(Attack):
    """Send mean + s*u to one half of the honest peers and mean - s*u to the other half.

    The aim is to pull honest peers apart; s is `spread` times the honest diameter (or
    times the mean norm when the honest vectors coincide).
    """

    name = "equivocation"
    params_spec = {"spread": float, "seed": int}
    spread = 1.0
    seed = 1

    def craft(self, view: RoundView) -> Messages:
        honest = _stack(view.honest)
        mean = honest.mean(0)
        size = _honest_diameter(honest) or float(np.linalg.norm(mean)) * 0.1 or 1.0
        shift = self.spread * size * _unit_direction(honest.shape[1], self.seed)
        receivers = sorted(view.receivers)
        half = set(receivers[: len(receivers) // 2])
        up, down = (mean + shift).astype(np.float32), (mean - shift).astype(np.float32)
        return {b: {r: (up if r in half else down) for r in receivers} for b in view.byzantine_ids}


class MDAFooling(Attack):
    """Sit just inside the honest ball in one fixed direction, so MDA keeps the Byzantines
    in its minimum-diameter set and the average drifts that way round after round."""

    name = "mda_fooling"
    default_phases = (Phase.AGREEMENT,)
    params_spec = {"fraction": float, "seed": int}
    fraction = 0.95
    seed = 2

    def craft(self, view: RoundView) -> Messages:
        honest = _stack(view.honest)
        centre = honest.mean(0)
        radius = _honest_diameter(honest)
        vec = (centre + self.fraction * radius * _unit_direction(honest.shape[1], self.seed)).astype(np.float32)
        return _same_to_all(view, {b: vec for b in view.byzantine_ids})


class Drag(AgreementPush):
    """MDA-fooling aimed backwards: sit just inside the honest ball on the side that undoes
    the honest peers' progress.

    It remembers the honest mean gradient of the last large-batch round (where it blends
    in) and, in agreement rounds, sends the honest centre moved against that gradient's
    direction, as far as MDA still keeps it (`fit`, the default) or by `fraction` of the
    honest diameter (`fit = false`).  No single vector is an outlier, MDA keeps
    the Byzantines in its minimum-diameter set, and every agreement round averages a small
    step against the ascent direction into every honest peer's parameters, most of all in
    the small-batch iterations, when nothing is aggregated.  Written for issue #14 part 3
    (an adversary who knows the rules and the coin).
    """

    name = "drag"
    memory = ("ascent",)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.ascent: np.ndarray | None = None  # unit direction of the last honest mean gradient

    def messages(self, view: RoundView) -> Messages:
        if view.honest and view.round_key.phase == Phase.GRADIENT:
            mean = _stack(view.honest).mean(0)
            norm = float(np.linalg.norm(mean))
            if norm > 0:
                self.ascent = mean / norm
        return super().messages(view)

    def direction(self, view: RoundView) -> np.ndarray | None:
        return None if self.ascent is None else -self.ascent


def _signs(dim: int, seed: int) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random(dim) < 0.5, -1.0, 1.0)


class Creep(Attack):
    """A bias too small for any round to reveal, that never changes direction.

    Every coordinate sits `z` honest standard deviations from the honest mean, on the side a
    fixed sign pattern says, in every round.  Each vector is inside the honest spread, so
    robust aggregation keeps part of it; what it keeps always points the same way.  Adam
    normalises each coordinate by its own gradient scale, so in coordinates whose honest
    gradients average out, a constant bias becomes a full-size step.  Written for issue #14
    part 3 ("small consistent biases that no single round reveals").
    """

    name = "creep"
    params_spec = {"z": float, "seed": int}
    z = 1.0
    seed = 3

    def craft(self, view: RoundView) -> Messages:
        honest = _stack(view.honest)
        bias = self.z * honest.std(0) * _signs(honest.shape[1], self.seed)
        return _same_to_all(view, {b: (honest.mean(0) + bias).astype(np.float32) for b in view.byzantine_ids})


class Overshoot(AgreementPush):
    """Agreement rounds: further along the honest peers' last step, as far as MDA keeps it (`fit`).

    It looks helpful (it points where the honest peers are going), but it lengthens
    theta_t - theta_(t-1), the step the next small-batch iteration's importance weights must
    bridge, which is what degenerates the PAGE recursion.  The step is the honest centre of
    an iteration's first agreement round minus the last round's centre of the iteration
    before.  Written for issue #14 part 3 (an attack that adapts to the small-batch steps).
    """

    name = "overshoot"
    memory = ("iteration", "centre", "step")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.iteration: int | None = None  # of the last agreement round seen
        self.centre: np.ndarray | None = None  # its honest centre
        self.step: np.ndarray | None = None  # unit direction of the honest peers' last step

    def messages(self, view: RoundView) -> Messages:
        if view.honest and view.round_key.phase == Phase.AGREEMENT:
            centre = _stack(view.honest).mean(0)
            if self.centre is not None and view.round_key.iteration != self.iteration:
                move = centre - self.centre
                norm = float(np.linalg.norm(move))
                self.step = move / norm if norm > 0 else None
            out = super().messages(view)
            self.iteration, self.centre = view.round_key.iteration, centre
            return out
        return super().messages(view)

    def direction(self, view: RoundView) -> np.ndarray | None:
        return self.step


class Dissensus(AgreementPush):
    """Keep the honest peers apart without ever equivocating: talk to one half at a time.

    He, Karimireddy and Jaggi (2022) pull neighbours of a gossip graph in different
    directions.  With signed all-to-all rounds a second version is a proof, so this
    adversary sends each slot's one vector to one half of the honest peers only and
    nothing to the other half, alternating the halves round by round.  The vector sits as far
    from the honest centre as MDA keeps it (`fit`; else `fraction` of the honest diameter),
    on the side of the addressed half's own centre, so that half's average moves away from
    the rest while the silent half's does not: the received sets differ, so honest peers that would
    have computed identical averages no longer do.  Nothing it sends is invalid or
    conflicting (a cross-check relays the vector to the silent half after the round closed,
    when it is no longer used).  Written for issue #14 part 3.
    """

    name = "dissensus"
    params_spec = {**AgreementPush.params_spec, "seed": int}
    seed = 4

    def addressed(self, view: RoundView) -> Sequence[int]:
        parity = (view.round_key.iteration + view.round_key.round) % 2
        return sorted(view.receivers)[parity::2]  # alternate halves, interleaved by id

    def direction(self, view: RoundView) -> np.ndarray:
        """From the honest centre towards the addressed half's own centre."""
        half = set(self.addressed(view))
        honest = _stack(view.honest)
        addressed = {k: v for k, v in view.honest.items() if k in half}
        away = _stack(addressed).mean(0) - honest.mean(0) if addressed else np.zeros(honest.shape[1])
        norm = float(np.linalg.norm(away))
        return away / norm if norm > 0 else _unit_direction(honest.shape[1], self.seed)


class Silence(Attack):
    name = "silence"

    def craft(self, view: RoundView) -> Messages:
        return {b: {} for b in view.byzantine_ids}


class LateDelivery(Attack):
    """Blend in, but `delay` seconds late: after honest peers' grace period has closed the
    round, so the message only costs them the wait.  In process there is no clock, so a
    late message is one that misses its round: the same as silence."""

    name = "late_delivery"
    params_spec = {"delay": float}
    delay = 1.0

    def craft(self, view: RoundView) -> Messages:
        return {b: {} for b in view.byzantine_ids}

    def wire_messages(self, view: RoundView) -> Messages:
        return self.blend_in(view)


ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (RandomAction, LargeNoise, AvgZero, SignFlip, ALIE, IPM, Mimic, Equivocation, MDAFooling, Drag,
                Creep, Overshoot, Dissensus, Silence, LateDelivery)
}
ATTACK_NAMES = ("none", *ATTACKS)


def make_attack(name: str, params: Mapping[str, Any] | None = None) -> Attack:
    if name not in ATTACKS:
        raise ConfigError(f"config error: attack.name must be one of {', '.join(ATTACKS)} (got {name!r})")
    return ATTACKS[name](**dict(params or {}))


def check_attack(cfg: RunConfig) -> RunConfig:
    """Validate an in-process configuration's attack (name and parameters) before anything runs.

    The engine's config treats the attack as an opaque name and table; only this package knows
    which exist.  Returns `cfg` so callers can write `check_attack(build_config(data))`.
    """
    if cfg.num_byzantine > 0:
        make_attack(cfg.attack.name, cfg.attack.params)
    elif cfg.attack.name not in ATTACK_NAMES:
        raise ConfigError(f"config error: attack.name must be one of {', '.join(ATTACK_NAMES)} "
                          f"(got {cfg.attack.name!r})")
    return cfg
