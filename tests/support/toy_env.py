"""A three-step MDP small enough to enumerate every trajectory exactly.

Observation: one-hot of the time step.  Action 0 or 1.  Reward: 1 for action 1 at even
steps, 0.5 for action 0 at odd steps.  The episode ends after three steps, so there are
eight trajectories and J(theta) and its gradient can be computed exactly.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import torch

HORIZON = 3
ENV_ID = "ToyChain-v0"


class ToyChain(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (HORIZON,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        obs = np.zeros(HORIZON, np.float32)
        obs[min(self.t, HORIZON - 1)] = 1.0
        return obs

    def step(self, action):
        reward = reward_of(self.t, int(action))
        self.t += 1
        return self._obs(), reward, self.t >= HORIZON, False, {}


def reward_of(t: int, action: int) -> float:
    if t % 2 == 0:
        return 1.0 if action == 1 else 0.0
    return 0.5 if action == 0 else 0.0


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=ToyChain, max_episode_steps=HORIZON)


def exact_gradient(policy: torch.nn.Module, gamma: float) -> torch.Tensor:
    """grad J(theta) by enumeration: sum_tau p(tau) * sum_h grad log pi(a_h|s_h) G_h."""
    obs = torch.eye(HORIZON)
    total = None
    for actions in itertools.product((0, 1), repeat=HORIZON):
        a = torch.tensor(actions)
        log_p = policy.log_prob(obs, a)
        prob = log_p.sum().exp().detach()
        rewards = torch.tensor([reward_of(h, actions[h]) for h in range(HORIZON)], dtype=torch.float64)
        discount = gamma ** torch.arange(HORIZON, dtype=torch.float64)
        to_go = (rewards * discount).flip(0).cumsum(0).flip(0).to(torch.float32)
        grads = torch.autograd.grad((log_p * to_go).sum(), list(policy.parameters()))
        flat = torch.cat([g.reshape(-1) for g in grads]) * prob
        total = flat if total is None else total + flat
    return total
