"""Train–inference mismatch corrections: TIS, MIS / IcePop, and the off-policy sequence mask.

The sampler (vLLM-like engine) and the trainer compute different log-probabilities for the same
sampled tokens. With logπ_old the trainer's recomputed pre-update logprobs and logπ_samp the
sampler's, the per-token log-ratio and ratio are

  δ_t = logπ_old(y_t) − logπ_samp(y_t),   ρ_t = exp(δ_t).

Granularity (`level`):
  token:    ρ_t = exp(clip(δ_t, ±C)),  C = `log_ratio_clip` = 20 (verl, tunix).
  sequence: ρ_i = exp(clip(S_i, ±C)) broadcast over the tokens of row i, with either
    `seq_ratio="product"`:   S_i = Σ_t m_t δ_t            (verl / TRL "sequence": the true IS
                                                            ratio of the whole response), or
    `seq_ratio="geometric"`: S_i = Σ_t m_t δ_t / Σ_t m_t  (SkyRL `sequence_mask_metric=geometric`,
                                                            OpenRLHF `seq-mask-tis`: length-
                                                            invariant, so one band fits all
                                                            lengths).
  The product is the default because it is the unbiased sequence IS ratio; its spread grows with
  length, so the geometric mean is the knob for long responses.

Correction (`mode`), with thresholds `high` = C_high and optional `low` = C_low:
  truncate (TIS; Yao et al. 2025, verl `rollout_is`, TRL `*_truncate`):
    w = min(ρ, C_high)            if `low` is None (one-sided, verl/tunix),
    w = clip(ρ, C_low, C_high)    otherwise (two-sided, TRL/OpenRLHF);
    the loss mask is unchanged.
  mask (MIS / IcePop, arXiv 2510.18855; TRL `*_mask`, OpenRLHF `icepop`):
    keep = 1[C_low ≤ ρ ≤ C_high] (no lower bound if `low` is None),
    w = ρ·keep, and the returned loss mask is m·keep.
Weights are stop-gradient multipliers of the per-token policy loss, applied before aggregation;
they are 0 on padding and on rejected tokens.

Note on denominators: passing the *returned* mask to aggregation drops rejected tokens from the
token-mean denominator (verl `compute_rollout_rejection_mask`); passing the *original* mask and
relying on w = 0 keeps them in it (TRL, OpenRLHF). Both are available from the same outputs.

Off-policy sequence mask (OPSM, DeepSeek-V3.2, arXiv 2512.02556 §3.1 Eq. 9; TRL
`off_policy_mask_threshold`, slime `opsm_delta`): drop row i when it has negative advantage and
its sequence estimate of KL(π_samp ‖ π_θ), the masked mean of logπ_samp − sg(logπ_θ), exceeds δ.
"""

import numbers

import jax
import jax.numpy as jnp

from grpojax.objectives import masked

LEVELS = ("token", "sequence")
MODES = ("truncate", "mask")
SEQ_RATIOS = ("product", "geometric")
LOG_RATIO_CLIP = 20.0


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; valid values are {', '.join(choices)}.")


def _is_real(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_thresholds(low, high):
  if not (_is_real(high) and 0 < high < float("inf")):
    raise ValueError(f"high must be a positive finite number, got {high!r}.")
  if low is not None:
    if not (_is_real(low) and low >= 0):
      raise ValueError(f"low must be None or a non-negative number, got {low!r}.")
    if not low < high:
      raise ValueError(f"low must be smaller than high, got low={low!r} >= high={high!r}.")


def _check_positive(name, value):
  if not (_is_real(value) and value > 0):
    raise ValueError(f"{name} must be a positive number, got {value!r}.")


def mismatch_log_ratio(
  old_logprobs_bt,
  sampler_logprobs_bt,
  mask_bt,
  *,
  level,
  seq_ratio="product",
  log_ratio_clip=LOG_RATIO_CLIP,
):
  """log ρ at the requested granularity, clamped to ±`log_ratio_clip`, broadcast to [B, T].

  token: clip(δ_t, ±C); sequence: clip(S_i, ±C) with S_i = Σ_t m_t δ_t ("product") or
  Σ_t m_t δ_t / Σ_t m_t ("geometric"), δ_t = logπ_old − logπ_samp.

  Args:
    old_logprobs_bt: trainer-recomputed logπ_old [B, T].
    sampler_logprobs_bt: sampler logπ_samp [B, T].
    mask_bt: 0/1 response mask [B, T].
    level: "token" or "sequence".
    seq_ratio: "product" or "geometric" (sequence level only).
    log_ratio_clip: C > 0.

  Returns:
    log_ratio_bt [B, T], stop-gradient, 0 on padding.
  """
  _check_choice("level", level, LEVELS)
  _check_choice("seq_ratio", seq_ratio, SEQ_RATIOS)
  _check_positive("log_ratio_clip", log_ratio_clip)
  old_logprobs_bt = jax.lax.stop_gradient(old_logprobs_bt)
  sampler_logprobs_bt = jax.lax.stop_gradient(sampler_logprobs_bt)
  # `where` first: padding logprobs may be garbage (even ±inf) and must not reach the sums.
  delta_bt = jnp.where(mask_bt > 0, old_logprobs_bt - sampler_logprobs_bt, 0.0)
  if level == "token":
    log_ratio_bt = jnp.clip(delta_bt, -log_ratio_clip, log_ratio_clip)
  else:
    reduce = masked.masked_sum if seq_ratio == "product" else masked.masked_mean
    seq_b = jnp.clip(reduce(delta_bt, mask_bt, axis=-1), -log_ratio_clip, log_ratio_clip)
    log_ratio_bt = jnp.broadcast_to(seq_b[..., None], delta_bt.shape)
  return jnp.where(mask_bt > 0, log_ratio_bt, 0.0)


def mismatch_correction(
  old_logprobs_bt,
  sampler_logprobs_bt,
  mask_bt,
  *,
  level,
  mode,
  high,
  low=None,
  seq_ratio="product",
  log_ratio_clip=LOG_RATIO_CLIP,
):
  """TIS / MIS (IcePop) weights and loss mask for the train–inference mismatch.

  truncate: w = min(ρ, C_high) or clip(ρ, C_low, C_high), mask unchanged.
  mask:     keep = 1[C_low ≤ ρ ≤ C_high], w = ρ·keep, mask ← m·keep.
  ρ is the token or sequence ratio π_old/π_samp (see `mismatch_log_ratio` and the module
  docstring). TIS: Yao et al. 2025 (blog); MIS / IcePop: arXiv 2510.18855.

  Args:
    old_logprobs_bt: trainer-recomputed logπ_old [B, T].
    sampler_logprobs_bt: sampler logπ_samp [B, T].
    mask_bt: 0/1 response mask [B, T].
    level: "token" or "sequence".
    mode: "truncate" or "mask".
    high: C_high > 0 (verl/tunix default 2.0 for truncate; TRL 3.0 for sequence mask).
    low: C_low in [0, C_high), or None for no lower bound.
    seq_ratio: "product" (Σ log-ratios) or "geometric" (their masked mean), sequence level.
    log_ratio_clip: clamp on the log-ratio before exp (default 20).

  Returns:
    `(weights_bt, mask_bt, metrics)`: stop-gradient multipliers of the per-token loss [B, T],
    the new 0/1 loss mask [B, T] (mask dtype), and scalar metrics measured over valid tokens
    (token level) or valid sequences (sequence level):
      is_ratio_mean, is_ratio_max: of ρ;
      is_frac_truncated (truncate) or is_frac_masked (mask): fraction with ρ outside the band.
    (The mismatch itself is logged by the trainer for every run: `mismatch/*`.)
  """
  _check_choice("mode", mode, MODES)
  _check_thresholds(low, high)
  log_ratio_bt = mismatch_log_ratio(
    old_logprobs_bt,
    sampler_logprobs_bt,
    mask_bt,
    level=level,
    seq_ratio=seq_ratio,
    log_ratio_clip=log_ratio_clip,
  )
  valid_bt = mask_bt > 0
  ratio_bt = jnp.exp(log_ratio_bt)
  outside_bt = ratio_bt > high
  if low is not None:
    outside_bt = outside_bt | (ratio_bt < low)
  if mode == "truncate":
    weights_bt = jnp.minimum(ratio_bt, high) if low is None else jnp.clip(ratio_bt, low, high)
    new_mask_bt = mask_bt
  else:
    weights_bt = jnp.where(outside_bt, 0.0, ratio_bt)
    new_mask_bt = jnp.where(outside_bt, jnp.zeros_like(mask_bt), mask_bt)
  weights_bt = jax.lax.stop_gradient(jnp.where(valid_bt, weights_bt, 0.0))

  metrics = _ratio_metrics(ratio_bt, outside_bt, valid_bt, level=level)
  metrics["is_frac_truncated" if mode == "truncate" else "is_frac_masked"] = metrics.pop("frac")
  return weights_bt, new_mask_bt, metrics


def _ratio_metrics(ratio_bt, outside_bt, valid_bt, *, level):
  """Mean/max ratio and fraction outside the band, over valid tokens or valid sequences."""
  ratio, outside, valid = ratio_bt, outside_bt, valid_bt
  if level == "sequence":
    # The sequence ratio is constant along a valid row; read it off a row-wise max -> [B].
    ratio = masked.masked_max(ratio_bt, valid_bt, axis=-1)
    outside = jnp.any(outside_bt & valid_bt, axis=-1)
    valid = jnp.any(valid_bt, axis=-1)
  return {
    "is_ratio_mean": masked.masked_mean(ratio, valid),
    "is_ratio_max": masked.masked_max(ratio, valid),
    "frac": masked.masked_mean(outside.astype(ratio.dtype), valid),
  }


def off_policy_sequence_mask(
  logprobs_bt,
  sampler_logprobs_bt,
  advantages,
  mask_bt,
  *,
  delta,
):
  """OPSM: mask sequences with negative advantage whose sampler→policy KL exceeds δ.

  keep_{i,t} = 1[Â_{i,t} ≥ 0] ∨ 1[(1/|o_i|) Σ_t m_t (logπ_samp − sg(logπ_θ)) ≤ δ]
  (DeepSeek-V3.2, arXiv 2512.02556 Eq. 9; TRL `get_off_policy_mask`). The bracketed mean is the
  k1 estimate of KL(π_samp ‖ π_θ) over row i; rows with no valid token estimate 0.

  Args:
    logprobs_bt: current-policy logπ_θ [B, T] (its gradient is not used).
    sampler_logprobs_bt: behaviour/sampler logπ_samp [B, T] ("π_old" in the paper).
    advantages: Â, sequence-level [B] or per-token [B, T].
    mask_bt: 0/1 response mask [B, T].
    delta: δ ≥ 0.

  Returns:
    `(mask_bt, metrics)`: the new 0/1 loss mask [B, T] (mask dtype) and scalar metrics:
      opsm_frac_masked: fraction of valid tokens dropped;
      opsm_seq_kl_mean, opsm_seq_kl_max: of the per-sequence KL estimate over valid rows.
  """
  if not (_is_real(delta) and delta >= 0):
    raise ValueError(f"delta must be a non-negative number, got {delta!r}.")
  valid_bt = mask_bt > 0
  kl_bt = jnp.where(
    valid_bt, jax.lax.stop_gradient(sampler_logprobs_bt) - jax.lax.stop_gradient(logprobs_bt), 0.0
  )
  seq_kl_b = masked.masked_mean(kl_bt, valid_bt, axis=-1)
  advantages = jax.lax.stop_gradient(advantages)
  adv_bt = advantages if advantages.ndim == mask_bt.ndim else advantages[..., None]
  keep_bt = jnp.broadcast_to((adv_bt >= 0) | (seq_kl_b[..., None] <= delta), mask_bt.shape)
  new_mask_bt = jnp.where(keep_bt, mask_bt, jnp.zeros_like(mask_bt))
  valid_b = jnp.any(valid_bt, axis=-1)
  metrics = {
    "opsm_frac_masked": masked.masked_mean((~keep_bt).astype(seq_kl_b.dtype), valid_bt),
    "opsm_seq_kl_mean": masked.masked_mean(seq_kl_b, valid_b),
    "opsm_seq_kl_max": masked.masked_max(seq_kl_b, valid_b),
  }
  return new_mask_bt, metrics
