"""Advantage estimators: pure, jittable functions from rewards (and values/log-probs) to advantages.

Axis legend for the shape suffixes: P prompts, G samples per prompt (the G samples of a prompt are
contiguous), B = P*G sample rows (row b = p*G + g), T response tokens, S prompt tokens.

Group estimators take `rewards_pg` [P, G] and an optional `valid_pg` [P, G] (set where the sample
exists) and return sequence-level advantages [P, G]; the caller broadcasts them over tokens. They
share these conventions (choices of grpojax, pinned by tests):

* Invalid samples get advantage 0 and never enter a statistic (their rewards may be garbage/NaN).
* A group with fewer than two valid samples, or whose valid rewards are all equal (zero variance),
  gives exactly 0 to every member: there is no comparison, hence no signal, and never a NaN.
  (verl gives a one-sample group mean 0 / std 1, i.e. keeps its raw reward; we do not.)
* Statistics weight samples, not tokens (verl's REINFORCE++ whitening weights tokens).
* `eps` is added to the standard deviation, `(r - mean) / (std + eps)`, as in verl and tunix;
  `eps=0` is allowed because zero-variance groups are caught exactly, before any division.
* Standard deviations use `ddof=1` (Bessel) by default, the verl / tunix / TRL / AReaL choice;
  `ddof=0` gives maxtext's `jnp.std`.

Hyper-parameters are keyword-only and checked eagerly (in Python, at trace time); a bad value
raises ValueError naming the argument.
"""

import jax
import jax.numpy as jnp
import numpy as np

from grpojax.objectives import masked

# Slack when turning a fraction of a token count into a count, so that float error in e.g.
# 0.2 * 15 = 3.0000000000000004 does not add a token.
_COUNT_SLACK = 1e-3


# --------------------------------------------------------------------------------------------
# Validation (eager, Python-side).


def _is_traced(value) -> bool:
  return isinstance(value, jax.core.Tracer)


def _check_nonnegative(name: str, value) -> None:
  if _is_traced(value):
    return
  if not np.all(np.asarray(value) >= 0):
    raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_positive(name: str, value) -> None:
  if _is_traced(value):
    return
  if not np.all(np.asarray(value) > 0):
    raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_unit_interval(name: str, value) -> None:
  if _is_traced(value):
    return
  arr = np.asarray(value)
  if not np.all((arr >= 0) & (arr <= 1)):
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _check_ddof(ddof) -> None:
  if isinstance(ddof, bool) or ddof not in (0, 1):
    raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")


def _check_group_rewards(rewards_pg, valid_pg) -> None:
  if jnp.ndim(rewards_pg) != 2:
    raise ValueError(f"rewards_pg must have shape [P, G], got shape {jnp.shape(rewards_pg)}")
  if valid_pg is not None and jnp.shape(valid_pg) != jnp.shape(rewards_pg):
    raise ValueError(
      f"valid_pg must have the shape of rewards_pg {jnp.shape(rewards_pg)}, "
      f"got {jnp.shape(valid_pg)}"
    )


# --------------------------------------------------------------------------------------------
# Shared pieces.


def _as_float(x):
  """`x` as an array of at least float32 precision (bf16/int/bool rewards are promoted)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _valid_mask(valid, shape):
  if valid is None:
    return jnp.ones(shape, dtype=bool)
  return jnp.asarray(valid) > 0


def _keep(y, axis):
  """Re-inserts the reduced `axis` so `y` broadcasts against the input (no-op for axis=None)."""
  return y if axis is None else jnp.expand_dims(y, axis)


def _moments(x, valid, *, axis, ddof):
  """Masked mean and standard deviation of `x` over `axis`, kept broadcastable."""
  count = _keep(jnp.sum(valid, axis=axis, dtype=x.dtype), axis)
  mean = _keep(masked.masked_mean(x, valid, axis), axis)
  sq_dev = _keep(masked.masked_sum(jnp.square(x - mean), valid, axis), axis)
  var = sq_dev / jnp.maximum(count - ddof, 1.0)
  return mean, jnp.sqrt(var)


def _varies(x, valid, *, axis):
  """True where the valid entries of `x` over `axis` are not all equal (so at least two exist)."""
  spread = masked.masked_max(x, valid, axis) > masked.masked_min(x, valid, axis)
  return _keep(spread, axis)


def _safe_div(num, den):
  """`num / den`, and 0 where `den` is 0 (no NaN in the value or in a gradient)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _group_centred(rewards, valid):
  """r - mean_group(r) on informative samples, exactly 0 elsewhere."""
  mean = masked.masked_mean(rewards, valid, -1)[..., None]
  return jnp.where(valid & _varies(rewards, valid, axis=-1), rewards - mean, 0.0)


# --------------------------------------------------------------------------------------------
# Group-relative estimators.


def grpo_advantages(rewards_pg, valid_pg=None, *, eps: float = 1e-6, ddof: int = 1):
  """GRPO outcome advantage: the group z-score (DeepSeekMath, arXiv 2402.03300).

    A_i = (r_i - mean_g r) / (std_g r + eps)

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.
    eps: added to the group std (verl/tunix use 1e-6, TRL 1e-4, AReaL 1e-5).
    ddof: 1 for the unbiased std (verl, tunix, TRL; default), 0 for the population std.

  Returns:
    [P, G] advantages; 0 for invalid samples, one-sample and zero-variance groups.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  _check_nonnegative("eps", eps)
  _check_ddof(ddof)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  mean, std = _moments(rewards, valid, axis=-1, ddof=ddof)
  adv = _safe_div(rewards - mean, std + eps)
  return jnp.where(valid & _varies(rewards, valid, axis=-1), adv, 0.0)


def dr_grpo_advantages(rewards_pg, valid_pg=None):
  """Dr. GRPO advantage: the group-mean-centred reward, no std (arXiv 2503.20783).

    A_i = r_i - mean_g r

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.

  Returns:
    [P, G] advantages summing to 0 over the valid samples of every group.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  rewards = _as_float(rewards_pg)
  return _group_centred(rewards, _valid_mask(valid_pg, rewards.shape))


def rloo_advantages(rewards_pg, valid_pg=None):
  """RLOO: REINFORCE with the leave-one-out baseline (Ahmadian et al., arXiv 2402.14740).

    A_i = r_i - 1/(n-1) * sum_{j != i} r_j = n/(n-1) * (r_i - mean_g r)

  with n the number of valid samples in the group.

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.

  Returns:
    [P, G] advantages; 0 for invalid samples, one-sample and zero-variance groups.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=rewards.dtype)
  # Non-zero entries only occur in groups with count >= 2, so the clamp never changes a value.
  return _group_centred(rewards, valid) * count / jnp.maximum(count - 1.0, 1.0)


def pass_at_k_advantages(
  rewards_pg, valid_pg=None, *, k: int, eps: float = 1e-6, correct_threshold: float = 0.5
):
  """Analytical Pass@k advantage (Pass@k Training, Chen et al., arXiv 2508.10751).

  With n valid samples, c of them correct, in a group:

    rho     = 1 - C(n - c, k) / C(n, k)                   (unbiased group pass@k)
    sigma   = sqrt(rho * (1 - rho))
    A_pos   = (1 - rho) / (sigma + eps)
    A_neg   = (1 - rho - C(n - c - 1, k - 1) / C(n - 1, k - 1)) / (sigma + eps)

  which is the closed form of the group z-score of the pass@k reward over all k-subsets (the
  authors' `calc_adv`, RUCAIBox/Passk_Training). For k = 1 it is GRPO with ddof=0.

  Choices: a sample is correct iff its reward is > `correct_threshold` (0/1 and +-1 rewards both
  work with the default 0.5). A group with n < k valid samples uses k_eff = min(k, n): the
  unbiased estimator needs n >= k, and pass@n is the best estimate available.

  Args:
    rewards_pg: [P, G] rewards (binarised with `correct_threshold`).
    valid_pg: optional [P, G] mask of samples that exist.
    k: the k of pass@k, a static int with 1 <= k <= G.
    eps: added to sigma, as in the authors' code (1e-6).
    correct_threshold: rewards above it count as correct.

  Returns:
    [P, G] advantages; 0 for invalid samples and groups that are all correct or all wrong.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  num_samples = jnp.shape(rewards_pg)[-1]
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_samples:
    raise ValueError(f"k must be an int with 1 <= k <= G={num_samples}, got {k!r}")
  _check_nonnegative("eps", eps)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  correct = valid & (rewards > correct_threshold)
  dtype = rewards.dtype
  n = jnp.sum(valid, axis=-1, keepdims=True, dtype=dtype)
  c = jnp.sum(correct, axis=-1, keepdims=True, dtype=dtype)
  k_eff = jnp.minimum(float(k), n)
  i = jnp.arange(k, dtype=dtype)

  # C(a, m) / C(b, m) = prod_{i < m} (a - i) / (b - i); a factor <= 0 makes the ratio 0.
  def binom_ratio(a, b, m):
    terms = jnp.maximum(a - i, 0.0) / jnp.maximum(b - i, 1.0)
    return jnp.prod(jnp.where(i < m, terms, 1.0), axis=-1, keepdims=True)

  rho = 1.0 - binom_ratio(n - c, n, k_eff)
  sigma = jnp.sqrt(jnp.maximum(rho * (1.0 - rho), 0.0))
  adv_pos = _safe_div(1.0 - rho, sigma + eps)
  adv_neg = _safe_div(1.0 - rho - binom_ratio(n - c - 1.0, n - 1.0, k_eff - 1.0), sigma + eps)
  adv = jnp.where(correct, adv_pos, adv_neg)
  # sigma = 0 (all correct or all wrong) gives 0 analytically; the mask makes it exact.
  return jnp.where(valid & (c > 0) & (c < n), adv, 0.0)


# --------------------------------------------------------------------------------------------
# Batch-normalised estimators.


def reinforce_pp_advantages(rewards_pg, valid_pg=None, *, eps: float = 1e-6, ddof: int = 1):
  """REINFORCE++: the reward whitened over the whole batch (Hu, arXiv 2501.03262).

    A_i = (r_i - mean_batch r) / (std_batch r + eps)

  The batch mean is the only baseline, so the group structure is ignored (the batch is the
  "group": a batch with fewer than two distinct valid rewards gives 0). verl whitens the
  token-level returns (`masked_whiten`, rsqrt(var + 1e-8)) and adds the KL penalty to the
  reward; here the sequence rewards are whitened per sample, and any KL-in-reward shaping is
  the caller's.

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.
    eps: added to the batch std.
    ddof: 1 (unbiased, verl's `masked_whiten`; default) or 0.

  Returns:
    [P, G] advantages with mean 0 over the valid samples.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  _check_nonnegative("eps", eps)
  _check_ddof(ddof)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  mean, std = _moments(rewards, valid, axis=None, ddof=ddof)
  adv = _safe_div(rewards - mean, std + eps)
  return jnp.where(valid & _varies(rewards, valid, axis=None), adv, 0.0)


def reinforce_pp_baseline_advantages(
  rewards_pg, valid_pg=None, *, eps: float = 1e-6, ddof: int = 1
):
  """REINFORCE++-baseline: group-mean subtraction, then batch std normalisation (arXiv 2501.03262).

    A_i = (r_i - mean_g r) / (std_batch(r - mean_g r) + eps)

  The batch std is over all valid samples, including the exact zeros of one-sample and
  zero-variance groups (as verl's whitening includes them). The batch mean of the centred
  rewards is exactly 0 under per-sample weighting, so no second mean is subtracted; this keeps
  the zeros exact.

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.
    eps: added to the batch std.
    ddof: 1 (unbiased; default) or 0.

  Returns:
    [P, G] advantages.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  _check_nonnegative("eps", eps)
  _check_ddof(ddof)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  centred = _group_centred(rewards, valid)
  _, std = _moments(centred, valid, axis=None, ddof=ddof)
  return _safe_div(centred, std + eps)


def seeupo_advantages(
  rewards_pg, valid_pg=None, *, clip: float = 3.0, eps: float = 1e-6, ddof: int = 1
):
  """SeeUPO per-turn advantage: GRPO without std, batch z-norm, clamp (arXiv 2602.06554).

    A_i = clip((r_i - mean_g r) / (std_batch(r - mean_g r) + eps), -clip, clip)

  As in the official code (`norm_adv_by_std_in_grpo=False` + `special_norm`, clamp [-3, 3]).
  The batch-mean subtraction of the z-normalisation is exactly 0 for group-centred rewards
  (per-sample weighting) and is omitted, so this is `reinforce_pp_baseline_advantages` clamped.
  The multiplication by the accumulated ratio M of already-updated turns is the caller's.

  Args:
    rewards_pg: [P, G] scalar rewards of one turn's responses.
    valid_pg: optional [P, G] mask of samples that exist.
    clip: the clamp bound, > 0 (3.0 in the official code).
    eps: added to the batch std.
    ddof: 1 (`torch.std`; default) or 0.

  Returns:
    [P, G] advantages in [-clip, clip].
  """
  _check_positive("clip", clip)
  adv = reinforce_pp_baseline_advantages(rewards_pg, valid_pg, eps=eps, ddof=ddof)
  return jnp.clip(adv, -clip, clip)


# --------------------------------------------------------------------------------------------
# OAPL.


def _oapl_parts(rewards, valid, beta1):
  """(m, s) with V*(x) = m + s, m the group max: r - V* = (r - m) - s is exact for ties."""
  top = masked.masked_max(rewards, valid, -1)[..., None]
  scaled = jnp.where(valid, (rewards - top) / beta1, -jnp.inf)
  lse = jax.nn.logsumexp(scaled, axis=-1, keepdims=True, where=valid)
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=rewards.dtype)
  soft = jnp.where(count > 0, beta1 * (lse - jnp.log(jnp.maximum(count, 1.0))), 0.0)
  return top, soft


def oapl_value(rewards_pg, valid_pg=None, *, beta1: float = 1.0):
  """OAPL's optimal value estimate (arXiv 2602.19362, `convert_to_v_star=True`).

    V*(x) = beta1 * log( (1/n) * sum_j exp(r_j / beta1) )

  computed as m + beta1 * (logsumexp((r - m) / beta1) - log n), m = max_j r_j, so it neither
  overflows for small beta1 nor loses ties. It lies between mean_j r_j and max_j r_j.

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.
    beta1: the KL temperature of the target pi* ~ pi_lag * exp(r / beta1), > 0 (1.0 in the
      official script, 0.5 in its yaml).

  Returns:
    [P] values; 0 for a group without valid samples.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  _check_positive("beta1", beta1)
  rewards = _as_float(rewards_pg)
  top, soft = _oapl_parts(rewards, _valid_mask(valid_pg, rewards.shape), beta1)
  return (top + soft)[..., 0]


def oapl_advantages(rewards_pg, valid_pg=None, *, beta1: float = 1.0):
  """OAPL regression target r - V*(x) (arXiv 2602.19362); see `oapl_value`.

    A_i = r_i - beta1 * log( (1/n) * sum_j exp(r_j / beta1) )

  The OAPL loss is mean_i (beta2 * [log pi(y_i|x) - log pi_lag(y_i|x)] - A_i)^2.

  Args:
    rewards_pg: [P, G] scalar rewards.
    valid_pg: optional [P, G] mask of samples that exist.
    beta1: as in `oapl_value`, > 0.

  Returns:
    [P, G] targets; 0 for invalid samples, one-sample and zero-variance groups.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  _check_positive("beta1", beta1)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)
  top, soft = _oapl_parts(rewards, valid, beta1)
  return jnp.where(valid & _varies(rewards, valid, axis=-1), (rewards - top) - soft, 0.0)


# --------------------------------------------------------------------------------------------
# ProGRPO (ARM + T_low).


def low_prob_token_mask(logprobs_bt, mask_bt, *, low_prob_fraction: float = 0.2):
  """ProGRPO's T_low: the ceil(f * n) lowest-log-prob valid tokens of each row (arXiv 2602.05281).

  Rows with n >= 1 valid tokens keep at least one; ties are broken by position.

  Args:
    logprobs_bt: [B, T] per-token log-probabilities.
    mask_bt: [B, T] mask of valid tokens.
    low_prob_fraction: f in (0, 1]; the paper uses about 0.2.

  Returns:
    [B, T] bool mask of the selected tokens.
  """
  if _is_traced(low_prob_fraction):
    raise ValueError("low_prob_fraction must be a static Python float, got a traced value")
  if not 0.0 < low_prob_fraction <= 1.0:
    raise ValueError(f"low_prob_fraction must lie in (0, 1], got {low_prob_fraction!r}")
  logprobs = _as_float(logprobs_bt)
  valid = jnp.asarray(mask_bt) > 0
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=logprobs.dtype)
  n_low = jnp.where(
    count > 0, jnp.maximum(jnp.ceil(low_prob_fraction * count - _COUNT_SLACK), 1.0), 0.0
  )
  order = jnp.argsort(jnp.where(valid, logprobs, jnp.inf), axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  return valid & (rank < n_low)


def _low_prob_confidence(logprobs_xt, mask_xt, low_prob_fraction):
  """Mean log-prob over T_low: the confidence c of a token sequence (0 if it has no tokens)."""
  keep = low_prob_token_mask(logprobs_xt, mask_xt, low_prob_fraction=low_prob_fraction)
  return masked.masked_mean(_as_float(logprobs_xt), keep, -1)


def progrpo_arm_advantages(
  rewards_pg,
  logprobs_bt,
  mask_bt,
  valid_pg=None,
  prompt_logprobs_ps=None,
  prompt_mask_ps=None,
  *,
  alpha: float,
  low_prob_fraction: float = 0.2,
  correct_threshold: float = 0.5,
  correct_only: bool = False,
  eps: float = 1e-6,
  ddof: int = 1,
):
  """ProGRPO's Advantage Re-weighting Mechanism, ARM (arXiv 2602.05281).

    A~_i = A_i                                  if no sample of the group is correct
    A~_i = A_i + alpha * (c(q) - c(o_i | q))    otherwise

  with A_i the GRPO z-score. The paper's confidences are not fully specified; this is our reading:

  * c(o_i | q) = mean of log pi(o_t) over T_low, the ceil(f * |o_i|) lowest-probability response
    tokens (`low_prob_token_mask`, f = `low_prob_fraction`, ~0.2 in the paper).
  * c(q) = the same T_low mean over the prompt tokens when `prompt_logprobs_ps` is given; else
    the mean of c(o_j | q) over the group's valid samples, so the term becomes a within-group
    centring of answer confidence.
  * "sum_k r_{i,k} = 0" is read as "no sample of the group is correct" (reward above
    `correct_threshold`), which also covers +-1 rewards.
  * With `correct_only=True` the term is added to correct samples only.

  An over-confident answer (c(o|q) above c(q)) loses advantage; a low-confidence one gains. The
  confidence term is stop-gradient: an advantage is a weight, not a loss.

  Args:
    rewards_pg: [P, G] rewards.
    logprobs_bt: [B, T] response-token log-probs, B = P * G (row p * G + g).
    mask_bt: [B, T] mask of response tokens.
    valid_pg: optional [P, G] mask of samples that exist.
    prompt_logprobs_ps: optional [P, S] prompt-token log-probs.
    prompt_mask_ps: optional [P, S] mask of prompt tokens (all set if omitted).
    alpha: the ARM weight; the paper's value is unknown, so there is no default.
    low_prob_fraction: f in (0, 1], the share of tokens in T_low.
    correct_threshold: rewards above it count as correct.
    correct_only: apply the term to correct samples only.
    eps: GRPO's std epsilon.
    ddof: GRPO's std ddof.

  Returns:
    [P, G] advantages; 0 for invalid samples and one-sample groups.
  """
  _check_group_rewards(rewards_pg, valid_pg)
  num_prompts, num_samples = jnp.shape(rewards_pg)
  if jnp.shape(logprobs_bt)[0] != num_prompts * num_samples or jnp.ndim(logprobs_bt) != 2:
    raise ValueError(
      f"logprobs_bt must have shape [P*G={num_prompts * num_samples}, T], "
      f"got {jnp.shape(logprobs_bt)}"
    )
  if jnp.shape(mask_bt) != jnp.shape(logprobs_bt):
    raise ValueError(f"mask_bt must have shape {jnp.shape(logprobs_bt)}, got {jnp.shape(mask_bt)}")
  if prompt_logprobs_ps is not None and (
    jnp.ndim(prompt_logprobs_ps) != 2 or jnp.shape(prompt_logprobs_ps)[0] != num_prompts
  ):
    raise ValueError(
      f"prompt_logprobs_ps must have shape [P={num_prompts}, S], "
      f"got {jnp.shape(prompt_logprobs_ps)}"
    )
  if not _is_traced(alpha) and not np.all(np.isfinite(alpha)):
    raise ValueError(f"alpha must be finite, got {alpha!r}")
  base = grpo_advantages(rewards_pg, valid_pg, eps=eps, ddof=ddof)
  rewards = _as_float(rewards_pg)
  valid = _valid_mask(valid_pg, rewards.shape)

  answer_conf = _low_prob_confidence(logprobs_bt, mask_bt, low_prob_fraction)
  answer_conf = answer_conf.reshape(num_prompts, num_samples)
  if prompt_logprobs_ps is None:
    prompt_conf = masked.masked_mean(answer_conf, valid, -1)
  else:
    if prompt_mask_ps is None:
      prompt_mask_ps = jnp.ones(jnp.shape(prompt_logprobs_ps), dtype=bool)
    prompt_conf = _low_prob_confidence(prompt_logprobs_ps, prompt_mask_ps, low_prob_fraction)
  term = jax.lax.stop_gradient(alpha * (prompt_conf[:, None] - answer_conf))

  correct = valid & (rewards > correct_threshold)
  count = jnp.sum(valid, axis=-1, keepdims=True)
  apply = valid & jnp.any(correct, axis=-1, keepdims=True) & (count >= 2)
  if correct_only:
    apply &= correct
  return base + jnp.where(apply, term, 0.0).astype(base.dtype)
