"""Policy-gradient surrogates, ratio/clip family: REINFORCE, PPO-clip (DAPO, dual-clip), GSPO, GMPO.

Every surrogate in `surrogates`, `soft_surrogates`, `selective_surrogates` and `regression_losses`
follows one contract, so that a recipe can chain an advantage estimator, a surrogate and an
aggregation (`aggregation.aggregate`) without knowing which surrogate it holds:

  fn(logprobs, old_logprobs, advantages, mask, *, <keyword-only hyper-parameters>, <extras>)
      -> (loss_bt, metrics)

- `logprobs` [B, T]: logπ_θ of the sampled tokens (the only differentiated input).
- `old_logprobs` [B, T]: logπ_old (behaviour / pre-update policy; for OAPL the lagged policy).
- `advantages` [B, T]: Â already broadcast over tokens.
- `mask` [B, T]: 0/1 response mask (any non-zero entry counts as a valid token).
- extras are keyword-only arrays a method needs (`entropy`, `ref_logprobs`, `log_z`, `key`).
- `loss_bt` [B, T] float32 is the UNREDUCED per-token loss to MINIMISE (L = −J), exactly 0 on
  padding. Sequence-level methods (GSPO, GMPO, OAPL, FlowRL) write their per-sequence loss L_i on
  every valid token of row i; aggregate them with `seq_mean_token_mean` to get mean_i L_i.
- `metrics` is a dict of float32 scalars (masked means over valid tokens, stop-gradient).

Conventions shared by all of them:
- Arrays may carry extra leading axes ([..., T]); the token axis is always last, sequence
  statistics reduce over it, and batch statistics over everything.
- Everything is computed in float32. Padding entries of every input are replaced by 0 before any
  arithmetic, so garbage (even ±inf) in padding never reaches a value or a gradient.
- `old_logprobs`, `advantages` and the other extras (except `log_z`) are stop-gradient inputs.
- Log-ratios Δ_t = logπ_θ − logπ_old are clamped to ±`LOG_RATIO_CLIP` = 20 before `exp` (verl,
  SkyRL, OpenRLHF), so log-ratios of ±50 give finite losses and gradients; the clamp
  has zero gradient outside ±20, as in verl.
- Shared metrics: `ratio_mean`, `ratio_max`, `ratio_min` of the token ratio r_t = exp(Δ_t) and
  `approx_kl`, the k3 estimate of KL(π_old‖π_θ): masked mean of (r − 1) − log r.
- Hyper-parameters are validated eagerly in Python (before tracing): a bad value raises
  ValueError naming the function and the field. Hyper-parameters passed as tracers are not checked.

Legend: B batch rows, T response length; `_bt` per token, `_b` per sequence.
"""

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax.objectives import masked

LOG_RATIO_CLIP = 20.0
# GSPO's sequence log-ratio is also clamped above at 10, as verl/tunix do.
GSPO_LOG_RATIO_MAX = 10.0


# ---------------------------------------------------------------------------------------------
# Shared helpers (used by the sibling surrogate modules as well).
# ---------------------------------------------------------------------------------------------


def _is_real_scalar(value):
  if isinstance(value, (bool, np.bool_)):
    return False
  if isinstance(value, numbers.Real):
    return True
  if isinstance(value, (np.ndarray, jax.Array)):
    return value.ndim == 0 and (
      jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    )
  return False


def check_hparam(where, name, value, predicate, requirement):
  """Raises ValueError naming `where` and `name` unless `predicate(value)` holds.

  Args:
    where: name of the calling function, for the message.
    name: name of the hyper-parameter.
    value: its value; a jax tracer is accepted unchecked (it cannot be checked eagerly).
    predicate: callable on a Python float.
    requirement: human-readable requirement, e.g. ">= 0".
  """
  if isinstance(value, jax.core.Tracer):
    return
  if not _is_real_scalar(value):
    raise ValueError(f"{where}: {name} must be a number {requirement}, got {value!r}.")
  number = float(value)
  if math.isnan(number) or not predicate(number):
    raise ValueError(f"{where}: {name} must be {requirement}, got {value!r}.")


def check_choice(where, name, value, choices):
  """Raises ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"{where}: {name} must be one of {choices}, got {value!r}.")


def check_shapes(where, logprobs, **arrays):
  """Raises ValueError naming the first array whose shape differs from `logprobs`'."""
  shape = jnp.shape(logprobs)
  if len(shape) < 1:
    raise ValueError(f"{where}: logprobs must have a token axis [..., T], got shape {shape}.")
  for name, array in arrays.items():
    if array is not None and jnp.shape(array) != shape:
      raise ValueError(
        f"{where}: {name} has shape {jnp.shape(array)} but logprobs has shape {shape}; "
        f"all per-token inputs must be [B, T]."
      )


class TokenInputs(NamedTuple):
  """Sanitised float32 per-token inputs; every array is 0 on padding."""

  logprobs: jax.Array  # differentiable
  old_logprobs: jax.Array  # stop-gradient
  advantages: jax.Array  # stop-gradient
  valid: jax.Array  # bool, mask > 0


def prepare(where, logprobs, old_logprobs, advantages, mask, **extras):
  """Checks shapes (of the four inputs and of `extras`) and returns sanitised `TokenInputs`."""
  check_shapes(
    where, logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask, **extras
  )
  valid = jnp.asarray(mask) > 0
  return TokenInputs(
    logprobs=masked.sanitize(logprobs, valid, differentiable=True),
    old_logprobs=masked.sanitize(old_logprobs, valid),
    advantages=masked.sanitize(advantages, valid),
    valid=valid,
  )


def log_ratio(inputs):
  """Δ_t = clip(logπ_θ − logπ_old, ±LOG_RATIO_CLIP) [B, T], 0 on padding."""
  return jnp.clip(inputs.logprobs - inputs.old_logprobs, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)


def seq_mean(x_bt, valid_bt):
  """Per-sequence masked mean over the token axis [B] (0 for all-padding rows)."""
  return masked.masked_mean(x_bt, valid_bt, axis=-1)


def seq_valid(valid_bt):
  """[B] bool: the row has at least one valid token."""
  return jnp.any(valid_bt, axis=-1)


def broadcast_seq(x_b, valid_bt):
  """Writes a per-sequence value on every token of its row [B, T]."""
  return jnp.broadcast_to(x_b[..., None], valid_bt.shape)


def ratio_metrics(log_ratio_bt, valid_bt):
  """ratio_mean / ratio_max / ratio_min of r = exp(Δ) and the k3 `approx_kl` = E[(r−1) − Δ]."""
  log_ratio_bt = jax.lax.stop_gradient(log_ratio_bt)
  ratio_bt = jnp.exp(log_ratio_bt)
  return {
    "ratio_mean": masked.masked_mean(ratio_bt, valid_bt),
    "ratio_max": masked.masked_max(ratio_bt, valid_bt),
    "ratio_min": masked.masked_min(ratio_bt, valid_bt),
    "approx_kl": masked.masked_mean(ratio_bt - 1.0 - log_ratio_bt, valid_bt),
  }


def frac(condition_bt, valid_bt):
  """Fraction of valid tokens where `condition_bt` holds."""
  return masked.masked_mean(condition_bt.astype(jnp.float32), valid_bt)


def finish(loss_bt, valid_bt, metrics):
  """Zeroes padding in `loss_bt` and makes every metric a stop-gradient float32 scalar."""
  loss_bt = jnp.where(valid_bt, loss_bt, 0.0).astype(jnp.float32)
  metrics = {k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in metrics.items()}
  return loss_bt, metrics


def _clip_range(where, epsilon_low, epsilon_high):
  check_hparam(where, "epsilon_low", epsilon_low, lambda x: x >= 0, ">= 0")
  if epsilon_high is None:
    epsilon_high = epsilon_low
  check_hparam(where, "epsilon_high", epsilon_high, lambda x: x >= 0, ">= 0")
  return epsilon_low, epsilon_high


# ---------------------------------------------------------------------------------------------
# Surrogates.
# ---------------------------------------------------------------------------------------------


def reinforce(logprobs, old_logprobs, advantages, mask):
  """Plain REINFORCE: ℓ_t = −Â_t · logπ_θ(y_t)  (Williams 1992; the GPG loss, arXiv 2504.02546).

  ∂ℓ_t/∂logπ_t = −Â_t. `old_logprobs` only feeds the ratio metrics.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T] (metrics only).
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].

  Returns:
    (loss_bt [B, T], metrics) with the shared ratio metrics.
  """
  x = prepare("reinforce", logprobs, old_logprobs, advantages, mask)
  loss_bt = -x.advantages * x.logprobs
  return finish(loss_bt, x.valid, ratio_metrics(log_ratio(x), x.valid))


def ppo_clip(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  epsilon_low=0.2,
  epsilon_high=None,
  dual_clip_c=None,
):
  """PPO clipped surrogate with clip-higher and optional dual clip (GRPO / DAPO / dual-clip PPO).

    r_t = exp(clip(Δ_t, ±20)),
    ℓ_t = max(−Â_t r_t, −Â_t clip(r_t, 1 − ε_low, 1 + ε_high))          (arXiv 1707.06347)
    dual clip, Â_t < 0:  ℓ_t = min(ℓ_t, −c Â_t)                           (arXiv 1912.09729)

  GRPO (arXiv 2402.03300) uses ε_low = ε_high = 0.2; DAPO's clip-higher (arXiv 2503.14476) uses
  ε_low = 0.2, ε_high = 0.28. verl's `clip_ratio_c` default for the dual clip is 3.0.
  Gradient: ∂ℓ_t/∂logπ_t = −Â_t r_t inside the trust region and 0 where a clip binds (Â > 0 and
  r > 1 + ε_high; Â < 0 and r < 1 − ε_low; Â < 0 and r > c).

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T].
    mask: 0/1 response mask [B, T].
    epsilon_low: ε_low >= 0.
    epsilon_high: ε_high >= 0; None means ε_high = ε_low (symmetric clip).
    dual_clip_c: c > 1 enables the dual clip for negative advantages; None disables it.

  Returns:
    (loss_bt, metrics): metrics add `clip_frac_low` (Â < 0, r < 1 − ε_low), `clip_frac_high`
    (Â > 0, r > 1 + ε_high) and `dual_clip_frac` (Â < 0, r > c; 0 when disabled).
  """
  where = "ppo_clip"
  epsilon_low, epsilon_high = _clip_range(where, epsilon_low, epsilon_high)
  if dual_clip_c is not None:
    check_hparam(where, "dual_clip_c", dual_clip_c, lambda x: x > 1, "> 1 (or None)")
  x = prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = log_ratio(x)
  ratio_bt = jnp.exp(log_ratio_bt)
  adv_bt = x.advantages
  loss_bt = jnp.maximum(
    -adv_bt * ratio_bt, -adv_bt * jnp.clip(ratio_bt, 1.0 - epsilon_low, 1.0 + epsilon_high)
  )
  dual_bt = jnp.zeros_like(x.valid)
  if dual_clip_c is not None:
    loss_bt = jnp.where(adv_bt < 0, jnp.minimum(loss_bt, -dual_clip_c * adv_bt), loss_bt)
    dual_bt = (adv_bt < 0) & (ratio_bt > dual_clip_c)
  metrics = {
    "clip_frac_low": frac((adv_bt < 0) & (ratio_bt < 1.0 - epsilon_low), x.valid),
    "clip_frac_high": frac((adv_bt > 0) & (ratio_bt > 1.0 + epsilon_high), x.valid),
    "dual_clip_frac": frac(dual_bt, x.valid),
    **ratio_metrics(log_ratio_bt, x.valid),
  }
  return finish(loss_bt, x.valid, metrics)


def _gspo_clipped_loss(x, log_seq_ratio_bt, epsilon_low, epsilon_high):
  """Shared tail of GSPO and GSPO-token: ℓ = max(−Â s, −Â clip(s, 1 − ε_l, 1 + ε_h))."""
  seq_ratio_bt = jnp.exp(log_seq_ratio_bt)
  adv_bt = x.advantages
  loss_bt = jnp.maximum(
    -adv_bt * seq_ratio_bt,
    -adv_bt * jnp.clip(seq_ratio_bt, 1.0 - epsilon_low, 1.0 + epsilon_high),
  )
  seq_ratio_b = jax.lax.stop_gradient(seq_ratio_bt[..., 0])
  row_valid_b = seq_valid(x.valid)
  metrics = {
    "clip_frac_low": frac((adv_bt < 0) & (seq_ratio_bt < 1.0 - epsilon_low), x.valid),
    "clip_frac_high": frac((adv_bt > 0) & (seq_ratio_bt > 1.0 + epsilon_high), x.valid),
    "seq_ratio_mean": masked.masked_mean(seq_ratio_b, row_valid_b),
    "seq_ratio_max": masked.masked_max(seq_ratio_b, row_valid_b),
    **ratio_metrics(log_ratio(x), x.valid),
  }
  return finish(loss_bt, x.valid, metrics)


def _gspo_log_seq_ratio(x):
  """log s_i = clip(mean_t Δ_t, −20, 10) [B] (Δ_t already clamped to ±20)."""
  return jnp.clip(seq_mean(log_ratio(x), x.valid), -LOG_RATIO_CLIP, GSPO_LOG_RATIO_MAX)


def gspo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  epsilon_low=3e-4,
  epsilon_high=4e-4,
):
  """GSPO, sequence-level ratio (Group Sequence Policy Optimization, arXiv 2507.18071).

    s_i = (π_θ(y_i|x) / π_old(y_i|x))^{1/|y_i|} = exp(clip((1/|y_i|) Σ_t m_t Δ_t, −20, 10)),
    ℓ_{i,t} = max(−Â_{i,t} s_i, −Â_{i,t} clip(s_i, 1 − ε_low, 1 + ε_high)).

  The gradient of s_i reaches every token of row i: with a sequence-constant Â and
  `seq_mean_token_mean` aggregation, ∂L/∂logπ_{i,t} = −Â_i s_i / (N |y_i|) inside the clip band.
  Aggregate with `seq_mean_token_mean` (verl forces it for GSPO). Defaults ε = 3e-4 / 4e-4 are
  the paper's. The upper clamp of log s at 10 follows verl/tunix.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T] (normally sequence-constant).
    mask: 0/1 response mask [B, T].
    epsilon_low: ε_low >= 0.
    epsilon_high: ε_high >= 0; None means ε_low.

  Returns:
    (loss_bt, metrics): clip fractions count tokens of clipped sequences; `seq_ratio_mean`,
    `seq_ratio_max` are over valid rows.
  """
  where = "gspo"
  epsilon_low, epsilon_high = _clip_range(where, epsilon_low, epsilon_high)
  x = prepare(where, logprobs, old_logprobs, advantages, mask)
  log_seq_ratio_bt = broadcast_seq(_gspo_log_seq_ratio(x), x.valid)
  return _gspo_clipped_loss(x, log_seq_ratio_bt, epsilon_low, epsilon_high)


def gspo_token(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  epsilon_low=3e-4,
  epsilon_high=4e-4,
):
  """GSPO-token (arXiv 2507.18071 §4.3), the form verl, tunix and SkyRL implement.

    log s_{i,t} = clip(logπ_θ(y_t) − sg[logπ_θ(y_t)] + sg[(1/|y_i|) Σ_u m_u Δ_u], −20, 10),
    s_{i,t} = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]  (value s_i, per-token gradient),
    ℓ_{i,t} = max(−Â_{i,t} s_{i,t}, −Â_{i,t} clip(s_{i,t}, 1 − ε_low, 1 + ε_high)).

  ∂ℓ_{i,t}/∂logπ_{i,t} = −Â_{i,t} s_i inside the band. With a sequence-constant Â it has the
  same value and (under `seq_mean_token_mean`) the same gradient as `gspo`, provided every
  |Δ_t| <= 20 (beyond, `gspo`'s per-token clamp zeroes that token's share).

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T] (may vary per token).
    mask: 0/1 response mask [B, T].
    epsilon_low: ε_low >= 0.
    epsilon_high: ε_high >= 0; None means ε_low.

  Returns:
    (loss_bt, metrics) as for `gspo`.
  """
  where = "gspo_token"
  epsilon_low, epsilon_high = _clip_range(where, epsilon_low, epsilon_high)
  x = prepare(where, logprobs, old_logprobs, advantages, mask)
  sg = jax.lax.stop_gradient
  log_seq_b = sg(seq_mean(log_ratio(x), x.valid))
  log_seq_ratio_bt = jnp.clip(
    x.logprobs - sg(x.logprobs) + broadcast_seq(log_seq_b, x.valid),
    -LOG_RATIO_CLIP,
    GSPO_LOG_RATIO_MAX,
  )
  return _gspo_clipped_loss(x, log_seq_ratio_bt, epsilon_low, epsilon_high)


def gmpo(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  epsilon_low=0.4,
  epsilon_high=0.4,
):
  """GMPO, geometric-mean policy optimisation (arXiv 2507.20673; verl `geo_mean`).

    Δ̃_t = sgn(Â_t) · min(sgn(Â_t) Δ_t, sgn(Â_t) clip(Δ_t, −ε_low, ε_high)),
    R_i = exp((1/|y_i|) Σ_t m_t Δ̃_t)   (geometric mean of the clipped token ratios),
    Ā_i = (1/|y_i|) Σ_t m_t Â_t,        L_i = −Ā_i R_i, written on every token of row i.

  The clip range is in LOG space: ratios stay in (e^{−ε_low}, e^{ε_high}); the paper's default
  is ε = 0.4. Aggregate with `seq_mean_token_mean` to get verl's mean_i L_i. Token gradient:
  ∂L_i/∂logπ_{i,t} = −Ā_i R_i / |y_i| where token t is unclipped, 0 where Δ̃_t is clipped
  (Â > 0 and Δ > ε_high; Â < 0 and Δ < −ε_low). Tokens with Â_t = 0 get Δ̃_t = 0, as in verl.

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T].
    advantages: Â [B, T] (GMPO assumes sequence-constant; per-token Â enters via Ā_i and sgn).
    mask: 0/1 response mask [B, T].
    epsilon_low: log-space ε_low >= 0.
    epsilon_high: log-space ε_high >= 0; None means ε_low.

  Returns:
    (loss_bt, metrics): `clip_frac_low`/`clip_frac_high` count tokens whose Δ̃ is clipped;
    `seq_ratio_mean` is the mean R_i over valid rows.
  """
  where = "gmpo"
  epsilon_low, epsilon_high = _clip_range(where, epsilon_low, epsilon_high)
  x = prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = log_ratio(x)
  sign_bt = jnp.sign(x.advantages)
  clipped_bt = jnp.clip(log_ratio_bt, -epsilon_low, epsilon_high)
  log_ratio_tilde_bt = sign_bt * jnp.minimum(sign_bt * log_ratio_bt, sign_bt * clipped_bt)
  seq_ratio_b = jnp.exp(seq_mean(log_ratio_tilde_bt, x.valid))
  seq_adv_b = seq_mean(x.advantages, x.valid)
  loss_bt = broadcast_seq(-seq_adv_b * seq_ratio_b, x.valid)
  metrics = {
    "clip_frac_low": frac((x.advantages < 0) & (log_ratio_bt < -epsilon_low), x.valid),
    "clip_frac_high": frac((x.advantages > 0) & (log_ratio_bt > epsilon_high), x.valid),
    "seq_ratio_mean": masked.masked_mean(seq_ratio_b, seq_valid(x.valid)),
    **ratio_metrics(log_ratio_bt, x.valid),
  }
  return finish(loss_bt, x.valid, metrics)
