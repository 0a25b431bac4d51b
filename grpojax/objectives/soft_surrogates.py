"""Soft trust regions and detached IS weights: SAPO, CISPO, MASPO and VESPO.

These replace PPO's hard clip by a smooth gate on the token ratio (SAPO, MASPO) or by a
stop-gradient importance weight multiplying a REINFORCE term (CISPO, VESPO). All follow the
surrogate contract of `grpojax.objectives.surrogates` (module docstring there):

  fn(logprobs, old_logprobs, advantages, mask, *, hyper-parameters) -> (loss_bt, metrics)

with float32 math, padding zeroed, Δ_t = logπ_θ − logπ_old clamped to ±20 before `exp`, and the
shared metrics `ratio_mean`, `ratio_max`, `ratio_min`, `approx_kl`.

Legend: B batch rows, T response length; `_bt` per token, `_b` per sequence.
"""

import jax
import jax.numpy as jnp

from grpojax.objectives import masked, surrogates

CISPO_BOUNDS = ("relative", "absolute")


def sapo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  tau_pos=1.0,
  tau_neg=1.05,
):
  """SAPO soft gate (Soft Adaptive Policy Optimization, Qwen, arXiv 2511.20347).

    r_t = exp(clip(Δ_t, ±20)),  τ_t = τ_pos if Â_t > 0 else τ_neg,
    f(r) = σ(τ (r − 1)) · 4/τ,   ℓ_t = −f(r_t) Â_t.

  Gradient: ∂ℓ_t/∂logπ_t = −4 σ(1 − σ) r_t Â_t = −sech²(τ(r_t − 1)/2) r_t Â_t, with
  σ = σ(τ(r_t − 1)). The weight 4σ(1−σ)r equals 1 at r = 1 (σ = 1/2), so on-policy SAPO has the
  REINFORCE / PPO gradient, and decays smoothly off-policy (no hard clip). The value f(1) = 2/τ
  is a constant offset that carries no gradient. Defaults τ_pos = 1.0, τ_neg = 1.05 (the paper's
  recommendation, τ_neg > τ_pos). verl aggregates SAPO with `seq_mean_token_mean`.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    tau_pos: temperature τ_pos > 0 for Â > 0.
    tau_neg: temperature τ_neg > 0 for Â <= 0.

  Returns:
    (loss_bt, metrics): metrics add `gate_weight_mean`, the mean gradient weight 4σ(1−σ)r.
  """
  where = "sapo"
  surrogates.check_hparam(where, "tau_pos", tau_pos, lambda v: v > 0, "> 0")
  surrogates.check_hparam(where, "tau_neg", tau_neg, lambda v: v > 0, "> 0")
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = surrogates.log_ratio(x)
  ratio_bt = jnp.exp(log_ratio_bt)
  tau_bt = jnp.where(x.advantages > 0, tau_pos, tau_neg)
  sigma_bt = jax.nn.sigmoid(tau_bt * (ratio_bt - 1.0))
  loss_bt = -sigma_bt * (4.0 / tau_bt) * x.advantages
  metrics = {
    "gate_weight_mean": masked.masked_mean(4.0 * sigma_bt * (1.0 - sigma_bt) * ratio_bt, x.valid),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)


def _cispo_bounds(where, bound, epsilon_low, epsilon_high):
  """(low, high) ratio bounds for CISPO; low is None when there is no lower bound."""
  surrogates.check_choice(where, "bound", bound, CISPO_BOUNDS)
  if bound == "relative":
    surrogates.check_hparam(where, "epsilon_high", epsilon_high, lambda v: v >= 0, ">= 0")
    if epsilon_low is not None:
      surrogates.check_hparam(where, "epsilon_low", epsilon_low, lambda v: v >= 0, ">= 0 or None")
      return 1.0 - epsilon_low, 1.0 + epsilon_high
    return None, 1.0 + epsilon_high
  # Absolute bounds must contain r = 1, so that on-policy CISPO is exactly REINFORCE.
  surrogates.check_hparam(
    where,
    "epsilon_high",
    epsilon_high,
    lambda v: 1 <= v < float("inf"),
    ">= 1 and finite with bound='absolute' (it is the cap ε_max on r)",
  )
  if epsilon_low is not None:
    surrogates.check_hparam(
      where,
      "epsilon_low",
      epsilon_low,
      lambda v: 0 <= v <= 1,
      "in [0, 1] or None with bound='absolute' (it is the floor on r)",
    )
  return epsilon_low, epsilon_high


def cispo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  epsilon_low=None,
  epsilon_high=0.2,
  bound="relative",
):
  """CISPO, clipped IS-weight policy optimisation (MiniMax-M1, arXiv 2506.13585).

    r_t = exp(clip(Δ_t, ±20)),  r̂_t = clip(r_t, low, high),
    ℓ_t = −sg(r̂_t) · Â_t · logπ_θ(y_t)      (every token keeps a gradient: −sg(r̂_t) Â_t).

  Bounds:
    bound="relative" (verl, slime):  low = 1 − ε_low, high = 1 + ε_high;
    bound="absolute" (TRL `cispo`, SkyRL tinker):  low = ε_low, high = ε_high (the cap ε_max;
      TRL/ScaleRL recommend 5.0); the bounds must contain 1.
  `epsilon_low=None` removes the lower bound in both modes: the paper effectively drops it and
  tunes only ε_high (verl's example sets clip_ratio_low = 10 for the same effect). The default
  ε_high = 0.2 is verl's example; MiniMax-M1's own value is not confirmed.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    epsilon_low: lower bound parameter (see above) or None for no lower bound.
    epsilon_high: upper bound parameter (see above).
    bound: "relative" or "absolute".

  Returns:
    (loss_bt, metrics): metrics add `clip_frac_low` (r < low), `clip_frac_high` (r > high) and
    `is_weight_mean`, the mean of r̂.
  """
  where = "cispo"
  low, high = _cispo_bounds(where, bound, epsilon_low, epsilon_high)
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = surrogates.log_ratio(x)
  ratio_bt = jnp.exp(log_ratio_bt)
  weight_bt = jnp.minimum(ratio_bt, high)
  clip_low_bt = jnp.zeros_like(x.valid)
  if low is not None:
    weight_bt = jnp.maximum(weight_bt, low)
    clip_low_bt = ratio_bt < low
  weight_bt = jax.lax.stop_gradient(weight_bt)
  loss_bt = -weight_bt * x.advantages * x.logprobs
  metrics = {
    "clip_frac_low": surrogates.frac(clip_low_bt, x.valid),
    "clip_frac_high": surrogates.frac(ratio_bt > high, x.valid),
    "is_weight_mean": masked.masked_mean(weight_bt, x.valid),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)


def _maspo_gate(
  ratio_bt,
  old_logprobs_bt,
  advantages_bt,
  *,
  sigma_base,
  alpha,
  sigma_high,
  adv_low,
  adv_high,
  beta_pos,
  beta_neg,
):
  """MASPO's gate weight w_t (stop-gradient), see `maspo`. Inputs are already sanitised.

  Returns:
    (weight_bt, active_bt): w in (0, 1], and where the Gaussian gate applies.
  """
  ratio_bt = jax.lax.stop_gradient(ratio_bt)
  # m = clip(σ_base / p_old^α, σ_base, σ_high), computed as σ_base·exp(−α logp_old); the exponent
  # is capped so that a near-zero p_old saturates at σ_high instead of overflowing.
  log_cap = jnp.log(sigma_high / sigma_base) + 1.0
  mass_bt = jnp.clip(
    sigma_base * jnp.exp(jnp.minimum(-alpha * old_logprobs_bt, log_cap)), sigma_base, sigma_high
  )
  # max/min(Â, 0): each controller is only used on its own sign, and this keeps 1 − β_neg·Â
  # >= 1 (no division by zero) on the tokens where it is not used.
  sigma_pos_bt = mass_bt * jnp.clip(
    1.0 + beta_pos * jnp.maximum(advantages_bt, 0.0), adv_low, adv_high
  )
  sigma_neg_bt = mass_bt * jnp.clip(
    1.0 / (1.0 - beta_neg * jnp.minimum(advantages_bt, 0.0)), adv_low, adv_high
  )
  pos_bt = (advantages_bt > 0) & (ratio_bt > 1.0)
  neg_bt = (advantages_bt < 0) & (ratio_bt < 1.0)
  sigma_bt = jnp.where(pos_bt, sigma_pos_bt, sigma_neg_bt)
  gauss_bt = jnp.exp(-jnp.square(ratio_bt - 1.0) / (2.0 * jnp.square(sigma_bt)))
  active_bt = pos_bt | neg_bt
  return jnp.where(active_bt, gauss_bt, 1.0), active_bt


def maspo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  sigma_base=1.0,
  alpha=0.3,
  sigma_high=10.0,
  adv_low=0.1,
  adv_high=10.0,
  beta_pos=0.03,
  beta_neg=0.03,
):
  """MASPO mass-adaptive soft Gaussian gate (arXiv 2602.17550; official code).

    ρ_t = exp(clip(Δ_t, ±20)),  p_old = exp(logπ_old),
    m_t = clip(σ_base / p_old^α, σ_base, σ_high)                      (mass-adaptive limiter)
    σ⁺_t = m_t · clip(1 + β_pos Â_t, a_low, a_high)                   (risk controller, Â > 0)
    σ⁻_t = m_t · clip(1 / (1 − β_neg Â_t), a_low, a_high)             (risk controller, Â < 0)
    w_t = exp(−(sg(ρ_t) − 1)² / (2 σ⁺_t²))  if Â_t > 0 and ρ_t > 1,
          exp(−(sg(ρ_t) − 1)² / (2 σ⁻_t²))  if Â_t < 0 and ρ_t < 1,
          1                                  otherwise,
    ℓ_t = −Â_t · w_t · ρ_t                  (no PPO clip; gradient −w_t ρ_t Â_t).

  This is the MASPO-RL code form (`ratio_mode="maspo"`), including its clamps; the README
  formula omits them. The gate only softens the direction the PPO clip would cut (growing a
  positive token, shrinking a negative one); low-mass tokens (small p_old) get a wider gate, and
  strongly negative samples (σ⁻ shrinks as 1/(1 + β|Â|)) a narrower one. Defaults are the
  official ones (α = 0.5 is suggested for 1.5B models). Aggregation: verl default token-mean.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T]; also the token mass p_old = exp(logπ_old).
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    sigma_base: σ_base > 0.
    alpha: mass exponent α >= 0.
    sigma_high: σ_high >= σ_base.
    adv_low: a_low > 0.
    adv_high: a_high >= a_low.
    beta_pos: β_pos >= 0.
    beta_neg: β_neg >= 0.

  Returns:
    (loss_bt, metrics): metrics add `gate_weight_mean` (mean w) and `gate_active_frac`
    (fraction of tokens in a gated region).
  """
  where = "maspo"
  check = surrogates.check_hparam
  check(where, "sigma_base", sigma_base, lambda v: 0 < v < float("inf"), "> 0 and finite")
  check(where, "alpha", alpha, lambda v: v >= 0, ">= 0")
  check(
    where,
    "sigma_high",
    sigma_high,
    lambda v: sigma_base <= v < float("inf"),
    f">= sigma_base ({sigma_base}) and finite",
  )
  check(where, "adv_low", adv_low, lambda v: v > 0, "> 0")
  check(where, "adv_high", adv_high, lambda v: v >= adv_low, f">= adv_low ({adv_low})")
  check(where, "beta_pos", beta_pos, lambda v: v >= 0, ">= 0")
  check(where, "beta_neg", beta_neg, lambda v: v >= 0, ">= 0")
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = surrogates.log_ratio(x)
  ratio_bt = jnp.exp(log_ratio_bt)
  weight_bt, active_bt = _maspo_gate(
    ratio_bt,
    x.old_logprobs,
    x.advantages,
    sigma_base=sigma_base,
    alpha=alpha,
    sigma_high=sigma_high,
    adv_low=adv_low,
    adv_high=adv_high,
    beta_pos=beta_pos,
    beta_neg=beta_neg,
  )
  loss_bt = -x.advantages * weight_bt * ratio_bt
  metrics = {
    "gate_weight_mean": masked.masked_mean(weight_bt, x.valid),
    "gate_active_frac": surrogates.frac(active_bt, x.valid),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)


def vespo_kernel(log_seq_ratio, *, k, lam):
  """φ(W) = W^k · exp(λ (1 − W)) from log W, so φ(1) = 1 (VESPO's kernel, arXiv 2602.10693).

  log φ is capped at +20 (`surrogates.LOG_RATIO_CLIP`) as a pure overflow guard: with k, λ > 0
  the kernel peaks at W = k/λ (φ_max ≈ 1.25 for the defaults), so the cap never binds there.
  """
  log_phi = k * log_seq_ratio + lam * (1.0 - jnp.exp(log_seq_ratio))
  return jnp.exp(jnp.minimum(log_phi, surrogates.LOG_RATIO_CLIP))


def vespo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  k_pos=2.0,
  lambda_pos=3.0,
  k_neg=3.0,
  lambda_neg=2.0,
  rollout_logprobs=None,
):
  """VESPO sequence-level soft IS kernel (arXiv 2602.10693; official code).

    log W_i = clip(Σ_t m_t Δ_t [+ Σ_t m_t (logπ_old − logπ_rollout)], −20, 20)
              (the TRUE product sequence ratio, no length normalisation; Δ_t clamped to ±20),
    φ(W) = W^k · exp(λ (1 − W)),  (k, λ) = (k_pos, λ_pos) if Â_t >= 0 else (k_neg, λ_neg),
    ℓ_t = −sg(φ(W_i)) · Â_t · logπ_θ(y_t)      (REINFORCE-style; gradient −φ(W_i) Â_t).

  φ is normalised so that φ(1) = 1 (on-policy VESPO is REINFORCE); φ ∝ W^k e^{−λW} is the
  note's form up to e^λ. Defaults (2, 3, 3, 2) are the code's and run scripts' (its docstring's
  older 2/1.5/4/2.5 are not used). Aggregation: token-mean (code default).

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T] (sequence-level, broadcast).
    mask: 0/1 response mask [B, T].
    k_pos: k >= 0 for Â >= 0.
    lambda_pos: λ >= 0 for Â >= 0.
    k_neg: k >= 0 for Â < 0.
    lambda_neg: λ >= 0 for Â < 0.
    rollout_logprobs: optional logπ_rollout [B, T]; adds the train/inference (TIS) correction
      π_old/π_rollout to W in log space, as the official code optionally does.

  Returns:
    (loss_bt, metrics): metrics add `phi_mean` (per token), `seq_ratio_mean` (W over valid rows)
    and `log_seq_ratio_mean`.
  """
  where = "vespo"
  for name, value in (
    ("k_pos", k_pos),
    ("lambda_pos", lambda_pos),
    ("k_neg", k_neg),
    ("lambda_neg", lambda_neg),
  ):
    surrogates.check_hparam(where, name, value, lambda v: 0 <= v < float("inf"), ">= 0 and finite")
  x = surrogates.prepare(
    where, logprobs, old_logprobs, advantages, mask, rollout_logprobs=rollout_logprobs
  )
  log_ratio_bt = surrogates.log_ratio(x)
  log_seq_b = masked.masked_sum(log_ratio_bt, x.valid, axis=-1)
  if rollout_logprobs is not None:
    rollout_bt = masked.sanitize(rollout_logprobs, x.valid)
    log_seq_b = log_seq_b + masked.masked_sum(x.old_logprobs - rollout_bt, x.valid, axis=-1)
  log_seq_b = jax.lax.stop_gradient(
    jnp.clip(log_seq_b, -surrogates.LOG_RATIO_CLIP, surrogates.LOG_RATIO_CLIP)
  )
  log_seq_bt = surrogates.broadcast_seq(log_seq_b, x.valid)
  pos_bt = x.advantages >= 0
  phi_bt = jnp.where(
    pos_bt,
    vespo_kernel(log_seq_bt, k=k_pos, lam=lambda_pos),
    vespo_kernel(log_seq_bt, k=k_neg, lam=lambda_neg),
  )
  loss_bt = -phi_bt * x.advantages * x.logprobs
  row_valid_b = surrogates.seq_valid(x.valid)
  metrics = {
    "phi_mean": masked.masked_mean(phi_bt, x.valid),
    "seq_ratio_mean": masked.masked_mean(jnp.exp(log_seq_b), row_valid_b),
    "log_seq_ratio_mean": masked.masked_mean(log_seq_b, row_valid_b),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)
