"""Run configuration: one TOML file, CLI overrides on top, validated field by field.

Every value a user can set is checked here, once, so the learning code can trust its
inputs and a mistake surfaces as a one-line message naming the field instead of a
traceback deep inside torch.  Defaults depend on the environment (the paper's Table 1),
so a run file only needs to say what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from peer.engine.aggregators import (
    AGGREGATOR_NAMES,
    DEFAULT_BUCKET_SIZE,
    uses_bucketing,
)
from peer.engine.agreement import AGREEMENT_NAMES
from peer.engine.errors import ConfigError
from peer.engine.fields import as_bool, as_choice, as_float, as_int, check_keys, invalid

ALGORITHMS = ("decbyzpg", "dec-page-pg", "byzpg", "page-pg")
ACTIVATIONS = ("relu", "tanh")
OUTPUT_ACTIVATIONS = ("none", "tanh")
IMPORTANCE_MODES = ("trajectory", "per_decision")


# Environment presets.  "paper" is Table 1 of the paper; "tuned" keeps the paper's
# batch sizes and switching probability but uses the estimator settings chosen by
# measurement (docs/TUNING.md): a leave-one-out baseline, per-decision weights, the drift
# clip and forced large batches, and v_t aggregated in every iteration.
ENV_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "CartPole-v1": {
        "policy": {"hidden": [16, 16], "activation": "relu"},
        "optimizer": {"step_size": 5e-3},
        "estimator": {"gamma": 0.999, "horizon": 500, "large_batch": 50, "small_batch": 4},
    },
    "LunarLander-v3": {
        "policy": {"hidden": [64, 64], "activation": "tanh"},
        "optimizer": {"step_size": 1e-3},
        "estimator": {"gamma": 0.999, "horizon": 1000, "large_batch": 96, "small_batch": 32},
    },
    "Pendulum-v1": {
        "policy": {"hidden": [64, 64], "activation": "tanh"},
        "optimizer": {"step_size": 1e-3},
        "estimator": {"gamma": 0.99, "horizon": 200, "large_batch": 50, "small_batch": 10},
    },
    "LunarLanderContinuous-v3": {
        "policy": {"hidden": [64, 64], "activation": "tanh"},
        "optimizer": {"step_size": 1e-3},
        "estimator": {"gamma": 0.999, "horizon": 1000, "large_batch": 96, "small_batch": 32},
    },
}

# Any other gymnasium id runs with these stated defaults (docs/ALGORITHM.md), its horizon taken
# from the environment's own time limit; the policy is sized from its spaces.
GENERIC_PRESET: dict[str, dict[str, Any]] = {
    "policy": {"hidden": [64, 64], "activation": "tanh"},
    "optimizer": {"step_size": 1e-3},
    "estimator": {"gamma": 0.99, "large_batch": 50, "small_batch": 10},
}
GENERIC_HORIZON = 1000  # when the environment declares no time limit


def env_preset(env_id: Any) -> dict[str, dict[str, Any]]:
    """The defaults for `env_id`: the paper's preset, or the generic one for any other usable gymnasium id.

    "Usable" means registered, with a flat Box observation and a Discrete or 1-D Box action
    space (what the policies support); anything else is a one-line ConfigError.
    """
    if env_id in ENV_PRESETS:
        return ENV_PRESETS[env_id]
    if not isinstance(env_id, str) or not env_id:
        raise invalid("env", "a gymnasium environment id", env_id)
    import gymnasium as gym  # only for ids beyond the presets: keeps plain config loading light

    try:
        spec = gym.spec(env_id)
        env = gym.make(env_id)
    except Exception as err:  # unknown id, missing extra (e.g. box2d), broken environment
        raise ConfigError(f"config error: env {env_id!r} cannot be made: {str(err).splitlines()[0]}") from None
    try:
        observation, action = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(observation, gym.spaces.Box) or len(observation.shape) != 1:
        raise invalid("env", "an environment with a flat Box observation space", f"{env_id}: {observation}")
    if not (isinstance(action, gym.spaces.Discrete) or (isinstance(action, gym.spaces.Box) and len(action.shape) == 1)):
        raise invalid("env", "an environment with a Discrete or 1-D Box action space", f"{env_id}: {action}")
    horizon = spec.max_episode_steps or GENERIC_HORIZON
    return deep_merge(GENERIC_PRESET, {"estimator": {"horizon": horizon}})


# "tuned", the default, is the dataclass defaults below (their one owner: it adds nothing);
# "paper" turns every addition to the paper's estimator and Algorithm 2 off.  The
# stabilisers and every-iteration aggregation joined "tuned" in engine revision 2's stop 13
# (docs/TUNING.md, "The default"); a run measured before that is reproduced with
# --set aggregation.every_iteration=false --set estimator.drift_clip=0 --set estimator.max_small_steps=0.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"estimator": {"baseline": False, "importance": "trajectory", "drift_clip": 0.0, "max_small_steps": 0},
              "aggregation": {"every_iteration": False}},
    "tuned": {},
}


# The baselines differ from DecByzPG only in these rules (a run file may still override them).
ALGORITHM_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "decbyzpg": {},
    "dec-page-pg": {"aggregation": {"rule": "mean", "every_iteration": True},
                    "agreement": {"rule": "none", "rounds": 0}},
    # PAGE-PG aggregates only large batches; aggregating every iteration would make it Dec-PAGE-PG
    "page-pg": {"aggregation": {"rule": "mean", "every_iteration": False}, "agreement": {"rule": "none", "rounds": 0}},
    "byzpg": {"agreement": {"rule": "none", "rounds": 0}},
}


@dataclass(frozen=True)
class PolicyConfig:
    hidden: tuple[int, ...] = (16, 16)
    activation: str = "relu"
    init_log_std: float = -0.5  # Gaussian policies only
    # "tanh" squashes the output layer as the paper's policies do (its Table 1): logits in
    # [-1, 1] cap an action's probability (0.881 with 2 actions, 0.711 with 4), which keeps
    # exploring.  Off by default: CartPole's 500 needs a near-deterministic policy.
    output_activation: str = "none"


@dataclass(frozen=True)
class OptimizerConfig:
    step_size: float = 5e-3
    max_grad_norm: float = 0.0  # 0 disables clipping of v before the Adam step


@dataclass(frozen=True)
class EstimatorConfig:
    gamma: float = 0.999
    horizon: int = 500
    large_batch: int = 50
    small_batch: int = 4
    switch_prob: float = 0.2
    baseline: bool = True
    importance: str = "per_decision"
    log_weight_clip: float = 0.0  # 0 = no truncation of log importance weights
    # Stabilisers of the PAGE recursion (issue #14); each is off at 0 and then left out of
    # the genesis hash (HASHED_WHEN_SET), so runs that do not use them keep their hash.
    # drift_clip and max_small_steps are on by default ("tuned"); the paper preset turns them off.
    correction_clip: float = 0.0  # lambda > 0: ||correction|| <= lambda * ||v_L|| (v_L: v after the last large batch)
    drift_clip: float = 0.5  # rho > 0: ||v_t - v_L|| <= rho * ||v_L||, v_t kept in a ball around v_L
    restart_ess: float = 0.0  # r > 0: a small batch whose whole-trajectory weights have ESS/B < r is replaced
    #                           by a local large batch (GPOMDP on N fresh trajectories): the recursion restarts
    max_small_steps: int = 8  # m > 0: x_t = 1 after m small-batch iterations in a row (common to all peers)


# Options added after runs had been measured, with their "off" values.  RunConfig.to_dict
# (and so the genesis hash) leaves such an option out while it is off: a configuration that
# does not use it hashes exactly as before the option existed, so its coin, theta_0 and
# streams, and every number measured with it, are unchanged.  Set to anything else, it is
# hashed like every other field, and peers given different values cannot mix.  Files
# (results/config.toml, run files) are written with every option (to_dict(explicit=True)):
# once the default turned some of these on, a missing one would be ambiguous.  Files
# written before that omit options that were off; `recorded_data` reads them back as such.
HASHED_WHEN_SET: dict[str, dict[str, Any]] = {
    "policy": {"output_activation": "none"},
    "estimator": {"correction_clip": 0.0, "drift_clip": 0.0, "restart_ess": 0.0, "max_small_steps": 0},
}


@dataclass(frozen=True)
class AggregationConfig:
    rule: str = "rfa"
    bucket_size: int = DEFAULT_BUCKET_SIZE  # only bucketing+<rule> reads it
    # Also exchange and aggregate v_t in small-batch iterations.  On by default: honest
    # peers then take identical steps, so agreement has no spread for a Byzantine point to
    # hide in (docs/TUNING.md).  Off in the paper preset (Algorithm 2: small-batch steps are
    # local) and for PAGE-PG; on for the Dec-PAGE-PG baseline in both presets: without
    # agreement it is the only way its peers stay together (the authors' code did this for
    # every method).
    every_iteration: bool = True


@dataclass(frozen=True)
class AgreementConfig:
    rule: str = "mda"
    rounds: int = 3


@dataclass(frozen=True)
class AttackConfig:
    """In-process Byzantine behaviour.  Honest peers never read this section."""

    name: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    env: str = "CartPole-v1"
    algorithm: str = "decbyzpg"
    preset: str = "tuned"
    num_peers: int = 13
    num_byzantine: int = 0
    allow_beyond_tolerance: bool = False
    seed: int = 0
    trajectories_per_agent: int = 5000
    policy: PolicyConfig = PolicyConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    aggregation: AggregationConfig = AggregationConfig()
    agreement: AgreementConfig = AgreementConfig()
    attack: AttackConfig = AttackConfig()

    @property
    def num_honest(self) -> int:
        return self.num_peers - self.num_byzantine

    @property
    def byzantine_ids(self) -> tuple[int, ...]:
        """Byzantine peers take the highest ids, so honest ids are 0..num_honest-1."""
        return tuple(range(self.num_honest, self.num_peers))

    def to_dict(self, explicit: bool = False) -> dict[str, Any]:
        """The configuration as TOML-shaped data: the hashed form, or with `explicit` every option (for files)."""
        data = dataclasses.asdict(self)
        for section, options in HASHED_WHEN_SET.items():
            for name, off in options.items():
                if data[section][name] == off and not explicit:
                    del data[section][name]
        data["attack"]["params"] = dict(self.attack.params)
        data["policy"]["hidden"] = list(self.policy.hidden)
        return data

    def genesis_hash(self) -> bytes:
        """Hash of everything that defines the run except the Byzantine behaviour.

        The common coin, the initial parameters and every per-peer random stream are
        keyed by it, so two peers agree on them iff they were given the same run.
        The attack section is excluded: honest peers do not know it.
        """
        data = self.to_dict()
        data.pop("attack")
        data.pop("num_byzantine")
        data.pop("allow_beyond_tolerance")
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"decbyzpg-genesis-v1\0" + blob).digest()


def byzantine_tolerance(algorithm: str, num_peers: int, agreement_rule: str) -> int:
    """Largest f for which the paper's guarantees hold.

    DecByzPG with MDA needs K >= 4f+1, with GDA K >= 5f+1 (El-Mhamdi et al.); ByzPG with a
    robust aggregator tolerates f < K/2; the non-robust baselines tolerate none.
    """
    if algorithm == "decbyzpg":
        divisor = 5 if agreement_rule == "gda" else 4
        return (num_peers - 1) // divisor
    if algorithm == "byzpg":
        return (num_peers - 1) // 2
    return 0


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "params":
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


SECTIONS = ("policy", "optimizer", "estimator", "aggregation", "agreement", "attack")
TOP_KEYS = {f.name for f in dataclasses.fields(RunConfig)} - set(SECTIONS)


def recorded_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration file this project wrote, as data for build_config.

    Files written before stop 13 of engine revision 2 left out every HASHED_WHEN_SET option
    that was off; such an absence means off, not today's default (which turned drift_clip
    and max_small_steps on).  Files written since carry every option, so this changes nothing
    for them.  Not for run files a user writes: there a missing option means the default.
    """
    filled = {section: dict(options) for section, options in HASHED_WHEN_SET.items()}
    return deep_merge(filled, data)


def build_config(data: Mapping[str, Any], in_process: bool = True) -> RunConfig:
    """Validate a nested mapping (TOML layout) into a RunConfig, filling env defaults.

    `in_process=False` is for the daemon's run file, where num_byzantine is only the bound
    f that honest peers assume and no attack is simulated.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("config error: the run file must be a TOML table")
    check_keys("", data, TOP_KEYS | set(SECTIONS))
    for section in SECTIONS:
        if section in data and not isinstance(data[section], Mapping):
            raise invalid(section, "a table", data[section])
    env = data.get("env", RunConfig.env)
    env_defaults = env_preset(env)
    preset = as_choice("preset", data.get("preset", RunConfig.preset), tuple(PRESETS))
    algorithm = as_choice("algorithm", data.get("algorithm", RunConfig.algorithm), ALGORITHMS)
    merged = env_defaults
    for layer in (PRESETS[preset], ALGORITHM_PRESETS[algorithm], data):
        merged = deep_merge(merged, layer)

    def section(name: str, cls: type) -> dict[str, Any]:
        raw = dict(merged.get(name, {}))
        check_keys(name, raw, {f.name for f in dataclasses.fields(cls)})
        return raw

    p = section("policy", PolicyConfig)
    hidden = p.get("hidden", list(PolicyConfig.hidden))
    if not isinstance(hidden, (list, tuple)) or not hidden or not all(
        isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 4096 for h in hidden
    ):
        raise invalid("policy.hidden", "a non-empty list of layer widths between 1 and 4096", hidden)
    policy = PolicyConfig(
        hidden=tuple(hidden),
        activation=as_choice("policy.activation", p.get("activation", PolicyConfig.activation), ACTIVATIONS),
        init_log_std=as_float("policy.init_log_std", p.get("init_log_std", PolicyConfig.init_log_std), -10, 10),
        output_activation=as_choice("policy.output_activation",
                                    p.get("output_activation", PolicyConfig.output_activation), OUTPUT_ACTIVATIONS),
    )
    o = section("optimizer", OptimizerConfig)
    optimizer = OptimizerConfig(
        step_size=as_float("optimizer.step_size", o.get("step_size", OptimizerConfig.step_size), 0, 10, low_open=True),
        max_grad_norm=as_float("optimizer.max_grad_norm", o.get("max_grad_norm", OptimizerConfig.max_grad_norm), 0),
    )
    e = section("estimator", EstimatorConfig)
    d = EstimatorConfig()
    estimator = EstimatorConfig(
        gamma=as_float("estimator.gamma", e.get("gamma", d.gamma), 0, 1, low_open=True),
        horizon=as_int("estimator.horizon", e.get("horizon", d.horizon), 1),
        large_batch=as_int("estimator.large_batch", e.get("large_batch", d.large_batch), 1),
        small_batch=as_int("estimator.small_batch", e.get("small_batch", d.small_batch), 1),
        switch_prob=as_float("estimator.switch_prob", e.get("switch_prob", d.switch_prob), 0, 1),
        baseline=as_bool("estimator.baseline", e.get("baseline", d.baseline)),
        importance=as_choice("estimator.importance", e.get("importance", d.importance), IMPORTANCE_MODES),
        log_weight_clip=as_float("estimator.log_weight_clip", e.get("log_weight_clip", d.log_weight_clip), 0),
        correction_clip=as_float("estimator.correction_clip", e.get("correction_clip", d.correction_clip), 0),
        drift_clip=as_float("estimator.drift_clip", e.get("drift_clip", d.drift_clip), 0),
        restart_ess=as_float("estimator.restart_ess", e.get("restart_ess", d.restart_ess), 0, 1),
        max_small_steps=as_int("estimator.max_small_steps", e.get("max_small_steps", d.max_small_steps), 0),
    )
    a = section("aggregation", AggregationConfig)
    aggregation = AggregationConfig(
        rule=as_choice("aggregation.rule", a.get("rule", AggregationConfig.rule), tuple(AGGREGATOR_NAMES)),
        bucket_size=as_int("aggregation.bucket_size", a.get("bucket_size", DEFAULT_BUCKET_SIZE), 1),
        every_iteration=as_bool("aggregation.every_iteration", a.get("every_iteration", AggregationConfig.every_iteration)),
    )
    if aggregation.bucket_size != DEFAULT_BUCKET_SIZE and not uses_bucketing(aggregation.rule):
        # the field is always written out (as its default), so only a changed value is an error
        raise ConfigError(
            f"config error: aggregation.bucket_size = {aggregation.bucket_size} has no effect with rule "
            f"{aggregation.rule!r}; it applies to bucketing+<rule> (e.g. rule = \"bucketing+{aggregation.rule}\")"
        )
    g = section("agreement", AgreementConfig)
    agreement = AgreementConfig(
        rule=as_choice("agreement.rule", g.get("rule", AgreementConfig.rule), tuple(AGREEMENT_NAMES)),
        rounds=as_int("agreement.rounds", g.get("rounds", AgreementConfig.rounds), 0),
    )
    t = section("attack", AttackConfig)
    params = t.get("params", {})
    if not isinstance(params, Mapping):
        raise invalid("attack.params", "a table", params)
    name = t.get("name", AttackConfig.name)
    if not isinstance(name, str) or not name:
        raise invalid("attack.name", "an attack name", name)
    # Which names and parameters exist is the adversary's business (the engine does not
    # know attacks): `adversary.attacks.check_attack` validates them for in-process runs.
    attack = AttackConfig(name=name, params=dict(params))

    num_peers = as_int("num_peers", merged.get("num_peers", RunConfig.num_peers), 1)
    num_byzantine = as_int("num_byzantine", merged.get("num_byzantine", RunConfig.num_byzantine), 0)
    if algorithm == "page-pg" and num_peers != 1:
        raise invalid("num_peers", "1 for page-pg (the single-agent method)", num_peers)
    if num_byzantine >= num_peers:
        raise invalid("num_byzantine", f"smaller than num_peers ({num_peers}): at least one peer must be honest",
                    num_byzantine)
    if in_process and num_byzantine > 0 and attack.name == "none":
        raise ConfigError(
            "config error: attack.name must name an attack when num_byzantine > 0 (got 'none'); "
            "use num_byzantine = 0 for an attack-free run"
        )
    allow = as_bool("allow_beyond_tolerance", merged.get("allow_beyond_tolerance", RunConfig.allow_beyond_tolerance))
    tolerance = byzantine_tolerance(algorithm, num_peers, agreement.rule)
    if num_byzantine > tolerance and not allow:
        raise ConfigError(
            f"config error: num_byzantine = {num_byzantine} exceeds what {algorithm} tolerates with "
            f"{num_peers} peers (at most {tolerance}); set allow_beyond_tolerance = true "
            "(--allow-beyond-tolerance) to run it anyway as an experiment"
        )
    budget = as_int("trajectories_per_agent", merged.get("trajectories_per_agent", RunConfig.trajectories_per_agent), 1)
    if budget < estimator.large_batch:
        # the first iteration is always a large batch: a smaller budget would run nothing
        raise ConfigError(
            f"config error: trajectories_per_agent = {budget} is below one large batch "
            f"(estimator.large_batch = {estimator.large_batch}); nothing would run"
        )
    return RunConfig(
        env=env,
        algorithm=algorithm,
        preset=preset,
        num_peers=num_peers,
        num_byzantine=num_byzantine,
        allow_beyond_tolerance=allow,
        seed=as_int("seed", merged.get("seed", RunConfig.seed), 0),
        trajectories_per_agent=budget,
        policy=policy,
        optimizer=optimizer,
        estimator=estimator,
        aggregation=aggregation,
        agreement=agreement,
        attack=attack,
    )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax problems into one-line ConfigErrors."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config error: run file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config error: {path}: invalid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"config error: cannot read {path}: {err.strerror}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse a `--set section.key=value` override; the value is read as a TOML value."""
    if "=" not in text:
        raise ConfigError(f"config error: --set expects KEY=VALUE (got {text!r})")
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"config error: --set key {key!r} is not a dotted name")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words such as rfa or CartPole-v1 are strings
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Return a copy of `data` with the dotted `path` set to `value`."""
    out = dict(data)
    node = out
    for part in path[:-1]:
        child = node.get(part, {})
        if not isinstance(child, Mapping):
            raise ConfigError(f"config error: {'.'.join(path)}: {part!r} is not a section")
        node[part] = dict(child)
        node = node[part]
    node[path[-1]] = value
    return out
