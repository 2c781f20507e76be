"""The sampler: a batch is the same whether finished environments are stepped or not."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from peer.engine.config import PolicyConfig
from peer.engine.policy import build_policy
from peer.engine.sampling import Sampler


def _reference_batch(env_id: str, n: int, horizon: int, act, rng: np.random.Generator):
    """What gymnasium's SyncVectorEnv gives: every environment stepped until the longest
    episode ends, finished ones auto-reset, their steps masked out afterwards."""
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync",
                       wrappers=[lambda e: gym.wrappers.TimeLimit(e, horizon)])
    obs, _ = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
    alive = np.ones(n, dtype=bool)
    obs_rows, action_rows, reward_rows, mask_rows = [], [], [], []
    stepped = 0
    for _ in range(horizon):
        actions = act(obs, rng)
        next_obs, rewards, terminated, truncated, _ = env.step(actions)
        stepped += n
        obs_rows.append(obs.astype(np.float32))
        action_rows.append(actions)
        reward_rows.append(np.where(alive, rewards, 0.0))
        mask_rows.append(alive.copy())
        alive &= ~(terminated | truncated)
        if not alive.any():
            break
        obs = next_obs
    env.close()
    mask = np.stack(mask_rows, axis=1)
    return (np.stack(obs_rows, axis=1), np.stack(action_rows, axis=1), np.stack(reward_rows, axis=1),
            mask, stepped)


@pytest.mark.parametrize("n", [1, 7])
def test_lunar_lander_batch_equals_the_step_everything_reference(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """LunarLander's environments are stepped one by one and only while alive; every real
    step (observation, action, reward, mask) must match the SyncVectorEnv reference, and
    so must the generator's state afterwards (later batches depend on it)."""
    from gymnasium.envs.box2d.lunar_lander import LunarLander

    env_id, horizon = "LunarLander-v3", 1000
    sampler = Sampler(env_id, horizon)
    box2d_steps = []
    original_step = LunarLander.step

    def counted_step(self, action):
        box2d_steps.append(1)
        return original_step(self, action)
    policy = build_policy(PolicyConfig(hidden=[64, 64], activation="tanh"), sampler.observation_space,
                          sampler.action_space, init_seed=5)
    ours_rng, reference_rng = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(2):  # twice: the second batch reuses the environments
        box2d_steps.clear()
        with monkeypatch.context() as patch:
            patch.setattr(LunarLander, "step", counted_step)
            batch = sampler.sample(n, policy.act, ours_rng)
        # a finished environment is not stepped (LunarLander's reset takes one step itself)
        assert len(box2d_steps) == batch.env_steps + n
        obs, actions, rewards, mask, stepped = _reference_batch(env_id, n, horizon, policy.act, reference_rng)
        assert np.array_equal(batch.mask.numpy(), mask)
        assert np.array_equal(batch.obs.numpy()[mask], obs[mask])
        assert np.array_equal(batch.actions.numpy()[mask], actions[mask])
        assert np.array_equal(batch.rewards.numpy(), rewards)
        assert ours_rng.bit_generator.state == reference_rng.bit_generator.state
        if n > 1:  # the reference stepped finished environments too; that is the saving
            assert batch.env_steps < stepped
    sampler.close()


def test_cartpole_keeps_its_native_vector_environment() -> None:
    sampler = Sampler("CartPole-v1", 500)
    batch = sampler.sample(4, lambda obs, rng: rng.integers(0, 2, size=len(obs)), np.random.default_rng(0))
    assert sampler._env(4).vector is not None
    assert batch.size == 4 and batch.mask[:, 0].all()
    assert (batch.lengths >= 1).all() and batch.rewards.dtype == torch.float64
    sampler.close()
