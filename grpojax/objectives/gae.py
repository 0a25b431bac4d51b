"""Token-level advantages with a critic: GAE with separate policy / critic λ, and VAPO's
length-adaptive λ (arXiv 2504.05118).

Shapes: B rows, T response tokens. Hyper-parameters are checked eagerly; a bad value raises
ValueError naming the argument.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import advantages as advantages_lib

_as_float = advantages_lib._as_float
_check_positive = advantages_lib._check_positive
_check_unit_interval = advantages_lib._check_unit_interval
_safe_div = advantages_lib._safe_div


class GaeOutput(NamedTuple):
  """Result of `gae`: policy advantages and critic targets, both [B, T] and 0 off the mask."""

  advantages_bt: jax.Array
  value_targets_bt: jax.Array


def gae(
  rewards_bt,
  values_bt,
  mask_bt,
  *,
  gamma: float = 1.0,
  lambda_policy=0.95,
  lambda_critic: float = 1.0,
):
  """Generalised advantage estimation with decoupled lambdas (Schulman et al., arXiv 1506.02438;
  VAPO's decoupled GAE, arXiv 2504.05118).

    delta_t = r_t + gamma * V_{t+1} - V_t
    A_t(lambda) = sum_l (gamma * lambda)^l * delta_{t+l}

  advantages = A(lambda_policy); value targets = A(lambda_critic) + V (lambda_critic = 1 gives the
  Monte-Carlo return, VAPO's choice). Computed by one reverse `lax.scan` over T. Masked positions
  are skipped (the recursion carries over them, as verl's `compute_gae_advantage_return` does),
  so interior masks (multi-turn observations) work; V after the last valid token is 0. Outputs are
  stop-gradient and not whitened (verl whitens the advantages; do it downstream if wanted).

  Args:
    rewards_bt: [B, T] per-token rewards (usually the outcome reward on the last token).
    values_bt: [B, T] critic values V(s_t).
    mask_bt: [B, T] mask of response tokens.
    gamma: discount in [0, 1] (1.0 for LLM RL).
    lambda_policy: lambda of the policy advantages in [0, 1]: a float, or a [B] array such as
      `vapo_length_adaptive_lambda(lengths_b)`.
    lambda_critic: lambda of the value targets in [0, 1] (VAPO: 1.0).

  Returns:
    GaeOutput(advantages_bt, value_targets_bt).
  """
  _check_unit_interval("gamma", gamma)
  _check_unit_interval("lambda_policy", lambda_policy)
  _check_unit_interval("lambda_critic", lambda_critic)
  if jnp.shape(values_bt) != jnp.shape(rewards_bt) or jnp.shape(mask_bt) != jnp.shape(rewards_bt):
    raise ValueError(
      f"rewards_bt, values_bt and mask_bt must share one shape, got {jnp.shape(rewards_bt)}, "
      f"{jnp.shape(values_bt)}, {jnp.shape(mask_bt)}"
    )
  dtype = jnp.result_type(_as_float(rewards_bt), _as_float(values_bt))
  rewards = jnp.asarray(rewards_bt, dtype)
  values = jax.lax.stop_gradient(jnp.asarray(values_bt, dtype))
  valid = jnp.asarray(mask_bt) > 0
  row_shape = rewards.shape[:-1]
  lam_policy = jnp.broadcast_to(jnp.asarray(lambda_policy, dtype), row_shape)

  def step(carry, xs):
    next_value, gae_policy, gae_critic = carry
    reward_t, value_t, valid_t = xs
    delta = reward_t + gamma * next_value - value_t
    next_value = jnp.where(valid_t, value_t, next_value)
    gae_policy = jnp.where(valid_t, delta + gamma * lam_policy * gae_policy, gae_policy)
    gae_critic = jnp.where(valid_t, delta + gamma * lambda_critic * gae_critic, gae_critic)
    outs = (jnp.where(valid_t, gae_policy, 0.0), jnp.where(valid_t, gae_critic + value_t, 0.0))
    return (next_value, gae_policy, gae_critic), outs

  zeros = jnp.zeros(row_shape, dtype)
  xs = tuple(jnp.moveaxis(x, -1, 0) for x in (rewards, values, valid))
  _, (adv_tb, target_tb) = jax.lax.scan(step, (zeros, zeros, zeros), xs, reverse=True)
  return GaeOutput(
    advantages_bt=jax.lax.stop_gradient(jnp.moveaxis(adv_tb, 0, -1)),
    value_targets_bt=jax.lax.stop_gradient(jnp.moveaxis(target_tb, 0, -1)),
  )


def vapo_length_adaptive_lambda(lengths_b, *, alpha: float = 0.05):
  """VAPO's length-adaptive GAE lambda for the policy (arXiv 2504.05118).

    lambda(l) = 1 - 1 / (alpha * l), clipped to [0, 1]

  The clip is ours: for l <= 1/alpha (20 tokens at alpha = 0.05) the formula is <= 0 and we use
  lambda = 0 (one-step TD); l <= 0 also gives 0.

  Args:
    lengths_b: [B] response lengths l (token counts).
    alpha: > 0; 0.05 in the paper.

  Returns:
    [B] lambdas in [0, 1], to pass as `gae(..., lambda_policy=...)`.
  """
  _check_positive("alpha", alpha)
  lengths = _as_float(lengths_b)
  lam = 1.0 - _safe_div(jnp.ones_like(lengths), alpha * lengths)
  return jnp.where(lengths > 0, jnp.clip(lam, 0.0, 1.0), 0.0)
