"""Masked reductions shared by every objective piece.

All take a value array and a same-shape (or broadcastable) 0/1 mask; fully masked inputs give 0,
never NaN, so that all-padding rows and empty micro-batches stay finite.
"""

import jax
import jax.numpy as jnp


def masked_sum(x, mask, axis=None):
  """Sum of `x` where `mask` is set."""
  return jnp.sum(jnp.where(mask > 0, x, 0.0), axis=axis)


def masked_mean(x, mask, axis=None):
  """Mean of `x` over the set entries of `mask`; 0 where nothing is set."""
  count = jnp.sum((mask > 0).astype(x.dtype), axis=axis)
  return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_max(x, mask, axis=None):
  """Max of `x` over the set entries of `mask`; 0 where nothing is set."""
  m = jnp.max(jnp.where(mask > 0, x, -jnp.inf), axis=axis)
  return jnp.where(jnp.isfinite(m), m, 0.0)


def masked_min(x, mask, axis=None):
  """Min of `x` over the set entries of `mask`; 0 where nothing is set."""
  return -masked_max(-x, mask, axis)


def sanitize(x, valid, *, differentiable=False):
  """float32 copy of `x` with entries off `valid` set to 0 (stop-gradient unless
  `differentiable`).

  `where` rather than a product, so that ±inf or NaN in padding reach neither values nor
  gradients.
  """
  x = jnp.asarray(x).astype(jnp.float32)
  if not differentiable:
    x = jax.lax.stop_gradient(x)
  return jnp.where(valid, x, 0.0)
