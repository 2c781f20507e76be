"""The estimators against brute force, and the importance-weighted term's unbiasedness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from peer.engine import estimators
from peer.engine.config import EstimatorConfig, PolicyConfig
from peer.engine.policy import build_policy, get_flat, set_flat
from peer.engine.sampling import Sampler
from tests.support import toy_env

CFG = EstimatorConfig(gamma=0.99, horizon=500, baseline=False, importance="trajectory")


def _cartpole_batch(n: int = 4, seed: int = 0):
    sampler = Sampler("CartPole-v1", 500)
    policy = build_policy(PolicyConfig(hidden=(8,)), sampler.observation_space, sampler.action_space, seed)
    batch = sampler.sample(n, policy.act, np.random.default_rng(seed))
    sampler.close()
    return policy, batch


def _brute_force_gpomdp(policy, batch, cfg: EstimatorConfig) -> torch.Tensor:
    """One autograd call per (trajectory, step), baseline by an explicit loop."""
    n = batch.size
    lengths = batch.lengths
    returns = []
    for i in range(n):
        r = batch.rewards[i, : lengths[i]].tolist()
        returns.append([sum(cfg.gamma ** j * r[j] for j in range(h, len(r))) for h in range(len(r))])
    total = torch.zeros_like(get_flat(policy))
    for i in range(n):
        for h in range(lengths[i]):
            b = 0.0
            if cfg.baseline:
                others = [returns[j][h] for j in range(n) if j != i and h < lengths[j]]
                b = sum(others) / len(others) if others else 0.0
            logp = policy.log_prob(batch.obs[i, h: h + 1], batch.actions[i, h: h + 1]).sum()
            grads = torch.autograd.grad(logp, list(policy.parameters()))
            total += torch.cat([g.reshape(-1) for g in grads]) * float(returns[i][h] - b)
    return total / n


@pytest.mark.parametrize("baseline", [False, True])
def test_gpomdp_matches_brute_force(baseline: bool) -> None:
    policy, batch = _cartpole_batch()
    cfg = dataclasses.replace(CFG, baseline=baseline)
    fast = estimators.gpomdp(policy, batch, cfg)
    slow = _brute_force_gpomdp(policy, batch, cfg)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-4 * float(slow.abs().max()))


def test_rewards_to_go_are_discounted_from_time_zero() -> None:
    _, batch = _cartpole_batch(n=2)
    g = estimators.rewards_to_go(batch, 0.9)
    length = int(batch.lengths[0])
    expected_first = sum(0.9 ** j for j in range(length))
    assert g[0, 0].item() == pytest.approx(expected_first)
    assert g[0, length - 1].item() == pytest.approx(0.9 ** (length - 1))  # gamma^h, not gamma^0


def test_log_weights_equal_direct_products_and_do_not_underflow() -> None:
    policy, batch = _cartpole_batch(n=3, seed=1)
    other = build_policy(PolicyConfig(hidden=(8,)), Sampler("CartPole-v1", 500).observation_space,
                         Sampler("CartPole-v1", 500).action_space, 1)
    set_flat(other, get_flat(policy) + 0.05 * torch.randn(get_flat(policy).shape, generator=torch.Generator().manual_seed(3)))
    log_w = estimators.log_importance_weights(policy, other, batch, CFG)
    per_decision = estimators.log_importance_weights(policy, other, batch,
                                                     dataclasses.replace(CFG, importance="per_decision"))
    for i in range(batch.size):
        n = int(batch.lengths[i])
        with torch.no_grad():
            p_now = policy.log_prob(batch.obs[i, :n], batch.actions[i, :n]).double().exp()
            p_old = other.log_prob(batch.obs[i, :n], batch.actions[i, :n]).double().exp()
        ratios = (p_old / p_now).numpy()
        assert float(log_w[i, 0]) == pytest.approx(float(np.log(np.prod(ratios))), rel=1e-4, abs=1e-6)
        assert np.allclose(per_decision[i, :n].numpy(), np.cumsum(np.log(ratios)), rtol=1e-4, atol=1e-6)
    assert torch.isfinite(log_w).all()


def test_long_trajectory_weights_stay_finite_in_log_space() -> None:
    """The authors' float32 products were exactly 0 beyond ~200 steps; log space is not."""
    from peer.engine.sampling import Batch

    sampler = Sampler("CartPole-v1", 500)
    now = build_policy(PolicyConfig(hidden=(8,)), sampler.observation_space, sampler.action_space, 0)
    prev = build_policy(PolicyConfig(hidden=(8,)), sampler.observation_space, sampler.action_space, 0)
    with torch.no_grad():
        prev.net[-1].bias += torch.tensor([0.3, -0.3])  # prev strongly prefers action 0
    steps = 400
    gen = torch.Generator().manual_seed(0)
    batch = Batch(obs=torch.randn(1, steps, 4, generator=gen), actions=torch.ones(1, steps, dtype=torch.int64),
                  rewards=torch.ones(1, steps, dtype=torch.float64), mask=torch.ones(1, steps, dtype=torch.bool))
    log_w = estimators.log_importance_weights(now, prev, batch, CFG)
    with torch.no_grad():
        ratios = (prev.log_prob(batch.obs[0], batch.actions[0]) - now.log_prob(batch.obs[0], batch.actions[0])).exp()
    float32_product = torch.prod(ratios.float())
    assert float(float32_product) == 0.0  # the authors' computation underflows ...
    assert torch.isfinite(log_w).all() and -700 < float(log_w[0, 0]) < -110  # ... log space keeps the value
    assert float(log_w[0, 0].exp()) > 0.0
    sampler.close()


@pytest.mark.parametrize("importance", ["trajectory", "per_decision"])
@pytest.mark.parametrize("baseline", [False, True])
def test_page_correction_is_unbiased_on_toy_mdp(importance: str, baseline: bool) -> None:
    """E_{tau ~ theta_t}[g(tau|theta_t) - w g(tau|theta_{t-1})] = grad J(theta_t) - grad J(theta_{t-1})."""
    toy_env.register()
    cfg = EstimatorConfig(gamma=0.9, horizon=toy_env.HORIZON, baseline=baseline, importance=importance)
    sampler = Sampler(toy_env.ENV_ID, toy_env.HORIZON)
    pcfg = PolicyConfig(hidden=(4,), activation="tanh")
    now = build_policy(pcfg, sampler.observation_space, sampler.action_space, 11)
    prev = build_policy(pcfg, sampler.observation_space, sampler.action_space, 11)
    set_flat(prev, get_flat(now) + 0.4 * torch.randn(get_flat(now).shape, generator=torch.Generator().manual_seed(5)))
    exact = toy_env.exact_gradient(now, cfg.gamma) - toy_env.exact_gradient(prev, cfg.gamma)
    rng = np.random.default_rng(0)
    estimates = torch.stack([
        estimators.page_correction(now, prev, sampler.sample(200, now.act, rng), cfg) for _ in range(25)
    ])
    mean = estimates.mean(0)
    stderr = estimates.std(0) / np.sqrt(len(estimates))
    z = ((mean - exact).abs() / (stderr + 1e-6)).max()
    assert float(z) < 4.5, f"largest deviation {float(z):.2f} standard errors"
    # and the test can fail: a biased estimator (weights dropped) is far off
    biased = estimators.gpomdp(now, sampler.sample(4000, now.act, rng), cfg) - estimators.gpomdp(
        prev, sampler.sample(4000, now.act, rng), cfg)
    assert float(((biased - exact).abs() / (stderr * np.sqrt(25 * 200 / 4000) + 1e-6)).max()) > 4.5
    sampler.close()


def test_trajectory_ess_fraction_is_kongs_ess_over_n() -> None:
    policy, batch = _cartpole_batch(n=5, seed=2)
    assert estimators.trajectory_ess_fraction(policy, policy, batch) == pytest.approx(1.0)
    other = build_policy(PolicyConfig(hidden=(8,)), Sampler("CartPole-v1", 500).observation_space,
                         Sampler("CartPole-v1", 500).action_space, 2)
    set_flat(other, get_flat(policy) + 0.3 * torch.randn(get_flat(policy).shape, generator=torch.Generator().manual_seed(4)))
    log_w = estimators.log_importance_weights(policy, other, batch, CFG)[:, 0]  # whole-trajectory mode
    w = log_w.exp()
    expected = float(w.sum() ** 2 / (w ** 2).sum()) / batch.size
    ess = estimators.trajectory_ess_fraction(policy, other, batch)
    assert ess == pytest.approx(expected, rel=1e-9) and 0 < ess < 1
    # scale-free and overflow-free: weights of e^+-800 give the same fraction as their ratios
    big = torch.tensor([800.0, 799.0, -800.0], dtype=torch.float64)
    wb = (big - big.max()).exp()
    assert float(wb.sum() ** 2 / (wb ** 2).sum()) / 3 == pytest.approx((1 + np.exp(-1)) ** 2 / (1 + np.exp(-2)) / 3)


def test_cap_norm_shortens_only_long_vectors() -> None:
    v = torch.tensor([3.0, 4.0])
    assert torch.equal(estimators.cap_norm(v, 10.0), v)
    capped = estimators.cap_norm(v, 1.0)
    assert float(capped.norm()) == pytest.approx(1.0) and torch.allclose(capped / capped.norm(), v / 5)
    assert torch.equal(estimators.cap_norm(torch.zeros(2), 0.0), torch.zeros(2))
