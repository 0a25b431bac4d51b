"""A gradient-norm spike guard: an optax wrapper that skips an update whose gradient norm
exceeds `factor` times the median of the recent accepted ones (`train.spike_guard`).

Non-finite gradients are already skipped (`step._apply_gradients`), but a finite blow-up is
not: one huge step can ruin the policy while every number stays finite (the checkpoints after
it then hold the ruined policy). Clipping does not help, as it rescales the step to the clip
norm in the spike's direction. The guard looks at the norm before clipping; a skipped update
leaves the parameters, the inner optimiser's state and the window of norms unchanged, so
persistent spikes stay skipped and the trainer's `train.max_bad_steps` ends the run.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# How many accepted gradient norms the median is taken over, and how many must be seen before
# the guard acts (the first updates of a run vary most).
WINDOW = 32
MIN_HISTORY = 8


class SpikeGuardState(NamedTuple):
  """State of `spike_guard`.

  Attributes:
    inner: the wrapped optimiser's state.
    spike_norms: the last `WINDOW` accepted gradient norms (a ring buffer, NaN where unfilled).
    accepted: how many updates were accepted in all.
    spikes: how many updates were skipped in all.
  """

  inner: optax.OptState
  spike_norms: jnp.ndarray
  accepted: jnp.ndarray
  spikes: jnp.ndarray


def is_spike(norm, norms, accepted, *, factor: float):
  """Whether `norm` exceeds `factor` x the median of the filled part of `norms`.

  Args:
    norm: this update's gradient norm.
    norms: [WINDOW] recent accepted norms, NaN where unfilled.
    accepted: how many norms were accepted so far.
    factor: the multiple of the median above which a norm is a spike.

  Returns:
    A boolean scalar; False before `MIN_HISTORY` norms were accepted.
  """
  return (accepted >= MIN_HISTORY) & (norm > factor * jnp.nanmedian(norms))


def spike_guard(inner: optax.GradientTransformation, *, factor: float):
  """Wraps `inner` so that an update with a gradient-norm spike is skipped.

  Args:
    inner: the optimiser (its clipping included).
    factor: skip when the global gradient norm exceeds `factor` x the median of the last
      `WINDOW` accepted norms (after `MIN_HISTORY` accepted updates).

  Returns:
    An optax GradientTransformation with `SpikeGuardState`.
  """

  def init(params):
    return SpikeGuardState(
      inner=inner.init(params),
      spike_norms=jnp.full((WINDOW,), jnp.nan, jnp.float32),
      accepted=jnp.zeros((), jnp.int32),
      spikes=jnp.zeros((), jnp.int32),
    )

  def update(updates, state, params=None):
    norm = optax.tree.norm(updates).astype(jnp.float32)
    skip = is_spike(norm, state.spike_norms, state.accepted, factor=factor)
    new_updates, new_inner = inner.update(updates, state.inner, params)
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(skip, b, a), new, old)
    # A non-finite norm is the non-finite guard's to skip: it never enters the window.
    push = ~skip & jnp.isfinite(norm)
    window = state.spike_norms
    window = jnp.where(push, window.at[state.accepted % WINDOW].set(norm), window)
    return pick(new_updates, optax.tree.zeros_like(new_updates)), SpikeGuardState(
      inner=pick(new_inner, state.inner),
      spike_norms=window,
      accepted=state.accepted + push.astype(jnp.int32),
      spikes=state.spikes + skip.astype(jnp.int32),
    )

  return optax.GradientTransformation(init, update)


def spikes(opt_state) -> int | None:
  """How many updates the guard in `opt_state` has skipped, or None without a guard."""
  if not isinstance(opt_state, SpikeGuardState):
    return None
  return int(opt_state.spikes)
