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

from peer.engine.config import EstimatorConfig
from peer.engine.policy import Policy
from peer.engine.sampling import Batch


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
    log_probs = policy.log_prob(batch.obs, batch.actions)
    coefficient = advantages(batch, cfg).to(log_probs.dtype)
    return _flat_gradient(policy, (log_probs * coefficient).sum() / batch.size)


def log_importance_weights(policy_now: Policy, policy_prev: Policy, batch: Batch,
                           cfg: EstimatorConfig) -> torch.Tensor:
    """log w for every step (n, T), float64, for trajectories sampled at theta_t.

    "trajectory": every step carries log w_{0:H} = log prod_h pi_prev/pi_now over the whole
    trajectory.  "per_decision": step j carries log w_{0:j}, the product up to j only, which
    is the weight a reward r_j needs (it depends on the actions up to j and no later).
    `log_weight_clip` > 0 truncates log w to [-clip, clip]: that trades bias for variance and
    makes every mode biased.
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


def importance_weighted_coefficients(batch: Batch, cfg: EstimatorConfig, log_w: torch.Tensor) -> torch.Tensor:
    """c_h such that (1/n) sum_i sum_h grad log pi_prev(a_h|s_h) c_h estimates grad J(theta_{t-1}).

    "trajectory": c_h = w_{0:H} (G_h - b_h).  "per_decision": every reward inside the
    reward-to-go gets the weight of the actions it depends on,
    c_h = sum_{j >= h} gamma^j w_{0:j} r_j - w_{0:h} b_h.  Weighting the whole reward-to-go
    by w_{0:h} alone (this project's default until it was found by exact enumeration) would
    average the future rewards under theta_t, not theta_{t-1}.  The baseline term stays
    unbiased in both modes: b_h does not depend on a_h, and w_{0:h} turns the expectation
    over a_h into one under pi_prev, where E[grad log pi_prev(a_h|s_h)] = 0.
    """
    weights = log_w.exp()
    if cfg.importance == "per_decision":
        steps = batch.rewards.shape[1]
        discount = cfg.gamma ** torch.arange(steps, dtype=torch.float64)
        weighted = (weights * batch.rewards * discount * batch.mask).flip(1).cumsum(1).flip(1)
        if cfg.baseline:
            weighted = weighted - weights * leave_one_out_baseline(rewards_to_go(batch, cfg.gamma), batch.mask)
        return weighted * batch.mask
    return advantages(batch, cfg) * weights


def weighted_gpomdp(policy_now: Policy, policy_prev: Policy, batch: Batch, cfg: EstimatorConfig) -> torch.Tensor:
    """Importance-weighted GPOMDP: an estimate of grad J(theta_{t-1}) from trajectories sampled at theta_t."""
    coefficient = importance_weighted_coefficients(
        batch, cfg, log_importance_weights(policy_now, policy_prev, batch, cfg))
    log_probs = policy_prev.log_prob(batch.obs, batch.actions)
    return _flat_gradient(policy_prev, (log_probs * coefficient.to(log_probs.dtype)).sum() / batch.size)


def page_correction(policy_now: Policy, policy_prev: Policy, batch: Batch,
                    cfg: EstimatorConfig) -> torch.Tensor:
    """(1/B) sum_j [g(tau_j | theta_t) - g_w(tau_j | theta_{t-1})], the PAGE-PG small-batch term.

    Its expectation is grad J(theta_t) - grad J(theta_{t-1}) in both importance modes
    (checked by exact enumeration in the tests).  `policy_prev` must hold the parameters the
    previous iteration *sampled* at (the authors' code stored them after the optimizer step,
    making this term identically zero).
    """
    return gpomdp(policy_now, batch, cfg) - weighted_gpomdp(policy_now, policy_prev, batch, cfg)


# --------------------------------------------------------------------------- stabilisers (issue #14)
# Helpers of the estimator options that keep the PAGE recursion from running away
# (estimator.correction_clip, drift_clip, restart_ess; all off by default).  The state
# machine applies them; none changes what the estimators above compute.


def trajectory_ess_fraction(policy_now: Policy, policy_prev: Policy, batch: Batch) -> float:
    """Effective sample size of a batch's whole-trajectory weights, over its size: in (0, 1].

    w_i = prod_h pi_prev(a_h|s_h) / pi_now(a_h|s_h) for trajectory i sampled at theta_t (unclipped,
    in log space); ESS = (sum w)^2 / sum w^2 (Kong's), which is n when the two policies agree
    on every sampled action and tends to 1 when one trajectory carries all the weight.  It is
    the weight of a whole trajectory, the one the last reward of the per-decision mode carries.
    """
    with torch.no_grad():
        log_w = ((policy_prev.log_prob(batch.obs, batch.actions).to(torch.float64)
                  - policy_now.log_prob(batch.obs, batch.actions).to(torch.float64)) * batch.mask).sum(1)
        log_w = log_w - log_w.max()  # scale-free: the ratio below is unchanged, exp cannot overflow
        w = log_w.exp()
        return float(w.sum() ** 2 / w.pow(2).sum() / batch.size)


def cap_norm(vector: torch.Tensor, limit: float) -> torch.Tensor:
    """`vector` scaled down to norm `limit` if it is longer (unchanged otherwise)."""
    norm = float(vector.norm())
    return vector * (limit / norm) if norm > limit else vector
