"""Every objective piece as a transform of `base`: advantages, corrections, filters, surrogates,
regularisers.

The pieces themselves are pure functions in their own modules (`advantages`, `corrections`,
`surrogates`, `soft_surrogates`, `selective_surrogates`, `regression_losses`, `regularizers`),
each tested against a float64 reference. The constructors here bind their hyper-parameters and
say how they meet the chain:

  group_advantages(fn, **hp)      advantages = fn(rewards_pg, valid_pg, **hp)
  progrpo_advantages(**hp)        ProGRPO's ARM, reads the behaviour policy's log-probs
  policy_loss(fn, **hp)           loss += weights · fn(logprobs, behaviour, Â, mask, **hp)
  token_filter(fn, **hp)          mask *= fn(probs, Â, mask, **hp)
  mismatch_correction(**hp)       weights *= w, mask *= keep          (TIS / MIS / IcePop)
  off_policy_sequence_mask(**hp)  mask *= keep                        (OPSM)
  kl_penalty(**hp)                loss += β k(logπ_θ, logπ_ref)       (fixed β)
  adaptive_kl_penalty(**hp)       the same with β from a proportional controller (stateful)
  entropy_bonus(**hp)             loss −= c H

A policy-loss function follows the surrogate contract of `surrogates` (`(logprobs, old_logprobs,
advantages, mask, *, hyper-parameters, extras) -> (loss_bt, metrics)`); `extras` maps its keyword
arguments to `LossInputs` fields (`("key",)`, `{"rollout_logprobs": "sampler_logprobs"}`), so any
new surrogate with that contract joins a chain with one call.
"""

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import advantages as advantages_lib
from grpojax.objectives import base, corrections, masked, regularizers, surrogates


def _extras(extras) -> dict[str, str]:
  """keyword -> LossInputs field, from a tuple of names or a mapping."""
  mapping = dict(extras) if isinstance(extras, Mapping) else {name: name for name in extras}
  for field in mapping.values():
    if field not in base.INPUTS:
      raise ValueError(f"unknown input {field!r}; inputs are {', '.join(base.INPUTS)}.")
  return mapping


# ---------------------------------------------------------------------------------------------
# Advantages.
# ---------------------------------------------------------------------------------------------


def group_advantages(fn: Callable, **hparams) -> base.GroupTransform:
  """A group estimator `fn(rewards_pg, valid_pg, **hparams) -> [P, G]` as a transform.

  The first transform of an advantage chain receives the rewards; later ones (a chain of chains)
  receive the previous transform's advantages.
  """

  def update(rewards_pg, state, inputs):
    return fn(rewards_pg, inputs.valid_pg, **hparams), state

  return base.GroupTransform(init=base._no_state, update=update)


def progrpo_advantages(*, prompt_confidence: bool = True, **hparams) -> base.GroupTransform:
  """ProGRPO's ARM advantages (arXiv 2602.05281), reading the behaviour policy's log-probs.

  Because it reads them, the trainer scores the rollout with the pre-update policy first. With
  `prompt_confidence`, c(q) is read from the prompt tokens' log-probs of that same forward pass
  (`GroupInputs.prompt_logprobs`, one prompt per group: its first row's); without, c(q) falls
  back to the group's mean answer confidence.
  """

  def update(rewards_pg, state, inputs):
    prompt_ps = prompt_mask_ps = None
    if prompt_confidence:
      g = jnp.shape(rewards_pg)[1]  # rows are prompt-major: every G-th row starts a group
      prompt_ps = jax.lax.stop_gradient(inputs.prompt_logprobs)[::g]
      prompt_mask_ps = inputs.prompt_mask[::g]
    adv = advantages_lib.progrpo_arm_advantages(
      rewards_pg,
      jax.lax.stop_gradient(inputs.old_logprobs),
      inputs.mask,
      inputs.valid_pg,
      prompt_ps,
      prompt_mask_ps,
      **hparams,
    )
    return adv, state

  requires = {"old_logprobs", "mask"}
  if prompt_confidence:
    requires |= {"prompt_logprobs", "prompt_mask"}
  return base.GroupTransform(init=base._no_state, update=update, requires=frozenset(requires))


# ---------------------------------------------------------------------------------------------
# Per-token terms.
# ---------------------------------------------------------------------------------------------


def policy_loss(
  fn: Callable, *, behaviour: str = "old_logprobs", extras=(), **hparams
) -> base.LossTransform:
  """A surrogate as a loss transform: loss += weights · fn(...) on the mask in force.

  Args:
    fn: a function with the surrogate contract (see the module docstring).
    behaviour: the `LossInputs` field passed as `old_logprobs` (OAPL regresses onto the
      lagged sampler: "sampler_logprobs").
    extras: keyword arguments of `fn` read from `LossInputs`: a tuple of field names, or a
      mapping keyword -> field.
    **hparams: `fn`'s keyword hyper-parameters.
  """
  extras = _extras(extras)

  def update(terms, state, x):
    kwargs = {kw: getattr(x, field) for kw, field in extras.items()}
    loss_bt, metrics = fn(
      x.logprobs, getattr(x, behaviour), x.advantages, terms.mask, **hparams, **kwargs
    )
    new = terms._replace(
      loss=terms.loss + terms.weights * loss_bt,
      metrics=base.merge_metrics(terms.metrics, metrics),
    )
    return new, state

  requires = {behaviour, "advantages", *extras.values()}
  return base.LossTransform(init=base._no_state, update=update, requires=frozenset(requires))


def token_filter(fn: Callable, *, probs: str = "logprobs", extras=(), **hparams):
  """A token filter `fn(probs, advantages, mask, **hparams, **extras) -> (keep, metrics)`.

  Kept tokens stay in the mask; dropped ones leave the policy terms after it and the
  aggregation's denominator (STAPO's renormalisation over the remaining tokens).

  Args:
    fn: the filter, e.g. `selective_surrogates.stapo_mask`.
    probs: the `LossInputs` field whose probabilities are thresholded (treated as stop-gradient).
    extras: keyword arguments of `fn` read from `LossInputs` (as in `policy_loss`).
    **hparams: `fn`'s hyper-parameters.
  """
  extras = _extras(extras)

  def update(terms, state, x):
    kwargs = {kw: getattr(x, field) for kw, field in extras.items()}
    probs_bt = jax.lax.stop_gradient(getattr(x, probs))
    keep, metrics = fn(probs_bt, x.advantages, terms.mask, **hparams, **kwargs)
    new = terms._replace(mask=terms.mask * keep, metrics=base.merge_metrics(terms.metrics, metrics))
    return new, state

  return base.LossTransform(
    init=base._no_state, update=update, requires=frozenset({probs, "advantages", *extras.values()})
  )


def mismatch_correction(**hparams) -> base.LossTransform:
  """TIS (mode="truncate") or MIS / IcePop (mode="mask") for the sampler–trainer mismatch.

  Weights π_old/π_samp (truncated, or masked outside a band) multiply the policy terms after it;
  MIS also drops rejected tokens from the mask. See `corrections.mismatch_correction`.
  """

  def update(terms, state, x):
    weights, mask, metrics = corrections.mismatch_correction(
      x.old_logprobs, x.sampler_logprobs, terms.mask, **hparams
    )
    new = terms._replace(
      weights=terms.weights * weights,
      mask=mask.astype(jnp.float32),
      metrics=base.merge_metrics(terms.metrics, metrics),
    )
    return new, state

  return base.LossTransform(
    init=base._no_state,
    update=update,
    requires=frozenset({"old_logprobs", "sampler_logprobs"}),
  )


def off_policy_sequence_mask(**hparams) -> base.LossTransform:
  """DeepSeek-V3.2's OPSM (see `corrections.off_policy_sequence_mask`): drops rows."""

  def update(terms, state, x):
    mask, metrics = corrections.off_policy_sequence_mask(
      x.logprobs, x.sampler_logprobs, x.advantages, terms.mask, **hparams
    )
    new = terms._replace(
      mask=mask.astype(jnp.float32), metrics=base.merge_metrics(terms.metrics, metrics)
    )
    return new, state

  return base.LossTransform(
    init=base._no_state, update=update, requires=frozenset({"sampler_logprobs", "advantages"})
  )


def _kl_observation(x, kl_kind):
  """The token-mean KL to the reference over every sampled token, as (sum, count).

  It is a property of the policy on all sampled tokens, so it is observed over the original mask,
  whatever a correction or filter dropped.
  """
  kl_bt = jax.lax.stop_gradient(regularizers.kl_estimate(x.logprobs, x.ref_logprobs, kind=kl_kind))
  valid = x.mask > 0
  return masked.masked_sum(kl_bt, valid), jnp.sum(valid.astype(jnp.float32))


def kl_penalty(*, kl_coef: float, kl_kind: str = "k3") -> base.LossTransform:
  """loss += β k(logπ_θ, logπ_ref) with a fixed β (GRPO, arXiv 2402.03300: β = 0.04, k3).

  Reports `kl_ref` (token-mean KL to the reference) and `kl_coef`.
  """
  regularizers.check_kl(kl_coef, kl_kind)

  def update(terms, state, x):
    kl_sum, count = _kl_observation(x, kl_kind)
    loss = terms.loss + regularizers.kl_penalty_loss(
      x.logprobs, x.ref_logprobs, terms.mask, kind=kl_kind, coef=kl_coef
    )
    metrics = {"kl_ref": kl_sum / jnp.maximum(count, 1.0), "kl_coef": jnp.float32(kl_coef)}
    return terms._replace(loss=loss, metrics=base.merge_metrics(terms.metrics, metrics)), state

  return base.LossTransform(
    init=base._no_state, update=update, requires=frozenset({"ref_logprobs"})
  )


class AdaptiveKLState(NamedTuple):
  """β in force this step, and the step's KL observations (Σ KL over tokens, token count)."""

  coef: jax.Array
  kl_sum: jax.Array
  count: jax.Array


def adaptive_kl_penalty(
  *,
  kl_coef: float,
  kl_target: float,
  kl_rate: float = 0.1,
  kl_max_error: float = 0.2,
  kl_kind: str = "k3",
) -> base.LossTransform:
  """`kl_penalty` with β from a proportional controller (Ziegler et al., arXiv 1909.08593 §2.2):

    e = clip(KL / KL_target − 1, −max_error, max_error),   β ← β (1 + rate · e),

  KL the step's token-mean KL to the reference over all its micro-batches: `update` adds
  (Σ KL, #tokens) to the state, `finalize` (once per step) moves β and clears them. Every
  micro-batch of a step uses the same β, so the sums stay exact and the state after a step does
  not depend on the micro-batch split. verl/TRL write the rate as n_steps / horizon; here it is
  per step. rate · max_error < 1 keeps β positive.

  Args:
    kl_coef: β_0 > 0 (a multiplicative controller started at 0 stays at 0).
    kl_target: KL_target > 0.
    kl_rate: K_β > 0.
    kl_max_error: clip of the proportional error, > 0.
    kl_kind: the estimator, "k1" | "k2" | "k3".
  """
  regularizers.check_kl(kl_coef, kl_kind, positive=True)
  for name, value in (
    ("kl_target", kl_target),
    ("kl_rate", kl_rate),
    ("kl_max_error", kl_max_error),
  ):
    surrogates.check_hparam(
      "adaptive_kl_penalty", name, value, lambda v: 0 < v < float("inf"), "> 0 and finite"
    )
  if kl_rate * kl_max_error >= 1:
    raise ValueError(
      f"adaptive_kl_penalty: kl_rate * kl_max_error must be < 1 to keep β > 0, got "
      f"{kl_rate} * {kl_max_error}."
    )

  def init():
    zero = jnp.zeros((), jnp.float32)
    return AdaptiveKLState(coef=jnp.asarray(kl_coef, jnp.float32), kl_sum=zero, count=zero)

  def update(terms, state, x):
    kl_sum, count = _kl_observation(x, kl_kind)
    loss = terms.loss + regularizers.kl_penalty_loss(
      x.logprobs, x.ref_logprobs, terms.mask, kind=kl_kind, coef=state.coef
    )
    metrics = {"kl_ref": kl_sum / jnp.maximum(count, 1.0), "kl_coef": state.coef}
    new_state = state._replace(kl_sum=state.kl_sum + kl_sum, count=state.count + count)
    return terms._replace(loss=loss, metrics=base.merge_metrics(terms.metrics, metrics)), new_state

  def finalize(state):
    kl = state.kl_sum / jnp.maximum(state.count, 1.0)
    error = jnp.clip(kl / kl_target - 1.0, -kl_max_error, kl_max_error)
    coef = jnp.where(state.count > 0, state.coef * (1.0 + kl_rate * error), state.coef)
    zero = jnp.zeros((), jnp.float32)
    return AdaptiveKLState(coef=coef, kl_sum=zero, count=zero)

  return base.LossTransform(
    init=init, update=update, finalize=finalize, requires=frozenset({"ref_logprobs"})
  )


def entropy_bonus(*, entropy_coef: float) -> base.LossTransform:
  """loss −= c H_t on the mask in force (an exploration bonus; verl `entropy_coeff`)."""
  surrogates.check_hparam(
    "entropy_bonus",
    "entropy_coef",
    entropy_coef,
    lambda v: 0 <= v < float("inf"),
    ">= 0 and finite",
  )

  def update(terms, state, x):
    bonus = regularizers.entropy_bonus_loss(x.entropy, terms.mask, coef=entropy_coef)
    return terms._replace(loss=terms.loss + bonus), state

  return base.LossTransform(init=base._no_state, update=update, requires=frozenset({"entropy"}))
