"""Token-level advantages with a critic: GAE with separate policy / critic λ, VAPO's
length-adaptive λ (arXiv 2504.05118), the sparse terminal reward, its Monte-Carlo returns (the
λ = 1 critic targets) and the explained variance of a critic.

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

  This equals NeMo-RL's clamp(1 - 1/clamp(alpha * l, min=1), 0, 1): for l <= 1/alpha (20 tokens
  at alpha = 0.05) the formula is <= 0 and lambda = 0 (one-step TD); l <= 0 also gives 0.

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


def terminal_rewards(rewards_b, mask_bt):
  """The sparse per-token reward: each row's reward on its last response token, 0 elsewhere
  (rows without response tokens get 0 whatever their reward).

  Args:
    rewards_b: [B] scalar rewards.
    mask_bt: [B, T] response mask.

  Returns:
    [B, T] float32.
  """
  valid = jnp.asarray(mask_bt) > 0
  row_valid = jnp.any(valid, axis=-1)
  rewards = jnp.where(row_valid, jnp.asarray(rewards_b, jnp.float32), 0.0)
  positions = jnp.arange(valid.shape[-1])
  last = jnp.max(jnp.where(valid, positions, -1), axis=-1, keepdims=True)
  return jnp.where(positions == last, rewards[:, None], 0.0)


def monte_carlo_returns(rewards_b, mask_bt, *, gamma: float = 1.0):
  """G_t = Σ_{k≥t} γ^{k−t} r_k of the sparse terminal reward: the λ = 1 GAE target, which needs
  no values. Counted over response tokens (an interior mask is skipped), so G_t = γ^n R with n
  the response tokens after t; 0 off the mask. With γ = 1, G_t = R on every token."""
  rewards_bt = terminal_rewards(rewards_b, mask_bt)
  zeros = jnp.zeros_like(rewards_bt)
  out = gae(rewards_bt, zeros, mask_bt, gamma=gamma, lambda_policy=1.0, lambda_critic=1.0)
  return out.value_targets_bt


def explained_variance(values_bt, returns_bt, mask_bt):
  """1 − Var(G − V) / Var(G) over the masked tokens (population variances): 1 for a perfect
  critic, 0 for one that predicts the mean, negative for worse; 0 when G does not vary."""
  valid = jnp.asarray(mask_bt) > 0
  values = jnp.where(valid, jnp.asarray(values_bt, jnp.float32), 0.0)
  returns = jnp.where(valid, jnp.asarray(returns_bt, jnp.float32), 0.0)

  def var(x):
    mean = jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    sq = jnp.where(valid, jnp.square(x - mean), 0.0)
    return jnp.sum(sq) / jnp.maximum(jnp.sum(valid), 1)

  var_returns = var(returns)
  ok = var_returns > 0
  return jnp.where(ok, 1.0 - var(returns - values) / jnp.where(ok, var_returns, 1.0), 0.0)
