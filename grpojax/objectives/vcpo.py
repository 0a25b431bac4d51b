"""VCPO's variance controls for off-policy data (arXiv 2602.17616; code mit-han-lab/vcpo).

Two pieces, each a pure function here, wired by the `vcpo` recipe:

1. ESS-guided learning-rate scaling. With the sequence importance weights
   w_i = exp(Σ_t m_t (logπ_θ(y_t) − logπ_samp(y_t))) of the B valid rows of an optimiser step,

     ρ_ess = (Σ_i w_i)² / (B · Σ_i w_i²)     ∈ (0, 1], 1 when every weight is equal,
     s     = sqrt(min(1, ρ_ess / ρ_base))    ("sqrt", the code's rule for AdamW) or
             min(1, ρ_ess / ρ_base)          ("linear"),

   and that optimiser step's update is multiplied by s (the learning rate is s·lr for that step).
   The code forms w from the unclipped ratio between the trainer's pre-update log-probs and the
   rollout's (`compute_is_info`, `use_clipped=False`). Here a trainer has no stale rollouts yet,
   so the data become off-policy within a step (epochs x minibatches > 1): w uses the log-probs
   of the policy at the start of each optimiser step (the ones its own forward pass computes,
   detached), which equals the code's ratio for the first optimiser step and measures the drift
   for the later ones [ours]. The sums are exact over micro-batches (`ESSStats`).

2. The closed-form off-policy optimal baseline (OPOB): per group,

     b* = Σ_i w_i² ‖g_i‖² R_i / Σ_i w_i² ‖g_i‖²,    g_i = ∇_θ log π_θ(τ_i) = ∇_θ Σ_t logπ_θ(y_t),

   the baseline that minimises the variance of the importance-weighted gradient estimator
   Σ_i w_i (R_i − b) g_i; Â_i = (R_i − b*) / (std_g(R) + ε) with `norm_by_std` (the code's
   `grad_baselining.norm_by_std=True`, `normalize_by_length=False`, group scope). Cost: ‖g_i‖
   needs one backward pass per row (the update runs them in chunks of `microbatch_rows` rows
   with `vmap(grad)`), so it roughly doubles an update's backward work and holds
   `microbatch_rows` parameter-sized gradients at once; the `vcpo` recipe turns it on with
   `optimal_baseline=True` and leaves it off by default.

Legend: P prompts, G samples per prompt, B = P·G rows, T response length.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import base, masked

SCALING_RULES = ("sqrt", "linear")


def sequence_log_weights(logprobs_bt, sampler_logprobs_bt, mask_bt, *, log_clip: float = 20.0):
  """log w_i = clip(Σ_t m_t (logπ_θ − logπ_samp), ±log_clip) [B] (stop-gradient)."""
  delta_bt = jax.lax.stop_gradient(logprobs_bt - sampler_logprobs_bt)
  log_w_b = masked.masked_sum(delta_bt, mask_bt > 0, axis=-1)
  return jnp.clip(log_w_b, -log_clip, log_clip)


class ESSStats(NamedTuple):
  """Σ w, Σ w² and the number of valid rows: sums that add over micro-batches."""

  sum_w: jax.Array
  sum_w2: jax.Array
  count: jax.Array


def ess_stats(logprobs_bt, sampler_logprobs_bt, mask_bt, *, log_clip: float = 20.0) -> ESSStats:
  """The ESS sums of one micro-batch; rows without a valid token do not count."""
  row_valid_b = jnp.any(mask_bt > 0, axis=-1)
  w_b = jnp.exp(sequence_log_weights(logprobs_bt, sampler_logprobs_bt, mask_bt, log_clip=log_clip))
  w_b = jnp.where(row_valid_b, w_b, 0.0)
  return ESSStats(
    sum_w=jnp.sum(w_b),
    sum_w2=jnp.sum(jnp.square(w_b)),
    count=jnp.sum(row_valid_b, dtype=jnp.float32),
  )


def ess_ratio(stats: ESSStats):
  """ρ_ess = (Σw)² / (B Σw²); 1 for an empty batch."""
  denom = stats.count * stats.sum_w2
  return jnp.where(denom > 0, jnp.square(stats.sum_w) / jnp.where(denom > 0, denom, 1.0), 1.0)


def lr_scale(ess, *, base_ess_ratio: float = 1.0, rule: str = "sqrt"):
  """s = sqrt(min(1, ρ_ess / ρ_base)) ("sqrt") or min(1, ρ_ess / ρ_base) ("linear")."""
  check_scaling(base_ess_ratio, rule)
  linear = jnp.minimum(1.0, ess / base_ess_ratio)
  return jnp.sqrt(linear) if rule == "sqrt" else linear


def check_scaling(base_ess_ratio, rule):
  if rule not in SCALING_RULES:
    raise ValueError(f"ess_scaling_rule must be one of {SCALING_RULES}, got {rule!r}.")
  if not (0 < base_ess_ratio <= 1):
    raise ValueError(f"base_ess_ratio must be in (0, 1], got {base_ess_ratio!r}.")


class LRScaling(NamedTuple):
  """A per-optimiser-step learning-rate scale computed from the step's own forward passes.

  Attributes:
    observe: (logprobs_bt detached, sampler_logprobs_bt, mask_bt) -> sums of one micro-batch
      (a pytree that adds over micro-batches).
    scale: summed observations -> (scale, metrics): the scalar multiplying the optimiser's
      update for that step, and scalar metrics.
  """

  observe: Callable
  scale: Callable


def ess_lr_scaling(*, base_ess_ratio: float = 1.0, rule: str = "sqrt") -> LRScaling:
  """VCPO's ESS-guided learning-rate scale as an `LRScaling`."""
  check_scaling(base_ess_ratio, rule)

  def scale(stats):
    ess = ess_ratio(stats)
    s = lr_scale(ess, base_ess_ratio=base_ess_ratio, rule=rule)
    return s, {"ess_ratio": ess, "lr_scale": s}

  return LRScaling(observe=ess_stats, scale=scale)


def optimal_baseline(rewards_pg, weights_pg, grad_sq_norms_pg, valid_pg=None):
  """b*_p = Σ_i w_i² ‖g_i‖² R_i / Σ_i w_i² ‖g_i‖² over the valid samples of each group [P].

  A group whose weights or norms are all zero falls back to its mean reward.
  """
  valid = jnp.ones(jnp.shape(rewards_pg), bool) if valid_pg is None else valid_pg > 0
  c_pg = jnp.where(valid, jnp.square(weights_pg) * grad_sq_norms_pg, 0.0)
  total = jnp.sum(c_pg, axis=-1)
  mean = masked.masked_mean(rewards_pg, valid, axis=-1)
  weighted = jnp.sum(c_pg * jnp.where(valid, rewards_pg, 0.0), axis=-1)
  return jnp.where(total > 0, weighted / jnp.where(total > 0, total, 1.0), mean)


def optimal_baseline_advantages(
  rewards_pg,
  weights_pg,
  grad_sq_norms_pg,
  valid_pg=None,
  *,
  norm_by_std: bool = True,
  eps: float = 1e-6,
  ddof: int = 1,
):
  """Â_i = (R_i − b*) / (std_g(R) + ε) (or R_i − b* without `norm_by_std`); 0 off `valid_pg`."""
  valid = jnp.ones(jnp.shape(rewards_pg), bool) if valid_pg is None else valid_pg > 0
  b_p = optimal_baseline(rewards_pg, weights_pg, grad_sq_norms_pg, valid)
  adv = rewards_pg - b_p[:, None]
  if norm_by_std:
    n = jnp.sum(valid, axis=-1, dtype=jnp.float32)
    mean = masked.masked_mean(rewards_pg, valid, axis=-1)
    var = jnp.sum(jnp.where(valid, jnp.square(rewards_pg - mean[:, None]), 0.0), axis=-1)
    std = jnp.sqrt(var / jnp.maximum(n - ddof, 1.0))
    adv = adv / (std[:, None] + eps)
  return jnp.where(valid, adv, 0.0)


def truncated_sequence_weights(old_logprobs_bt, sampler_logprobs_bt, mask_bt, *, cap: float):
  """min(exp(Σ_t m_t (logπ_old − logπ_samp)), cap) [B]: the loss's truncated rollout IS."""
  if not (0 < cap < math.inf):
    raise ValueError(f"is_threshold must be > 0 and finite, got {cap!r}.")
  return jnp.minimum(
    jnp.exp(sequence_log_weights(old_logprobs_bt, sampler_logprobs_bt, mask_bt)), cap
  )


def optimal_baseline_transform(
  *, is_threshold: float, norm_by_std: bool = True, eps: float = 1e-6, ddof: int = 1
) -> base.GroupTransform:
  """OPOB advantages as a `GroupTransform`: w_i is the truncated rollout IS weight of the loss
  (`use_is_weights=True`), ‖g_i‖² the update's per-row gradient norms (`grad_sq_norms`)."""

  def update(rewards_pg, state, inputs):
    shape = jnp.shape(rewards_pg)
    w_b = truncated_sequence_weights(
      inputs.old_logprobs, inputs.sampler_logprobs, inputs.mask, cap=is_threshold
    )
    adv = optimal_baseline_advantages(
      rewards_pg,
      w_b.reshape(shape),
      jax.lax.stop_gradient(inputs.grad_sq_norms).reshape(shape),
      inputs.valid_pg,
      norm_by_std=norm_by_std,
      eps=eps,
      ddof=ddof,
    )
    return adv, state

  requires = {"old_logprobs", "sampler_logprobs", "grad_sq_norms", "mask"}
  return base.GroupTransform(init=base._no_state, update=update, requires=frozenset(requires))
