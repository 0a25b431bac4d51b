"""Adaptive Quantization Noise (AQN) of QeRL (arXiv 2510.11696): scheduled noise on RMSNorm scales.

**Schedule.** The training steps [0, T) are split into K = `num_stages` equal intervals;
interval k holds the steps with k·T/K <= step < (k+1)·T/K, i.e. k = floor(step·K / T), and
steps >= T belong to the last interval K-1. Then

  σ(0) = 0                                              (noise-free first interval)
  σ(k) = σ_start · (σ_end / σ_start)^((k-1)/(K-2))       k = 1, ..., K-1

a geometric decay from σ_start (k = 1) to σ_end (k = K-1). Edge cases: K = 1 is noise-free
throughout; K = 2 has one noisy interval at σ_start (the exponent 0/0 is taken as 0). With the
paper's defaults (σ_start 1e-2, σ_end 1e-4, K 10), σ(k) = 10^(-2 - (k-1)/4).

This is the official code's rule (`get_sigma_by_step` in `trl_trainer/noise_scheduler.py`), which
computes k as int(step // (T / K)) in floating point; the integer arithmetic here can differ from
it only at a boundary step that float rounding of T / K puts in the neighbouring interval.

**Noise.** `add_norm_noise` adds ε ~ N(0, σ²), drawn in float32 and cast to the leaf's dtype, to
every RMSNorm scale γ of the rollout policy's parameters. As RMSNorm(h)·(γ + ε) = RMSNorm(h)·γ +
RMSNorm(h)·ε, this is channel-wise multiplicative noise on the activations entering the next
matmul, QeRL's stand-in for the exploration benefit of quantisation noise. QeRL adds the noise in
place after each weight sync; here it is always added to the clean parameters passed in, fresh
for every rollout and never cumulative:

  noisy = add_norm_noise(params, jax.random.fold_in(rng, step), aqn_sigma(step, total_steps))
"""

import math
import operator
import re

import jax
import jax.numpy as jnp

from grpojax import types

# Leaf paths as `types.path_to_str` writes them: `layers/0/input_layernorm/scale`,
# `layers/0/self_attn/q_norm/scale`, `norm/scale`.
NORM_SCALE_PATTERN = r"norm/scale$"


def _check_schedule(num_stages, sigma_start, sigma_end, total_steps):
  if operator.index(num_stages) < 1:
    raise ValueError(f"aqn_sigma: num_stages must be >= 1, got {num_stages}.")
  if operator.index(total_steps) < 1:
    raise ValueError(f"aqn_sigma: total_steps must be >= 1, got {total_steps}.")
  for name, value in (("sigma_start", sigma_start), ("sigma_end", sigma_end)):
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"aqn_sigma: {name} must be finite and > 0, got {value}.")


def aqn_schedule(num_stages: int = 10, sigma_start: float = 1e-2, sigma_end: float = 1e-4):
  """(σ(0), ..., σ(K-1)) of the module docstring, as Python floats; σ(0) = 0."""
  _check_schedule(num_stages, sigma_start, sigma_end, 1)
  decays = num_stages - 2
  return (0.0,) + tuple(
    sigma_start * (sigma_end / sigma_start) ** ((k - 1) / decays if decays > 0 else 0.0)
    for k in range(1, num_stages)
  )


def aqn_sigma(
  step: int,
  total_steps: int,
  *,
  num_stages: int = 10,
  sigma_start: float = 1e-2,
  sigma_end: float = 1e-4,
) -> float:
  """The AQN noise scale at `step` (module docstring), as a Python float.

  Args:
    step: the current update step, an int >= 0; steps >= `total_steps` use the last interval.
    total_steps: T >= 1, the number of update steps of the run.
    num_stages: K >= 1 intervals; the first is noise-free.
    sigma_start: σ of interval 1 (> 0).
    sigma_end: σ of interval K-1 (> 0).

  Returns:
    σ(floor(min(step, T)·K / T)), with interval K (step >= T) read as K-1.

  Raises:
    ValueError: a negative step or an invalid schedule setting.
  """
  _check_schedule(num_stages, sigma_start, sigma_end, total_steps)
  if operator.index(step) < 0:
    raise ValueError(f"aqn_sigma: step must be >= 0, got {step}.")
  stage = min(step, total_steps) * num_stages // total_steps
  return aqn_schedule(num_stages, sigma_start, sigma_end)[min(stage, num_stages - 1)]


def aqn_sigma_array(
  step: jax.Array,
  total_steps: int,
  *,
  num_stages: int = 10,
  sigma_start: float = 1e-2,
  sigma_end: float = 1e-4,
) -> jax.Array:
  """`aqn_sigma` for a possibly traced integer `step` (negative steps read as 0): float32 σ.

  `total_steps` and the schedule are static Python numbers; total_steps · num_stages must fit in
  int32.
  """
  _check_schedule(num_stages, sigma_start, sigma_end, total_steps)
  if total_steps * num_stages >= 2**31:
    raise ValueError(
      f"aqn_sigma_array: total_steps * num_stages = {total_steps * num_stages} overflows int32."
    )
  table = jnp.asarray(aqn_schedule(num_stages, sigma_start, sigma_end), jnp.float32)
  step = jnp.clip(jnp.asarray(step, jnp.int32), 0, total_steps)
  stage = jnp.minimum(step * num_stages // total_steps, num_stages - 1)
  return table[stage]


def add_norm_noise(params, key: jax.Array, sigma, *, pattern: str = NORM_SCALE_PATTERN):
  """Adds independent N(0, σ²) noise to every leaf of `params` whose path matches `pattern`.

  Args:
    params: a parameter pytree, e.g. the `nnx.State` of `nnx.split(model, nnx.Param)`.
    key: PRNG key; the noise is a deterministic function of it (one split per matching leaf, in
      tree order).
    sigma: σ, a Python float or a float32 scalar (may be traced).
    pattern: regex searched in each leaf's path as written by `grpojax.types.path_to_str`
      (e.g. `layers/0/input_layernorm/scale`); the default matches every RMSNorm scale.

  Returns:
    A pytree of the same structure: matching leaves are leaf + (σ·N(0, 1) in float32, cast to the
    leaf's dtype); every other leaf is the same object as in `params`.
  """
  regex = re.compile(pattern)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  matched = [i for i, (path, _) in enumerate(leaves) if regex.search(types.path_to_str(path))]
  out = [leaf for _, leaf in leaves]
  if matched:
    sigma = jnp.asarray(sigma, jnp.float32)
    for leaf_key, i in zip(jax.random.split(key, len(matched)), matched, strict=True):
      leaf = out[i]
      noise = sigma * jax.random.normal(leaf_key, jnp.shape(leaf), jnp.float32)
      out[i] = leaf + noise.astype(leaf.dtype)
  return jax.tree_util.tree_unflatten(treedef, out)
