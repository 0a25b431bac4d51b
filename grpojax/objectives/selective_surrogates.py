"""Surrogates that single out a few tokens: STAPO's spurious tokens, Clip-Cov and KL-Cov.

- STAPO (arXiv 2602.15620) drops "spurious" tokens (positive advantage, low probability, low
  entropy) from the loss and renormalises over the rest. The piece is `stapo_mask`, a pure
  function returning the new 0/1 mask; `stapo` is the convenience recipe mask → PPO-clip.
- Clip-Cov and KL-Cov (arXiv 2505.22617, verl `clip_cov` / `kl_cov`) pick tokens whose
  centred covariance (Â − mean Â)(logπ − mean logπ) is high and detach them (Clip-Cov, random
  pick inside a covariance band) or add |Δ| to them (KL-Cov, top-k).

Token statistics (means, quantiles, top-k) are taken over ALL valid tokens of the arrays passed
in, i.e. over the (micro-)batch; under `jax.vmap` they become per-mapped-slice statistics. This
matches verl, which computes them per micro-batch.

All surrogates follow the contract in `grpojax.objectives.surrogates`.

Legend: B batch rows, T response length; `_bt` per token, `_b` per sequence.
"""

import jax
import jax.numpy as jnp

from grpojax.objectives import masked, surrogates

# float32 products such as 2e-4 * 10_000 can land a hair below the integer verl gets in
# float64; this relative nudge keeps floor(ratio * N) equal to Python's int(ratio * N).
_FLOOR_NUDGE = 1e-6


def _masked_quantile(x_bt, valid_bt, q):
  """q-quantile of the valid entries, linear interpolation (NumPy's default); 0 if none."""
  big = jnp.finfo(jnp.float32).max
  sorted_n = jnp.sort(jnp.where(valid_bt, x_bt, big).reshape(-1))
  count = jnp.sum(valid_bt.astype(jnp.int32))
  last = jnp.maximum(count - 1, 0)
  pos = q * last.astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, last)
  w = pos - lo.astype(jnp.float32)
  value = sorted_n[lo] * (1.0 - w) + jnp.where(w > 0, sorted_n[hi], 0.0) * w
  return jnp.where(count > 0, value, 0.0)


def _ranks(priority_bt):
  """0-based rank of every entry among all entries (ascending; ties broken by position)."""
  flat = priority_bt.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return ranks.reshape(priority_bt.shape)


def _num_selected(ratio, valid_bt):
  """k = max(⌊ratio · N_valid⌋, 1) as float32 (verl's `clip_num` / `k_percent_nums`)."""
  n_valid = jnp.sum(valid_bt.astype(jnp.float32))
  return jnp.maximum(jnp.floor(ratio * n_valid * (1.0 + _FLOOR_NUDGE)), 1.0)


def _centred_covariance(x):
  """cov_t = (Â_t − mean Â)(logπ_t − mean logπ) over valid tokens, stop-gradient [B, T]."""
  logprobs_bt = jax.lax.stop_gradient(x.logprobs)
  adv_c = x.advantages - masked.masked_mean(x.advantages, x.valid)
  logp_c = logprobs_bt - masked.masked_mean(logprobs_bt, x.valid)
  return adv_c * logp_c


# ---------------------------------------------------------------------------------------------
# STAPO.
# ---------------------------------------------------------------------------------------------


def stapo_mask(
  logprobs,
  advantages,
  mask,
  *,
  entropy,
  prob_threshold=0.01,
  entropy_threshold=None,
  entropy_quantile=0.05,
):
  """STAPO's S2T mask: drop spurious tokens (arXiv 2602.15620).

    spurious_t = m_t ∧ (Â_t > 0) ∧ (π(y_t) < τ_p) ∧ (H_t < τ_h),   keep_t = m_t ∧ ¬spurious_t,

  with π(y_t) = exp(logprobs) and H_t the full-vocabulary entropy at position t. τ_h is either
  the fixed `entropy_threshold` or, when that is None, the `entropy_quantile` quantile (linear
  interpolation) of H over the valid tokens of the batch. The thresholds τ_p = 0.01 and
  τ_h = 5th percentile are the secondary source's "e.g." values (not confirmed in the paper).

  How a composer uses it: compute `keep_bt` once, then pass it as `mask` BOTH to the surrogate
  and to `aggregation.aggregate`. The aggregation denominator then counts only the remaining
  tokens, which is the paper's "renormalise the loss over valid tokens". Which policy's
  probability to threshold is not known: pass `logprobs` (current π_θ, default reading) or
  `old_logprobs` (π_old); either is treated as stop-gradient.

  Args:
    logprobs: log-probabilities used for π(y_t) [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    entropy: per-token entropy H_t [B, T] (nats).
    prob_threshold: τ_p in (0, 1].
    entropy_threshold: fixed τ_h >= 0, or None to use `entropy_quantile`.
    entropy_quantile: q in [0, 1] for the batch-quantile τ_h.

  Returns:
    (keep_bt float32 0/1 [B, T], metrics) with `stapo_masked_frac` (spurious / valid tokens) and
    `stapo_entropy_threshold` (the τ_h used).
  """
  where = "stapo_mask"
  surrogates.check_hparam(
    where, "prob_threshold", prob_threshold, lambda v: 0 < v <= 1, "in (0, 1]"
  )
  if entropy_threshold is None:
    surrogates.check_hparam(
      where, "entropy_quantile", entropy_quantile, lambda v: 0 <= v <= 1, "in [0, 1]"
    )
  else:
    surrogates.check_hparam(
      where, "entropy_threshold", entropy_threshold, lambda v: v >= 0, ">= 0 or None"
    )
  surrogates.check_shapes(where, logprobs, advantages=advantages, mask=mask, entropy=entropy)
  valid_bt = jnp.asarray(mask) > 0
  logprobs_bt = masked.sanitize(logprobs, valid_bt)
  adv_bt = masked.sanitize(advantages, valid_bt)
  entropy_bt = masked.sanitize(entropy, valid_bt)
  if entropy_threshold is None:
    tau_h = _masked_quantile(entropy_bt, valid_bt, entropy_quantile)
  else:
    tau_h = jnp.asarray(entropy_threshold, jnp.float32)
  spurious_bt = (
    valid_bt & (adv_bt > 0) & (jnp.exp(logprobs_bt) < prob_threshold) & (entropy_bt < tau_h)
  )
  keep_bt = (valid_bt & ~spurious_bt).astype(jnp.float32)
  metrics = {
    "stapo_masked_frac": surrogates.frac(spurious_bt, valid_bt),
    "stapo_entropy_threshold": tau_h,
  }
  metrics = {k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in metrics.items()}
  return keep_bt, metrics


def stapo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  entropy,
  prob_threshold=0.01,
  entropy_threshold=None,
  entropy_quantile=0.05,
  use_old_probs=False,
  epsilon_low=0.2,
  epsilon_high=None,
  dual_clip_c=None,
):
  """STAPO = GRPO's PPO-clip on the tokens `stapo_mask` keeps (arXiv 2602.15620).

    ℓ_t = keep_t · max(−Â_t r_t, −Â_t clip(r_t, 1 − ε_low, 1 + ε_high))   (see `ppo_clip`).

  `loss_bt` is 0 on spurious tokens. For the paper's renormalisation, aggregate with the mask
  returned by `stapo_mask(...)` (same arguments), not with the original one: token-mean then
  divides by the number of kept tokens. The base objective (clip values, aggregation) is not
  confirmed by the sources; PPO-clip with GRPO's ε is our reading.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    entropy: per-token entropy H_t [B, T].
    prob_threshold: τ_p, see `stapo_mask`.
    entropy_threshold: τ_h or None, see `stapo_mask`.
    entropy_quantile: quantile for τ_h, see `stapo_mask`.
    use_old_probs: threshold π_old instead of π_θ.
    epsilon_low: PPO ε_low.
    epsilon_high: PPO ε_high (None means ε_low).
    dual_clip_c: optional dual-clip c > 1.

  Returns:
    (loss_bt, metrics): `ppo_clip`'s metrics over the kept tokens plus `stapo_masked_frac` and
    `stapo_entropy_threshold`.
  """
  surrogates.check_shapes("stapo", logprobs, old_logprobs=old_logprobs)
  probs_source = old_logprobs if use_old_probs else logprobs
  keep_bt, mask_metrics = stapo_mask(
    probs_source,
    advantages,
    mask,
    entropy=entropy,
    prob_threshold=prob_threshold,
    entropy_threshold=entropy_threshold,
    entropy_quantile=entropy_quantile,
  )
  loss_bt, metrics = surrogates.ppo_clip(
    logprobs,
    old_logprobs,
    advantages,
    keep_bt,
    epsilon_low=epsilon_low,
    epsilon_high=epsilon_high,
    dual_clip_c=dual_clip_c,
  )
  return loss_bt, {**metrics, **mask_metrics}


# ---------------------------------------------------------------------------------------------
# Clip-Cov and KL-Cov.
# ---------------------------------------------------------------------------------------------


def clip_cov(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  key,
  epsilon_low=0.2,
  epsilon_high=None,
  clip_cov_ratio=2e-4,
  clip_cov_lb=1.0,
  clip_cov_ub=5.0,
):
  """Clip-Cov (arXiv 2505.22617; verl `compute_policy_loss_clip_cov`).

    r_t = exp(clip(Δ_t, ±20)),  ℓ⁰_t = max(−Â_t r_t, −Â_t clip(r_t, 1 − ε_low, 1 + ε_high)),
    cov_t = (Â_t − mean Â)(logπ_t − mean logπ)   (means over valid tokens, stop-gradient),
    C = {t valid, not already clipped by PPO, lb < cov_t < ub},
    S = k tokens drawn uniformly without replacement from C, k = min(max(⌊ratio·N⌋, 1), |C|),
    ℓ_t = ℓ⁰_t · (1 − 1[t ∈ S]).

  As in verl, selected tokens are multiplied by 0, so both their value and their gradient
  vanish; the aggregation denominator still counts them (pass the original mask). The uniform
  draw uses `key` (random priorities, the k smallest win), so it is reproducible per key.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    key: PRNG key for the random pick.
    epsilon_low: PPO ε_low >= 0.
    epsilon_high: PPO ε_high >= 0 (None means ε_low).
    clip_cov_ratio: fraction of valid tokens to detach, in (0, 1].
    clip_cov_lb: covariance band lower bound.
    clip_cov_ub: covariance band upper bound (> lb).

  Returns:
    (loss_bt, metrics): `ppo_clip`'s metrics plus `cov_selected_frac` and `cov_mean`.
  """
  where = "clip_cov"
  if key is None:
    raise ValueError(f"{where}: key must be a PRNG key, got None.")
  surrogates.check_hparam(
    where, "clip_cov_ratio", clip_cov_ratio, lambda v: 0 < v <= 1, "in (0, 1]"
  )
  surrogates.check_hparam(where, "clip_cov_lb", clip_cov_lb, lambda v: v > -float("inf"), "finite")
  surrogates.check_hparam(
    where, "clip_cov_ub", clip_cov_ub, lambda v: v > clip_cov_lb, f"> clip_cov_lb ({clip_cov_lb})"
  )
  surrogates.check_hparam(where, "epsilon_low", epsilon_low, lambda v: v >= 0, ">= 0")
  epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
  surrogates.check_hparam(where, "epsilon_high", epsilon_high, lambda v: v >= 0, ">= 0")
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  loss_bt, metrics = surrogates.ppo_clip(
    logprobs,
    old_logprobs,
    advantages,
    mask,
    epsilon_low=epsilon_low,
    epsilon_high=epsilon_high,
  )
  ratio_bt = jnp.exp(jax.lax.stop_gradient(surrogates.log_ratio(x)))
  adv_bt = x.advantages
  # verl's `clip_by_origin`: the clipped branch strictly wins the max.
  clipped_bt = -adv_bt * jnp.clip(ratio_bt, 1.0 - epsilon_low, 1.0 + epsilon_high) > (
    -adv_bt * ratio_bt
  )
  cov_bt = _centred_covariance(x)
  candidate_bt = x.valid & ~clipped_bt & (cov_bt > clip_cov_lb) & (cov_bt < clip_cov_ub)
  priority_bt = jnp.where(candidate_bt, jax.random.uniform(key, cov_bt.shape), 2.0)
  selected_bt = candidate_bt & (_ranks(priority_bt) < _num_selected(clip_cov_ratio, x.valid))
  loss_bt = jnp.where(selected_bt, 0.0, loss_bt)
  metrics = {
    **metrics,
    "cov_selected_frac": surrogates.frac(selected_bt, x.valid),
    "cov_mean": masked.masked_mean(cov_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)


def kl_cov(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  kl_cov_ratio=2e-4,
  kl_coef=1.0,
):
  """KL-Cov (arXiv 2505.22617; verl `compute_policy_loss_kl_cov`).

    r_t = exp(clip(Δ_t, ±20)),
    cov_t = (Â_t − mean Â)(logπ_t − mean logπ)   (means over valid tokens, stop-gradient),
    S = the k valid tokens of largest cov_t, k = max(⌊ratio·N⌋, 1) (capped at N),
    ℓ_t = −Â_t r_t + kl_coef · 1[t ∈ S] · |Δ_t|.

  There is no ratio clipping anywhere in this mode (as in verl). |Δ| is given the gradient
  sign(Δ), which is 0 at Δ = 0 like torch's `abs` (JAX's `abs` would give 1 there, i.e. a
  spurious push on the first on-policy step). kl_coef defaults to 1.0, verl's code fallback
  (its actor.yaml sets `ppo_kl_coef: 0.1`). Ties in cov are broken by position.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    kl_cov_ratio: fraction of valid tokens to penalise, in (0, 1].
    kl_coef: coefficient >= 0 of |Δ| on the selected tokens.

  Returns:
    (loss_bt, metrics): metrics add `cov_selected_frac`, `cov_mean` and `abs_kl` (mean |Δ|).
  """
  where = "kl_cov"
  surrogates.check_hparam(where, "kl_cov_ratio", kl_cov_ratio, lambda v: 0 < v <= 1, "in (0, 1]")
  surrogates.check_hparam(where, "kl_coef", kl_coef, lambda v: v >= 0, ">= 0")
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = surrogates.log_ratio(x)
  ratio_bt = jnp.exp(log_ratio_bt)
  abs_log_ratio_bt = log_ratio_bt * jnp.sign(jax.lax.stop_gradient(log_ratio_bt))
  cov_bt = _centred_covariance(x)
  priority_bt = jnp.where(x.valid, -cov_bt, jnp.inf)
  selected_bt = x.valid & (_ranks(priority_bt) < _num_selected(kl_cov_ratio, x.valid))
  loss_bt = -x.advantages * ratio_bt + jnp.where(selected_bt, kl_coef * abs_log_ratio_bt, 0.0)
  metrics = {
    "cov_selected_frac": surrogates.frac(selected_bt, x.valid),
    "cov_mean": masked.masked_mean(cov_bt, x.valid),
    "abs_kl": masked.masked_mean(jax.lax.stop_gradient(abs_log_ratio_bt), x.valid),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)
