"""Policies: the optional output squash of the paper's Table 1."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from peer.engine.config import PolicyConfig
from peer.engine.policy import build_policy, get_flat

OBS = gym.spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32)
FOUR_ACTIONS = gym.spaces.Discrete(4)


def test_output_squash_keeps_theta_0_and_caps_every_action_probability() -> None:
    """tanh logits lie in [-1, 1], so with 4 actions no probability exceeds e / (e + 3/e)."""
    plain = build_policy(PolicyConfig(hidden=(64, 64), activation="tanh"), OBS, FOUR_ACTIONS, init_seed=7)
    squashed = build_policy(PolicyConfig(hidden=(64, 64), activation="tanh", output_activation="tanh"),
                            OBS, FOUR_ACTIONS, init_seed=7)
    assert torch.equal(get_flat(plain), get_flat(squashed))
    with torch.no_grad():  # make the plain policy all but deterministic: huge logits for action 0
        for policy in (plain, squashed):
            policy.net[-2 if policy is squashed else -1].bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    obs = torch.randn(256, 8)
    actions = torch.zeros(256, dtype=torch.long)
    cap = math.e / (math.e + 3 / math.e)
    assert plain.log_prob(obs, actions).exp().min() > 0.999
    top = squashed.log_prob(obs, actions).exp()
    assert top.max() <= cap + 1e-6 and top.min() > 0.4  # the others' logits are not all -1


def test_output_squash_bounds_a_gaussian_mean() -> None:
    policy = build_policy(PolicyConfig(hidden=(8,), activation="tanh", output_activation="tanh"),
                          OBS, gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32), init_seed=0)
    with torch.no_grad():
        policy.net[0].weight.mul_(1e3)
        mean = policy.net(torch.randn(64, 8) * 100)
    assert mean.abs().max() <= 1.0
