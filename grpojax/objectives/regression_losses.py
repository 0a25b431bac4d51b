"""Squared-regression policy losses: OAPL and FlowRL's trajectory balance.

Both regress a sequence-level log-ratio onto a reward-derived target instead of weighting
logπ_θ by an advantage. They follow the surrogate contract of `grpojax.objectives.surrogates`:
the per-sequence loss L_i is written on every valid token of row i, so aggregating with
`seq_mean_token_mean` gives the papers' mean_i L_i (aggregating with `token_mean` would instead
weight sequences by their length).

Legend: B batch rows, T response length; `_bt` per token, `_b` per sequence.
"""

import jax
import jax.numpy as jnp

from grpojax.objectives import masked, surrogates


def oapl_loss(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  beta2=1e-3,
):
  """OAPL squared regression (arXiv 2602.19362; official code).

    S_i = Σ_t m_t (logπ_θ(y_t) − logπ_lag(y_t))     (token SUM, no length normalisation),
    L_i = (β2 · S_i − (r_i − V̂*(x_i)))²,
    ∂L_i/∂logπ_{i,t} = 2 β2 (β2 S_i − (r_i − V̂*)).

  `old_logprobs` must hold the lagged inference policy π_lag (the sampler's logprobs; the
  official code passes them as `ref_log_prob`). `advantages` must hold r_i − V̂*(x_i) broadcast
  over tokens, with V̂*(x) = β1 log mean_j exp(r_j / β1) over the prompt's N samples (that
  estimator lives with the advantage estimators); its masked token mean is used per row. There
  are no importance weights and no clipping, so S_i is NOT clamped (clamping would cut the
  regression gradient); no `exp` is taken. Defaults: β2 = 0.001 from the official script.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_lag [B, T].
    advantages: r − V̂* [B, T].
    mask: 0/1 response mask [B, T].
    beta2: β2 > 0.

  Returns:
    (loss_bt, metrics): metrics add `residual_mean`, `residual_abs_mean` (β2 S − target, over
    valid rows) and `seq_log_ratio_mean` (S over valid rows), plus the ratio metrics against
    π_lag.
  """
  where = "oapl_loss"
  surrogates.check_hparam(where, "beta2", beta2, lambda v: 0 < v < float("inf"), "> 0 and finite")
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  seq_log_ratio_b = masked.masked_sum(x.logprobs - x.old_logprobs, x.valid, axis=-1)
  target_b = surrogates.seq_mean(x.advantages, x.valid)
  residual_b = beta2 * seq_log_ratio_b - target_b
  loss_bt = surrogates.broadcast_seq(jnp.square(residual_b), x.valid)
  row_valid_b = surrogates.seq_valid(x.valid)
  metrics = {
    "residual_mean": masked.masked_mean(residual_b, row_valid_b),
    "residual_abs_mean": masked.masked_mean(jnp.abs(residual_b), row_valid_b),
    "seq_log_ratio_mean": masked.masked_mean(seq_log_ratio_b, row_valid_b),
    **surrogates.ratio_metrics(surrogates.log_ratio(x), x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)


def flowrl_loss(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  log_z,
  ref_logprobs,
  beta=15.0,
  is_weight_clip=None,
  is_weight_max=None,
):
  """FlowRL trajectory-balance loss (arXiv 2509.15207; official code).

    δ_i = log Z_φ(x_i) + (1/|y_i|) Σ_t m_t logπ_θ(y_t) − β r̂_i − (1/|y_i|) Σ_t m_t logπ_ref(y_t),
    r̂_i = (1/|y_i|) Σ_t m_t Â_t        (the GRPO advantage used as the log-reward),
    w_i = sg(exp(clip(Σ_t m_t Δ_t, ±20)))   (sequence IS weight π_θ/π_old, token SUM),
    L_i = w_i δ_i²,
    ∂L_i/∂logπ_{i,t} = 2 w_i δ_i / |y_i|,   ∂L_i/∂log Z_i = 2 w_i δ_i.

  Length normalisation: the log-probabilities in δ are token MEANS, the IS weight uses the
  token SUM (both as in the official code). β = 15 is hard-coded there. The official code
  computes a clipped weight clip(w, 1 − ε, 1 + ε) but uses the UNCLIPPED one, while the paper
  describes the clipped one: `is_weight_clip=None` (default) follows the code,
  `is_weight_clip=ε` (e.g. the PPO `clip_ratio` 0.2) the paper. `is_weight_max=M` caps the
  weight from above only, w = min(w, M): a verl port of FlowRL clamps `imp_w_raw` at max=10
  (`torch.clamp(w, max=10)`), which is `is_weight_max=10` (it is not a value of
  `is_weight_clip`, whose band is symmetric around 1). The log-weight clamp at ±20 is ours
  (numerical guard). `log_z` is differentiable (the Z head is trained through this loss).

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T] (IS weight only).
    advantages: Â [B, T] (group-normalised, broadcast).
    mask: 0/1 response mask [B, T].
    log_z: log Z_φ(x) per row [B] (all leading axes of `logprobs`).
    ref_logprobs: logπ_ref [B, T].
    beta: reward scale β > 0.
    is_weight_clip: ε in [0, 1) to clip w to [1 − ε, 1 + ε], or None for no clip.
    is_weight_max: M > 0 to cap w at M (after any `is_weight_clip`), or None for no cap.

  Returns:
    (loss_bt, metrics): metrics add `tb_residual_mean`, `tb_residual_abs_mean`,
    `is_weight_mean`, `is_weight_max` and `log_z_mean` (over valid rows).
  """
  where = "flowrl_loss"
  surrogates.check_hparam(where, "beta", beta, lambda v: 0 < v < float("inf"), "> 0 and finite")
  if is_weight_clip is not None:
    surrogates.check_hparam(
      where, "is_weight_clip", is_weight_clip, lambda v: 0 <= v < 1, "in [0, 1) or None"
    )
  if is_weight_max is not None:
    surrogates.check_hparam(
      where, "is_weight_max", is_weight_max, lambda v: 0 < v < float("inf"), "> 0 or None"
    )
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask, ref_logprobs=ref_logprobs)
  row_shape = jnp.shape(logprobs)[:-1]
  if jnp.shape(log_z) != row_shape:
    raise ValueError(
      f"{where}: log_z has shape {jnp.shape(log_z)} but must be {row_shape} "
      f"(one value per row of logprobs {jnp.shape(logprobs)})."
    )
  row_valid_b = surrogates.seq_valid(x.valid)
  log_z_b = jnp.where(row_valid_b, jnp.asarray(log_z).astype(jnp.float32), 0.0)
  ref_bt = masked.sanitize(ref_logprobs, x.valid)
  residual_b = (
    log_z_b
    + surrogates.seq_mean(x.logprobs, x.valid)
    - beta * surrogates.seq_mean(x.advantages, x.valid)
    - surrogates.seq_mean(ref_bt, x.valid)
  )
  log_ratio_bt = surrogates.log_ratio(x)
  log_w_b = jnp.clip(
    masked.masked_sum(log_ratio_bt, x.valid, axis=-1),
    -surrogates.LOG_RATIO_CLIP,
    surrogates.LOG_RATIO_CLIP,
  )
  weight_b = jax.lax.stop_gradient(jnp.exp(log_w_b))
  if is_weight_clip is not None:
    weight_b = jnp.clip(weight_b, 1.0 - is_weight_clip, 1.0 + is_weight_clip)
  if is_weight_max is not None:
    weight_b = jnp.minimum(weight_b, is_weight_max)
  loss_bt = surrogates.broadcast_seq(weight_b * jnp.square(residual_b), x.valid)
  metrics = {
    "tb_residual_mean": masked.masked_mean(residual_b, row_valid_b),
    "tb_residual_abs_mean": masked.masked_mean(jnp.abs(residual_b), row_valid_b),
    "is_weight_mean": masked.masked_mean(weight_b, row_valid_b),
    "is_weight_max": masked.masked_max(weight_b, row_valid_b),
    "log_z_mean": masked.masked_mean(log_z_b, row_valid_b),
    **surrogates.ratio_metrics(log_ratio_bt, x.valid),
  }
  return surrogates.finish(loss_bt, x.valid, metrics)
