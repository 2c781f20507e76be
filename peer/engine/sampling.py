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


class _Environments:
    """n environments that advance together, one policy forward per time step.

    An environment with a native numpy-vectorised implementation (CartPole) is stepped
    whole: all n in one call.  Any other (LunarLander: Box2D, about 50 us a step) is
    kept as n separate environments and only those still in their first episode are
    stepped.  gymnasium's SyncVectorEnv would step all n until the longest episode ends
    and auto-reset the finished ones, paying for steps the batch throws away (40 % of
    a batch from the first LunarLander policy, more once some episodes hover to the
    1,000-step horizon).  Sub-environment i is seeded with seed + i, as SyncVectorEnv
    seeds it, so a batch is the same either way.
    """

    def __init__(self, env_id: str, n: int, horizon: int) -> None:
        self.n = n
        self.vector: gym.vector.VectorEnv | None = None
        self.singles: list[gym.Env] = []
        try:
            self.vector = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                                       max_episode_steps=horizon)
        except (gym.error.Error, ValueError, TypeError):
            for _ in range(n):
                env = gym.make(env_id)
                self.singles.append(gym.wrappers.TimeLimit(env, horizon) if horizon else env)

    @property
    def single_observation_space(self) -> gym.Space:
        return self.vector.single_observation_space if self.vector is not None else self.singles[0].observation_space

    @property
    def single_action_space(self) -> gym.Space:
        return self.vector.single_action_space if self.vector is not None else self.singles[0].action_space

    def reset(self, seed: int) -> np.ndarray:
        if self.vector is not None:
            try:
                return self.vector.reset(seed=seed)[0]
            except gym.error.Error:  # vector envs that want one seed per sub-env
                return self.vector.reset(seed=[seed + i for i in range(self.n)])[0]
        return np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.singles)])

    def step(self, actions: np.ndarray, obs: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(next observations, rewards, episode ended) for all n; rows not `alive` are not
        stepped (their observation stays, their reward is 0 and they count as ended)."""
        if self.vector is not None:
            next_obs, rewards, terminated, truncated, _ = self.vector.step(actions)
            return next_obs, np.asarray(rewards, dtype=np.float64), terminated | truncated
        next_obs, rewards, ended = obs.copy(), np.zeros(self.n), np.ones(self.n, dtype=bool)
        for i in np.flatnonzero(alive):
            next_obs[i], rewards[i], terminated, truncated, _ = self.singles[i].step(actions[i])
            ended[i] = terminated or truncated
        return next_obs, rewards, ended

    def close(self) -> None:
        for env in [self.vector] if self.vector is not None else self.singles:
            env.close()


class Sampler:
    """Samples batches of trajectories for one peer; keeps one set of environments per batch size."""

    def __init__(self, env_id: str, horizon: int) -> None:
        self.env_id = env_id
        self.horizon = horizon
        self._envs: dict[int, _Environments] = {}
        probe = self._env(1)
        self.observation_space = probe.single_observation_space
        self.action_space = probe.single_action_space

    def _env(self, n: int) -> _Environments:
        if n not in self._envs:
            self._envs[n] = _Environments(self.env_id, n, self.horizon)
        return self._envs[n]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def sample(self, n: int, act: ActionFn, rng: np.random.Generator) -> Batch:
        """Run n environments until each has finished one episode (or hit the horizon)."""
        env = self._env(n)
        obs = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
        obs_buf, act_buf, rew_buf, mask_buf = [], [], [], []
        alive = np.ones(n, dtype=bool)
        low = high = None
        if isinstance(self.action_space, gym.spaces.Box):
            low, high = self.action_space.low, self.action_space.high
        for _ in range(self.horizon):
            actions = act(obs, rng)  # every row, so the generator's draws do not depend on who ended
            env_actions = np.clip(actions, low, high) if low is not None else actions
            next_obs, rewards, ended = env.step(env_actions, obs, alive)
            obs_buf.append(np.asarray(obs, dtype=np.float32))
            act_buf.append(actions)
            rew_buf.append(np.where(alive, rewards, 0.0))
            mask_buf.append(alive.copy())
            alive &= ~ended
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
