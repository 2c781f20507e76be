"""Trajectory sampling through gymnasium vector environments.

A batch of n trajectories is sampled by n environments stepped together, with one batched
policy forward per time step (the authors' code ran one forward per environment step,
which made a CartPole run take hours).  Each environment's first episode is kept; steps
after it ends are discarded.  Everything random comes from the peer's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

ActionFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class Batch:
    """n trajectories padded to the longest one; `mask` marks real steps."""

    obs: torch.Tensor  # (n, T, obs_dim) float32
    actions: torch.Tensor  # (n, T) int64 or (n, T, action_dim) float32
    rewards: torch.Tensor  # (n, T) float64
    mask: torch.Tensor  # (n, T) bool

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(dim=1).numpy()

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each trajectory (what the paper's figures plot)."""
        return (self.rewards * self.mask).sum(dim=1).numpy()

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum())


def target_return(env_id: str) -> float | None:
    """The environment's own 'solved' threshold (CartPole-v1: 475, LunarLander-v3: 200)."""
    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def _make_vector_env(env_id: str, num_envs: int, horizon: int) -> gym.vector.VectorEnv:
    """Prefer an environment's native numpy-vectorised implementation (CartPole has one)."""
    try:
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                            max_episode_steps=horizon)
    except (gym.error.Error, ValueError, TypeError):
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                            wrappers=[lambda e: gym.wrappers.TimeLimit(e, horizon)]
                            if horizon else None)


class Sampler:
    """Samples batches of trajectories for one peer; keeps one vector env per batch size."""

    def __init__(self, env_id: str, horizon: int) -> None:
        self.env_id = env_id
        self.horizon = horizon
        self._envs: dict[int, gym.vector.VectorEnv] = {}
        probe = self._env(1)
        self.observation_space = probe.single_observation_space
        self.action_space = probe.single_action_space

    def _env(self, n: int) -> gym.vector.VectorEnv:
        if n not in self._envs:
            self._envs[n] = _make_vector_env(self.env_id, n, self.horizon)
        return self._envs[n]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def sample(self, n: int, act: ActionFn, rng: np.random.Generator) -> Batch:
        """Run n environments until each has finished one episode (or hit the horizon)."""
        env = self._env(n)
        seed = int(rng.integers(0, 2**31 - 1))
        try:
            obs, _ = env.reset(seed=seed)
        except gym.error.Error:  # vector envs that want one seed per sub-env
            obs, _ = env.reset(seed=[seed + i for i in range(n)])
        obs_buf, act_buf, rew_buf, mask_buf = [], [], [], []
        alive = np.ones(n, dtype=bool)
        low = high = None
        if isinstance(self.action_space, gym.spaces.Box):
            low, high = self.action_space.low, self.action_space.high
        for _ in range(self.horizon):
            actions = act(obs, rng)
            env_actions = np.clip(actions, low, high) if low is not None else actions
            next_obs, rewards, terminated, truncated, _ = env.step(env_actions)
            obs_buf.append(np.asarray(obs, dtype=np.float32))
            act_buf.append(actions)
            rew_buf.append(np.where(alive, rewards, 0.0))
            mask_buf.append(alive.copy())
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
            obs = next_obs
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        return Batch(
            obs=torch.from_numpy(np.stack(obs_buf, axis=1)),
            actions=torch.from_numpy(np.stack(act_buf, axis=1).astype(np.int64 if discrete else np.float32)),
            rewards=torch.from_numpy(np.stack(rew_buf, axis=1).astype(np.float64)),
            mask=torch.from_numpy(np.stack(mask_buf, axis=1)),
        )


def uniform_random_actions(action_space: gym.Space) -> ActionFn:
    """The RandomAction attack's behaviour: uniform actions, ignoring the policy."""
    if isinstance(action_space, gym.spaces.Discrete):
        n = int(action_space.n)
        return lambda obs, rng: rng.integers(0, n, size=len(obs))
    low, high = action_space.low, action_space.high
    return lambda obs, rng: rng.uniform(low, high, size=(len(obs), *low.shape)).astype(np.float32)
