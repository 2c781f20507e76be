"""Policies: a categorical MLP (the paper's) and a Gaussian MLP for continuous actions.

Both expose the two things the estimators need: a batched `log_prob(obs, actions)` that is
differentiable in the parameters, and a batched, no-grad `act(obs, rng)` for sampling.
Sampling draws its randomness from a numpy generator handed in by the caller, so a
peer's trajectories are reproducible from its own seeded stream and never touch torch's
global RNG.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from peer.engine.config import PolicyConfig
from peer.engine.errors import ConfigError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _mlp(sizes: list[int], cfg: PolicyConfig) -> nn.Sequential:
    """Linear layers with cfg.activation between them and cfg.output_activation after the last.

    The output squash has no parameters, so theta_0 and the flat layout are the same with or
    without it.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[cfg.activation]())
    if cfg.output_activation != "none":
        layers.append(_ACTIVATIONS[cfg.output_activation]())
    return nn.Sequential(*layers)


class CategoricalPolicy(nn.Module):
    """Plain logits by default; `output_activation = "tanh"` restores the paper's squashed ones."""

    discrete = True

    def __init__(self, obs_dim: int, num_actions: int, cfg: PolicyConfig) -> None:
        super().__init__()
        self.net = _mlp([obs_dim, *cfg.hidden, num_actions], cfg)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logits = self.net(obs)
        return torch.log_softmax(logits, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probs = torch.softmax(self.net(torch.as_tensor(obs, dtype=torch.float32)), dim=-1).numpy()
        # Inverse-CDF sampling with the caller's generator: one uniform per row.
        cdf = np.cumsum(probs.astype(np.float64), axis=-1)
        u = rng.random(len(cdf))[:, None] * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(axis=-1), probs.shape[-1] - 1)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian with a state-independent log std; actions are clipped only for the env."""

    discrete = False

    def __init__(self, obs_dim: int, action_dim: int, cfg: PolicyConfig) -> None:
        super().__init__()
        self.net = _mlp([obs_dim, *cfg.hidden, action_dim], cfg)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(cfg.init_log_std)))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean = self.net(obs)
        log_std = self.log_std.expand_as(mean)
        z = (actions - mean) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = self.net(torch.as_tensor(obs, dtype=torch.float32)).numpy().astype(np.float64)
        std = np.exp(self.log_std.numpy().astype(np.float64))
        return (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)


Policy = CategoricalPolicy | GaussianPolicy


def build_policy(cfg: PolicyConfig, observation_space: gym.Space, action_space: gym.Space,
                 init_seed: int) -> Policy:
    """Build a policy whose initial weights depend only on `init_seed` (the common theta_0)."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"config error: env: only flat Box observations are supported (got {observation_space})")
    obs_dim = observation_space.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if isinstance(action_space, gym.spaces.Discrete):
            return CategoricalPolicy(obs_dim, int(action_space.n), cfg)
        if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            return GaussianPolicy(obs_dim, action_space.shape[0], cfg)
    raise ConfigError(f"config error: env: unsupported action space {action_space}")


def get_flat(policy: nn.Module) -> torch.Tensor:
    """Parameters as one float32 vector (the unit exchanged between peers)."""
    return torch.nn.utils.parameters_to_vector(policy.parameters()).detach().clone()


def set_flat(policy: nn.Module, vector: torch.Tensor | np.ndarray) -> None:
    if isinstance(vector, torch.Tensor):
        vec = vector.detach().to(torch.float32)
    else:
        vec = torch.from_numpy(np.array(vector, dtype=np.float32))  # a copy: received vectors are read-only
    torch.nn.utils.vector_to_parameters(vec, policy.parameters())


def flat_grad(policy: nn.Module) -> torch.Tensor:
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in policy.parameters()
    ])
