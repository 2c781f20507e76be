"""Exact expectations of the estimators, by enumerating every trajectory of a small MDP.

The MDP is built so that an action changes what comes later: the observation is
(step, previous action) one-hot and the reward depends on the previous and the current
action.  A weighting that is right only when the future does not depend on the action
(the per-decision weights this project shipped before) fails here; Monte Carlo tests on a
chain whose next state ignores the action could not see it.  Everything is float64, so
"equal" means equal to 1e-10, not "within a few standard errors".
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from peer.engine import estimators
from peer.engine.config import EstimatorConfig, PolicyConfig
from peer.engine.policy import CategoricalPolicy, get_flat
from peer.engine.sampling import Batch

HORIZON = 4
GAMMA = 0.9
OBS_DIM = HORIZON + 2  # one-hot step, then one-hot previous action (all zero at step 0)
REWARD = np.random.default_rng(7).uniform(-1.0, 1.0, size=(HORIZON, 3, 2))  # [step, previous action or 2, action]
ACTION_SEQUENCES = list(itertools.product((0, 1), repeat=HORIZON))


def _observations(actions: tuple[int, ...]) -> torch.Tensor:
    obs = torch.zeros(HORIZON, OBS_DIM, dtype=torch.float64)
    for h in range(HORIZON):
        obs[h, h] = 1.0
        if h > 0:
            obs[h, HORIZON + actions[h - 1]] = 1.0
    return obs


def _rewards(actions: tuple[int, ...]) -> torch.Tensor:
    previous = (2, *actions[:-1])
    return torch.tensor([REWARD[h, previous[h], actions[h]] for h in range(HORIZON)], dtype=torch.float64)


def _batch(sequences: list[tuple[int, ...]]) -> Batch:
    return Batch(obs=torch.stack([_observations(a) for a in sequences]),
                 actions=torch.tensor(sequences, dtype=torch.int64),
                 rewards=torch.stack([_rewards(a) for a in sequences]),
                 mask=torch.ones(len(sequences), HORIZON, dtype=torch.bool))


ALL = _batch(ACTION_SEQUENCES)


def _policy(seed: int, offset: float = 0.0) -> CategoricalPolicy:
    torch.manual_seed(seed)
    policy = CategoricalPolicy(OBS_DIM, 2, PolicyConfig(hidden=(8,), activation="tanh")).double()
    if offset:
        with torch.no_grad():
            for p in policy.parameters():
                p += offset * torch.randn(p.shape, dtype=torch.float64)
    return policy


def _trajectory_probabilities(policy: CategoricalPolicy) -> torch.Tensor:
    return policy.log_prob(ALL.obs, ALL.actions).sum(1).exp()


def _exact_gradient(policy: CategoricalPolicy) -> torch.Tensor:
    """grad J(theta), J = sum_tau p(tau) sum_h gamma^h r_h, by autograd through the enumeration."""
    discounted_return = (ALL.rewards * GAMMA ** torch.arange(HORIZON, dtype=torch.float64)).sum(1)
    objective = (_trajectory_probabilities(policy) * discounted_return).sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, list(policy.parameters()))])


def _expectation(estimate, policy_now: CategoricalPolicy, batch_size: int) -> torch.Tensor:
    """E over batches of `batch_size` i.i.d. trajectories sampled at theta_t, exactly."""
    with torch.no_grad():
        prob = _trajectory_probabilities(policy_now)
    total = torch.zeros_like(get_flat(policy_now))
    for indices in itertools.product(range(len(ACTION_SEQUENCES)), repeat=batch_size):
        batch = _batch([ACTION_SEQUENCES[i] for i in indices])
        total += float(torch.prod(prob[list(indices)])) * estimate(batch)
    return total


THETA_PREV = _policy(seed=0)
THETA_NOW = _policy(seed=0, offset=0.7)
GRAD_PREV = _exact_gradient(THETA_PREV)
GRAD_NOW = _exact_gradient(THETA_NOW)
MODES = [(importance, baseline) for importance in ("trajectory", "per_decision") for baseline in (False, True)]


def _cfg(importance: str, baseline: bool) -> EstimatorConfig:
    return EstimatorConfig(gamma=GAMMA, horizon=HORIZON, baseline=baseline, importance=importance)


def _batch_size(baseline: bool) -> int:
    return 2 if baseline else 1  # the leave-one-out baseline needs a second trajectory


def test_the_two_policies_are_far_enough_apart_to_matter() -> None:
    assert float((GRAD_NOW - GRAD_PREV).norm()) > 0.3 * float(GRAD_PREV.norm()) > 0


@pytest.mark.parametrize("baseline", [False, True])
def test_gpomdp_is_exact_in_expectation(baseline: bool) -> None:
    cfg = _cfg("trajectory", baseline)
    expected = _expectation(lambda b: estimators.gpomdp(THETA_NOW, b, cfg), THETA_NOW, _batch_size(baseline))
    assert float((expected - GRAD_NOW).abs().max()) < 1e-10


@pytest.mark.parametrize("importance,baseline", MODES)
def test_importance_weighted_term_estimates_the_previous_gradient(importance: str, baseline: bool) -> None:
    cfg = _cfg(importance, baseline)
    expected = _expectation(lambda b: estimators.weighted_gpomdp(THETA_NOW, THETA_PREV, b, cfg),
                            THETA_NOW, _batch_size(baseline))
    assert float((expected - GRAD_PREV).abs().max()) < 1e-10


@pytest.mark.parametrize("importance,baseline", MODES)
def test_page_correction_estimates_the_gradient_difference(importance: str, baseline: bool) -> None:
    cfg = _cfg(importance, baseline)
    expected = _expectation(lambda b: estimators.page_correction(THETA_NOW, THETA_PREV, b, cfg),
                            THETA_NOW, _batch_size(baseline))
    assert float((expected - (GRAD_NOW - GRAD_PREV)).abs().max()) < 1e-10


@pytest.mark.parametrize("importance", ["trajectory", "per_decision"])
def test_log_weight_clip_is_biased_as_documented(importance: str) -> None:
    """Truncating log-weights is a bias-for-variance trade: the exact check must see it."""
    cfg = dataclasses.replace(_cfg(importance, False), log_weight_clip=0.1)
    expected = _expectation(lambda b: estimators.weighted_gpomdp(THETA_NOW, THETA_PREV, b, cfg), THETA_NOW, 1)
    assert float((expected - GRAD_PREV).norm()) > 1e-3 * float(GRAD_PREV.norm())
