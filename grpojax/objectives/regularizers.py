"""Regularisers: per-token KL(π_θ ‖ π_ref) estimators and the entropy bonus.

Every function returns an unreduced per-token array [B, T], zero on padding; aggregate it with
`grpojax.objectives.aggregation` alongside the policy loss.

KL estimators (Schulman, "Approximating KL divergence", 2020), with δ_t = logπ_θ(y_t) −
logπ_ref(y_t) and y_t ~ π_θ:

  k1 = δ
  k2 = ½ δ²
  k3 = exp(−δ) + δ − 1 = π_ref/π_θ − log(π_ref/π_θ) − 1 ≥ 0    ("low_var_kl")

Clamps (verl `kl_penalty_forward` / §8, the paper): for k3 only, −δ is clamped to
[−`log_ratio_clip`, `log_ratio_clip`] = [−20, 20] before the exp, and the result to
[−`k3_clip`, `k3_clip`] = [−10, 10] (k3 ≥ 0, so in effect min(k3, 10)). k1 and k2 are polynomial
in δ, cannot overflow, and are left unclamped, as in verl. Inside a clamp the gradient is 0.

Gradients when an estimator is *differentiated as a loss* (Tang & Munos, arXiv 2506.09477):
  ∇k1 = ∇logπ_θ, zero in expectation: the k1 loss carries no KL gradient at all.
  ∇k2 = δ·∇logπ_θ, whose on-policy expectation is ∇KL(π_θ ‖ π_ref).
  ∇k3 = (1 − π_ref/π_θ)·∇logπ_θ = (1 − exp(−δ))·∇logπ_θ, whose on-policy expectation is
    ∇KL(π_ref ‖ π_θ), the *reverse* direction (GRPO's "k3 in the loss", arXiv 2402.03300).
As a reward penalty (detached) all three estimate KL(π_θ ‖ π_ref) per token; k1 is unbiased.
"""

import math
import numbers

import jax
import jax.numpy as jnp

KL_KINDS = ("k1", "k2", "k3")
LOG_RATIO_CLIP = 20.0
K3_CLIP = 10.0


def _check_kind(kind):
  if kind not in KL_KINDS:
    raise ValueError(f"Unknown KL estimator kind {kind!r}; valid kinds are {', '.join(KL_KINDS)}.")


def _is_real(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_nonnegative(name, value):
  if not (_is_real(value) and value >= 0):
    raise ValueError(f"{name} must be a non-negative number, got {value!r}.")


def _check_coef(coef):
  # An adaptive controller may hand in a traced jax.Array; its producer owns that range check.
  if not isinstance(coef, jax.Array):
    _check_nonnegative("coef", coef)


def _check_positive(name, value):
  if not (_is_real(value) and value > 0):
    raise ValueError(f"{name} must be a positive number, got {value!r}.")


def check_kl(kl_coef, kl_kind, *, positive=False):
  """Validates a KL term's settings; errors name `kl_coef` / `kl_kind`."""
  if kl_kind not in KL_KINDS:
    raise ValueError(
      f"kl_kind: unknown KL estimator {kl_kind!r}; valid kinds are {', '.join(KL_KINDS)}."
    )
  ok = _is_real(kl_coef) and math.isfinite(kl_coef) and (kl_coef > 0 if positive else kl_coef >= 0)
  if not ok:
    need = (
      "> 0 and finite (a multiplicative controller started at 0 stays at 0)"
      if positive
      else ">= 0 and finite"
    )
    raise ValueError(f"kl_coef must be {need}, got {kl_coef!r}.")


def kl_estimate(
  logprobs_bt, ref_logprobs_bt, *, kind, log_ratio_clip=LOG_RATIO_CLIP, k3_clip=K3_CLIP
):
  """Per-token estimate of KL(π_θ ‖ π_ref) from sampled-token logprobs (no masking).

  k1 = δ; k2 = ½δ²; k3 = exp(−δ) + δ − 1 with δ = logπ_θ − logπ_ref; for k3, −δ is clamped to
  ±`log_ratio_clip` and the result to ±`k3_clip` (verl; see the module docstring).

  Args:
    logprobs_bt: logπ_θ of the sampled tokens [B, T] (differentiable).
    ref_logprobs_bt: logπ_ref of the same tokens [B, T].
    kind: "k1", "k2" or "k3".
    log_ratio_clip: k3 input clamp (default 20).
    k3_clip: k3 output clamp (default 10).

  Returns:
    kl_bt [B, T].
  """
  _check_kind(kind)
  _check_positive("log_ratio_clip", log_ratio_clip)
  _check_positive("k3_clip", k3_clip)
  delta_bt = logprobs_bt - ref_logprobs_bt
  if kind == "k1":
    return delta_bt
  if kind == "k2":
    return 0.5 * jnp.square(delta_bt)
  neg_delta_bt = jnp.clip(-delta_bt, -log_ratio_clip, log_ratio_clip)
  return jnp.clip(k3_from_log_ratio(neg_delta_bt), -k3_clip, k3_clip)


# 1/k! for k = 2..10: the Taylor coefficients of e^r − 1 − r.
_K3_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(2, 11))


def k3_from_log_ratio(log_ratio):
  """k3 = e^r − 1 − r for r = log(q/p) on samples from p, computed without cancellation.

  Written naively, exp(r) − r − 1 loses every significant digit as r → 0 (float32: about 1e-7
  absolute error on a value ≈ r²/2). For |r| < 1 we use the Taylor series to r^10 (truncation
  error below 1e-7 relative), elsewhere expm1(r) − r, which is exact to a few ulps there.

  Args:
    log_ratio: r, any shape.

  Returns:
    e^r − 1 − r, same shape, ≥ 0.
  """
  small = jnp.abs(log_ratio) < 1.0
  r = jnp.where(small, log_ratio, 0.0)
  poly = jnp.zeros_like(r)
  for coefficient in reversed(_K3_TAYLOR):
    poly = coefficient + r * poly
  return jnp.where(small, r * r * poly, jnp.expm1(log_ratio) - log_ratio)


def kl_penalty_loss(
  logprobs_bt,
  ref_logprobs_bt,
  mask_bt,
  *,
  kind,
  coef,
  log_ratio_clip=LOG_RATIO_CLIP,
  k3_clip=K3_CLIP,
):
  """Per-token KL loss term β·k(δ_t)·m_t, differentiated through logπ_θ.

  The GRPO objective's −β·D_KL[π_θ‖π_ref]_{i,t} (arXiv 2402.03300) as a loss to minimise. See the
  module docstring for what each estimator's gradient estimates (k3: the reverse KL).

  Args:
    logprobs_bt: logπ_θ of the sampled tokens [B, T] (differentiable).
    ref_logprobs_bt: logπ_ref [B, T] (treated as a constant).
    mask_bt: 0/1 loss mask [B, T].
    kind: "k1", "k2" or "k3".
    coef: β ≥ 0, a Python number or a (possibly traced) scalar array from an adaptive
      controller.
    log_ratio_clip: k3 input clamp.
    k3_clip: k3 output clamp.

  Returns:
    loss_bt [B, T], 0 on padding.
  """
  _check_coef(coef)
  kl_bt = kl_estimate(
    logprobs_bt,
    jax.lax.stop_gradient(ref_logprobs_bt),
    kind=kind,
    log_ratio_clip=log_ratio_clip,
    k3_clip=k3_clip,
  )
  return jnp.where(mask_bt > 0, coef * kl_bt, 0.0)


def kl_reward_penalty(
  logprobs_bt,
  ref_logprobs_bt,
  mask_bt,
  *,
  kind,
  coef,
  log_ratio_clip=LOG_RATIO_CLIP,
  k3_clip=K3_CLIP,
):
  """Detached per-token penalty β·k(δ_t)·m_t, to be *subtracted* from the per-token reward.

  r̃_t = r_t − β·sg(k(δ_t)) (PPO-RLHF style KL-in-reward; verl `use_kl_in_reward`, whose default
  estimator is k1). No gradient flows through it.

  Args:
    logprobs_bt: logπ_θ (or logπ_old) of the sampled tokens [B, T].
    ref_logprobs_bt: logπ_ref [B, T].
    mask_bt: 0/1 response mask [B, T].
    kind: "k1", "k2" or "k3".
    coef: β ≥ 0, a Python number or a (possibly traced) scalar array from an adaptive
      controller.
    log_ratio_clip: k3 input clamp.
    k3_clip: k3 output clamp.

  Returns:
    penalty_bt [B, T], stop-gradient, 0 on padding.
  """
  return jax.lax.stop_gradient(
    kl_penalty_loss(
      logprobs_bt,
      ref_logprobs_bt,
      mask_bt,
      kind=kind,
      coef=coef,
      log_ratio_clip=log_ratio_clip,
      k3_clip=k3_clip,
    )
  )


def entropy_bonus_loss(entropy_bt, mask_bt, *, coef):
  """Per-token entropy bonus as a loss: −c·H_t·m_t (verl `entropy_coeff`).

  Minimising it maximises the policy entropy H_t = −Σ_v π_θ(v) log π_θ(v) at each position.

  Args:
    entropy_bt: per-token full-vocabulary entropy [B, T] (differentiable).
    mask_bt: 0/1 loss mask [B, T].
    coef: c ≥ 0, a Python number or a (possibly traced) scalar array.

  Returns:
    loss_bt [B, T], 0 on padding.
  """
  _check_coef(coef)
  return jnp.where(mask_bt > 0, -coef * entropy_bt, 0.0)
