"""Configuration: defaults per environment, one-line errors naming the field, tolerance."""

from __future__ import annotations

import pytest

from peer.engine.config import (
    ConfigError,
    apply_override,
    build_config,
    byzantine_tolerance,
    load_toml,
    parse_override,
)


def test_defaults_follow_the_environment_and_algorithm() -> None:
    cart = build_config({})
    assert cart.policy.hidden == (16, 16) and cart.estimator.large_batch == 50 and cart.estimator.small_batch == 4
    lunar = build_config({"env": "LunarLander-v3", "num_byzantine": 0})
    assert lunar.policy.hidden == (64, 64) and lunar.policy.activation == "tanh"
    assert lunar.estimator.large_batch == 96 and lunar.optimizer.step_size == 1e-3
    naive = build_config({"algorithm": "dec-page-pg", "num_byzantine": 0})
    assert naive.aggregation.rule == "mean" and naive.agreement.rule == "none"
    paper = build_config({"preset": "paper", "num_byzantine": 0})
    assert paper.estimator.baseline is False and paper.estimator.importance == "trajectory"


@pytest.mark.parametrize("data, field", [
    ({"estimator": {"gamma": 1.5}}, "estimator.gamma"),
    ({"estimator": {"large_batch": 0}}, "estimator.large_batch"),
    ({"estimator": {"small_batch": "4"}}, "estimator.small_batch"),
    ({"estimator": {"switch_prob": -0.1}}, "estimator.switch_prob"),
    ({"estimator": {"importance": "full"}}, "estimator.importance"),
    ({"optimizer": {"step_size": 0}}, "optimizer.step_size"),
    ({"optimizer": {"step_size": float("nan")}}, "optimizer.step_size"),
    ({"policy": {"hidden": []}}, "policy.hidden"),
    ({"policy": {"activation": "gelu"}}, "policy.activation"),
    ({"policy": {"output_activation": "relu"}}, "policy.output_activation"),
    ({"aggregation": {"rule": "average"}}, "aggregation.rule"),
    ({"aggregation": {"rule": "rfa", "bucket_size": 1}}, "aggregation.bucket_size"),  # would be ignored
    ({"aggregation": {"rule": "bucketing+rfa", "bucket_size": 0}}, "aggregation.bucket_size"),
    ({"agreement": {"rule": "mdx"}}, "agreement.rule"),
    ({"agreement": {"rounds": -1}}, "agreement.rounds"),
    ({"env": "Pong-v5"}, "env"),
    ({"algorithm": "fedavg"}, "algorithm"),
    ({"num_peers": 0}, "num_peers"),
    ({"num_byzantine": 13}, "num_byzantine"),
    ({"seed": -1}, "seed"),
    ({"trajectories_per_agent": 0}, "trajectories_per_agent"),
    ({"trajectories_per_agent": 49}, "trajectories_per_agent"),  # below one large batch: would run nothing
    ({"estimator": {"gama": 0.9}}, "gama"),
    ({"colour": "red"}, "colour"),
    ({"allow_beyond_tolerance": "yes"}, "allow_beyond_tolerance"),
    ({"estimator": {"correction_clip": -1.0}}, "estimator.correction_clip"),
    ({"estimator": {"correction_clip": "1"}}, "estimator.correction_clip"),
    ({"estimator": {"drift_clip": -0.5}}, "estimator.drift_clip"),
    ({"estimator": {"drift_clip": float("inf")}}, "estimator.drift_clip"),
    ({"estimator": {"restart_ess": 1.5}}, "estimator.restart_ess"),
    ({"estimator": {"restart_ess": -0.1}}, "estimator.restart_ess"),
    ({"estimator": {"max_small_steps": -1}}, "estimator.max_small_steps"),
    ({"estimator": {"max_small_steps": 2.5}}, "estimator.max_small_steps"),
])
def test_invalid_values_name_their_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data)
    message = str(err.value)
    assert field in message and "\n" not in message


def test_byzantine_tolerance_bounds() -> None:
    assert byzantine_tolerance("decbyzpg", 13, "mda") == 3  # K >= 4f + 1
    assert byzantine_tolerance("decbyzpg", 13, "gda") == 2  # K >= 5f + 1
    assert byzantine_tolerance("byzpg", 13, "none") == 6  # f < K / 2
    assert byzantine_tolerance("dec-page-pg", 13, "none") == 0


def test_too_many_byzantines_refused_unless_overridden() -> None:
    with pytest.raises(ConfigError, match="exceeds what decbyzpg tolerates"):
        build_config({"num_byzantine": 4, "attack": {"name": "avg_zero"}})
    cfg = build_config({"num_byzantine": 4, "attack": {"name": "avg_zero"}, "allow_beyond_tolerance": True})
    assert cfg.num_byzantine == 4
    with pytest.raises(ConfigError, match="dec-page-pg"):
        build_config({"algorithm": "dec-page-pg", "num_byzantine": 3, "attack": {"name": "avg_zero"}})


def test_byzantines_need_an_attack() -> None:
    with pytest.raises(ConfigError, match="attack.name"):
        build_config({"num_byzantine": 1})


def test_overrides_parse_toml_values_and_bare_words() -> None:
    assert parse_override("estimator.switch_prob=0.3") == (["estimator", "switch_prob"], 0.3)
    assert parse_override("aggregation.rule=rfa") == (["aggregation", "rule"], "rfa")
    assert parse_override("policy.hidden=[32, 32]") == (["policy", "hidden"], [32, 32])
    data = apply_override({}, ["estimator", "gamma"], 0.9)
    assert build_config(data).estimator.gamma == 0.9
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("estimator.gamma")


def test_run_file_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("num_peers = = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(bad)


def test_genesis_hash_ignores_what_honest_peers_cannot_know() -> None:
    a = build_config({"num_byzantine": 3, "attack": {"name": "avg_zero"}})
    b = build_config({"num_byzantine": 2, "attack": {"name": "large_noise"}})
    c = build_config({"num_byzantine": 3, "attack": {"name": "avg_zero"}, "seed": 1})
    assert a.genesis_hash() == b.genesis_hash()
    assert a.genesis_hash() != c.genesis_hash()


def test_bucket_size_applies_only_behind_bucketing() -> None:
    assert build_config({"aggregation": {"rule": "bucketing+rfa", "bucket_size": 3}}).aggregation.bucket_size == 3
    assert build_config({"aggregation": {"rule": "rfa", "bucket_size": 2}}).aggregation.rule == "rfa"  # as written out


@pytest.mark.parametrize("data, field", [
    ({"num_byzantine": 1, "attack": {"name": "meteor"}}, "attack.name"),
    ({"num_byzantine": 0, "attack": {"name": "meteor"}}, "attack.name"),
    ({"num_byzantine": 1, "attack": {"name": "alie", "params": {"z": "abc"}}}, "attack.params.z"),
    ({"num_byzantine": 1, "attack": {"name": "alie", "params": {"zz": 1.0}}}, "zz"),
])
def test_in_process_configs_check_the_attack_before_anything_runs(data: dict, field: str) -> None:
    """The engine does not know attacks; `resolve_config` adds the adversary's check."""
    from peer.lab.configure import resolve_config

    build_config(data)  # the engine alone accepts any attack name and table
    with pytest.raises(ConfigError) as err:
        resolve_config(data)
    assert field in str(err.value) and "\n" not in str(err.value)


STABILISERS = {"correction_clip": 1.0, "drift_clip": 0.5, "restart_ess": 0.25, "max_small_steps": 3}


def test_stabilisers_are_hashed_only_when_on() -> None:
    """Off, a stabiliser is absent from the hashed config, so existing runs keep their genesis hash
    (and coin, theta_0, streams); on, peers that disagree on its value get different hashes."""
    default = build_config({})
    assert not set(STABILISERS) & set(default.to_dict()["estimator"])
    off = build_config({"estimator": {"correction_clip": 0.0, "drift_clip": 0, "restart_ess": 0, "max_small_steps": 0}})
    assert off.genesis_hash() == default.genesis_hash()
    hashes = {default.genesis_hash()}
    for key, value in STABILISERS.items():
        on = build_config({"estimator": {key: value}})
        assert on.to_dict()["estimator"][key] == value
        other = build_config({"estimator": {key: value * 2}})
        hashes |= {on.genesis_hash(), other.genesis_hash()}
    assert len(hashes) == 1 + 2 * len(STABILISERS)


def test_stabilisers_survive_the_written_config() -> None:
    """results/config.toml and run files are written from to_dict and read back with build_config."""
    cfg = build_config({"estimator": STABILISERS})
    assert build_config(cfg.to_dict()) == cfg
    assert build_config(build_config({}).to_dict()) == build_config({})


def test_output_squash_is_hashed_only_when_on() -> None:
    """policy.output_activation came after runs were measured: "none" leaves the hash as it was."""
    default = build_config({})
    assert "output_activation" not in default.to_dict()["policy"]
    assert build_config({"policy": {"output_activation": "none"}}).genesis_hash() == default.genesis_hash()
    squashed = build_config({"policy": {"output_activation": "tanh"}})
    assert squashed.genesis_hash() != default.genesis_hash()
    assert build_config(squashed.to_dict()) == squashed
