"""Policy-gradient estimators: GPOMDP and the PAGE-PG importance-weighted correction.

Each estimator is written as a surrogate scalar whose gradient with respect to the policy
parameters *is* the estimate, so autograd does the per-step bookkeeping and one backward
pass serves a whole batch.  All estimates are ascent directions on
J(theta) = E[sum_h gamma^h r_h].

Importance weights are formed in log space in float64: the authors' float32 products
underflowed to exactly 0 beyond ~200 steps, silently switching the correction off.
"""

from __future__ import annotations

import torch

from peer.config import EstimatorConfig
from peer.policy import Policy
from peer.sampling import Batch


def rewards_to_go(batch: Batch, gamma: float) -> torch.Tensor:
    """G_h = sum_{j >= h} gamma^j r_j, discounted from time 0 (GPOMDP's form), float64."""
    steps = batch.rewards.shape[1]
    discount = gamma ** torch.arange(steps, dtype=torch.float64)
    discounted = batch.rewards * discount * batch.mask
    return discounted.flip(1).cumsum(1).flip(1)


def leave_one_out_baseline(returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """b_h^i = mean of G_h^j over the *other* trajectories still running at step h.

    Excluding trajectory i keeps b_h^i independent of it, so the baseline adds no bias
    (a plain batch mean would); it only removes variance.
    """
    alive = mask.to(torch.float64)
    total = (returns * alive).sum(0, keepdim=True)
    count = alive.sum(0, keepdim=True)
    others = (count - alive).clamp(min=1.0)
    return torch.where(count - alive > 0, (total - returns * alive) / others, torch.zeros_like(returns))


def advantages(batch: Batch, cfg: EstimatorConfig) -> torch.Tensor:
    """(G_h - b_h) for every step, zero on padding; float64 and free of autograd."""
    returns = rewards_to_go(batch, cfg.gamma)
    if cfg.baseline:
        returns = returns - leave_one_out_baseline(returns, batch.mask)
    return returns * batch.mask


def _flat_gradient(policy: Policy, surrogate: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(surrogate, list(policy.parameters()), allow_unused=True)
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1)
        for g, p in zip(grads, policy.parameters())
    ])


def gpomdp(policy: Policy, batch: Batch, cfg: EstimatorConfig) -> torch.Tensor:
    """Batch-mean GPOMDP estimate (1/n) sum_i sum_h grad log pi(a_h|s_h) (G_h - b_h)."""
    coefficient = advantages(batch, cfg).to(torch.float32)
    log_probs = policy.log_prob(batch.obs, batch.actions)
    return _flat_gradient(policy, (log_probs * coefficient).sum() / batch.size)


def log_importance_weights(policy_now: Policy, policy_prev: Policy, batch: Batch,
                           cfg: EstimatorConfig) -> torch.Tensor:
    """log w for every step (n, T), float64, for trajectories sampled at theta_t.

    "trajectory": every step carries log prod_h pi_prev/pi_now over the whole trajectory.
    "per_decision": step h carries the product up to h only; still unbiased for GPOMDP
    because reward-to-go terms at h do not depend on later actions, with lower variance.
    """
    with torch.no_grad():
        ratio = (policy_prev.log_prob(batch.obs, batch.actions).to(torch.float64)
                 - policy_now.log_prob(batch.obs, batch.actions).to(torch.float64)) * batch.mask
    if cfg.importance == "per_decision":
        log_w = ratio.cumsum(1)
    else:
        log_w = ratio.sum(1, keepdim=True).expand_as(ratio)
    if cfg.log_weight_clip > 0:
        log_w = log_w.clamp(-cfg.log_weight_clip, cfg.log_weight_clip)
    return log_w


def page_correction(policy_now: Policy, policy_prev: Policy, batch: Batch,
                    cfg: EstimatorConfig) -> torch.Tensor:
    """(1/B) sum_j [g(tau_j | theta_t) - w_j g(tau_j | theta_{t-1})], the PAGE-PG small-batch term.

    `policy_prev` must hold the parameters the previous iteration *sampled* at (the authors'
    code stored them after the optimizer step, making this term identically zero).
    """
    coefficient = advantages(batch, cfg)
    weights = log_importance_weights(policy_now, policy_prev, batch, cfg).exp()
    now = _flat_gradient(
        policy_now,
        (policy_now.log_prob(batch.obs, batch.actions) * coefficient.to(torch.float32)).sum() / batch.size,
    )
    prev = _flat_gradient(
        policy_prev,
        (policy_prev.log_prob(batch.obs, batch.actions) * (coefficient * weights).to(torch.float32)).sum()
        / batch.size,
    )
    return now - prev
