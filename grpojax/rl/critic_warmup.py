"""Critic warm-up as an optimiser: the decoder held still for the first N RL steps while the heads
train, inside the one RL update.

VAPO (arXiv 2504.05118) pretrains its value model on Monte-Carlo returns of a fixed policy (the
SFT policy) before RL, until the value loss and the explained variance settle. Here the critic is
a head on the policy (`models.heads`), so the warm-up is the ordinary RL update with an optimiser
whose decoder partition is frozen for N steps:

  chain(partition({"decoder": frozen_for(chain(clip, adamw(lr)), N),
                   "heads":   chain(clip, adamw(head_lr))}))

During those N steps the rollouts come from the unchanged warm-started policy, the objective's
value loss moves the heads, and the decoder's parameters come back bit for bit (its AdamW state
and its schedule do not advance, so its first real step is AdamW's first step). Each partition is
clipped on its own gradient norm, as VAPO's separate actor and critic optimisers are, so the
discarded decoder gradient of the warm-up never scales the heads' gradient. The step counter is
optimiser state, checkpointed with it, so a resumed run stays exact.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from grpojax import types


class FrozenForState(NamedTuple):
  """Steps seen so far, and the inner transformation's state (untouched while frozen)."""

  count: jax.Array
  inner: Any


def frozen_for(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
  """`inner`, except that its first `steps` updates are −0.0 and leave its state unchanged.

  −0.0 rather than +0.0 because it is the additive identity of IEEE 754 arithmetic for every
  value (−0.0 + +0.0 would give +0.0), so `optax.apply_updates` returns the parameters bit for bit.

  Args:
    inner: the transformation to hold back.
    steps: how many updates to hold (>= 0).
  """
  if steps < 0:
    raise ValueError(f"frozen_for: steps must be >= 0, got {steps}")

  def init(params):
    return FrozenForState(count=jnp.zeros((), jnp.int32), inner=inner.init(params))

  def update(updates, state, params=None):
    active = state.count >= steps
    new_updates, new_inner = inner.update(updates, state.inner, params)
    held = jax.tree.map(lambda u: jnp.where(active, u, jnp.asarray(-0.0, u.dtype)), new_updates)
    new_inner = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_inner, state.inner)
    count = jnp.where(active, state.count, state.count + 1)  # stops at `steps`: no overflow
    return held, FrozenForState(count=count, inner=new_inner)

  return optax.GradientTransformation(init, update)


def head_labels(params):
  """ "heads" for parameters under `heads/`, "decoder" for the rest (the optimiser's partition)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: "heads" if types.path_to_str(path).startswith("heads/") else "decoder", params
  )


def optimizer(
  *,
  decoder: optax.GradientTransformation,
  heads: optax.GradientTransformation,
  grad_clip: float,
  steps: int,
) -> optax.GradientTransformation:
  """The critic warm-up optimiser (see the module docstring).

  Args:
    decoder: the decoder's optimiser (e.g. AdamW on its schedule), frozen for `steps` updates.
    heads: the heads' optimiser.
    grad_clip: the global-norm clip of each partition.
    steps: N, the warm-up's RL steps.
  """
  clip = optax.clip_by_global_norm(grad_clip)
  return optax.partition(
    {
      "decoder": frozen_for(optax.chain(clip, decoder), steps),
      "heads": optax.chain(clip, heads),
    },
    head_labels,
  )
