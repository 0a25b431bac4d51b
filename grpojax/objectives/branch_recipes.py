"""DEEP-GRPO's dual-stream objective (arXiv 2602.14169): root rows and branch rows, one loss.

The batch holds root rows (stream 0) and rows branched from a pivot of a failed root row
(stream 1, `rl/pivots.py`). Both take the same clipped-PPO per-token loss; the authors' actor
(AgentCombo/DEEP-GRPO@b49943b, `verl/workers/actor/dp_actor.py`) combines them as

  L = [Σ_main ℓ_t + λ Σ_branch ℓ_t] / [N_main + λ N_branch],

a token mean in which every branch token weighs λ = `branch_chain_loss_lambda` (1.0). Here the
last transform of the chain scales the loss mask of branch rows by λ and the aggregation is the
weighted token mean Σ m·ℓ / Σ m, which is that formula, exact over micro-batches. Tokens whose
advantage is 0 (groups whose rewards are all equal) leave the mask first, so they do not dilute
the denominator.
"""

import math

import jax
import jax.numpy as jnp

from grpojax.objectives import base
from grpojax.objectives import recipe_parts as parts

INF = parts.INF


def weighted_token_mean(loss_bt, weight_bt):
  """Σ_{b,t} w·ℓ over Σ_{b,t} w, for a non-negative per-token weight w (0 off the mask).

  Returns:
    `(loss_sum, denominator)` scalars.
  """
  w = jnp.maximum(jnp.asarray(weight_bt, jnp.float32), 0.0)
  loss_sum = jnp.sum(jnp.where(w > 0, loss_bt * w, 0.0))
  return loss_sum, jnp.sum(w)


def drop_zero_advantages() -> base.LossTransform:
  """Takes tokens whose advantage is exactly 0 out of the mask (and the denominator)."""

  def update(terms, x):
    keep = (x.advantages != 0).astype(terms.mask.dtype)
    frac = jnp.sum(terms.mask * (1 - keep)) / jnp.maximum(jnp.sum(terms.mask), 1.0)
    metrics = base.merge_metrics(terms.metrics, {"zero_adv_frac": frac})
    return terms._replace(mask=terms.mask * keep, metrics=metrics)

  return base.stateless(update, requires=("advantages",))


def stream_weights(*, branch_lambda: float) -> base.LossTransform:
  """Scales the mask of branch rows (`LossInputs.stream` = 1) by λ = `branch_lambda`."""
  if not (branch_lambda >= 0 and math.isfinite(branch_lambda)):
    raise ValueError(f"branch_lambda must be >= 0 and finite, got {branch_lambda!r}.")

  def update(terms, x):
    if x.stream is None:
      return terms
    branch_b = jnp.asarray(x.stream) > 0
    scale_b = jnp.where(branch_b, jnp.float32(branch_lambda), 1.0)
    mask = terms.mask * scale_b[:, None]
    tokens_b = jnp.sum(terms.mask, axis=1)
    frac = jnp.sum(jnp.where(branch_b, tokens_b, 0.0)) / jnp.maximum(jnp.sum(tokens_b), 1.0)
    metrics = base.merge_metrics(terms.metrics, {"branch_token_frac": jax.lax.stop_gradient(frac)})
    return terms._replace(mask=mask, metrics=metrics)

  return base.stateless(update)


def deep_grpo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  dual_clip_c: float = INF,
  branch_lambda: float = 1.0,
  filter_zero_advantage: bool = True,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """DEEP-GRPO (arXiv 2602.14169): group z-score advantages (branch groups get their local
  baseline: the branches of one pivot form one group), PPO clip (verl's 0.2), zero-advantage
  tokens filtered, and the dual-stream token mean with λ_branch = `branch_lambda` (1.0, the
  authors' `branch_chain_loss_lambda`). No KL [ours: verl's actor default `use_kl_loss` off].
  The branching itself is data-side: `rollout.branch` (see `grpojax/rl/pivots.py`)."""
  policy = [parts.ppo_clip(epsilon_low, epsilon_high, dual_clip_c)]
  if filter_zero_advantage:
    policy.insert(0, drop_zero_advantages())
  objective = parts.objective(
    parts.zscore(eps, ddof),
    policy,
    weighted_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  return base.with_terms(objective, stream_weights(branch_lambda=branch_lambda), first=False)
