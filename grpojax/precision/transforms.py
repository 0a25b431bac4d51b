"""A precision policy as transforms of a parameter tree: the quantised base, LoRA adapters, the
merged export and the sampler's copy.

Every transform is a pure function of an `nnx.State` (the state of `nnx.split(model)`) that
finds the decoder-layer projections by path (`layers/<i>/<self_attn|mlp>/<name>_proj/kernel`,
see `policy.is_layer_projection`) and never sees a model object, so it runs eagerly, under
`jax.jit`, or under `jax.eval_shape` for shapes only. A projection stores its weight in the
variables of `stored_weight`:

  storage "kernel"               kernel                                  nnx.Param [in, out]
  "fp8", "int4"                  quant_values, quant_scales              Frozen
  "nvfp4"                        quant_values, quant_scales, quant_tensor_scale   Frozen
  "rollout_fp8"                  quant_values (e4m3), quant_scales       Frozen
  with adapters                  lora_a [in, r], lora_b [r, out]         nnx.LoRAParam (float32)

The same functions serve the model's constructor (`stored_weight`, `lora_adapter`), so a state
transformed here has exactly the structure of a model built under the target policy.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import types
from grpojax.precision import formats
from grpojax.precision import policy as policy_lib

QUANT_LEAVES = ("quant_values", "quant_scales", "quant_tensor_scale")
LORA_LEAVES = ("lora_a", "lora_b")
# Heads compute in float32 whatever the compute dtype: the sampler's copy keeps them as they are.
_HEADS_PREFIX = "heads/"


class Frozen(nnx.Variable):
  """A weight that is never trained (a quantised base under LoRA, the sampler's FP8 codes)."""


def stored_weight(
  kernel: jax.Array, precision: policy_lib.ProjectionPrecision, compute_dtype
) -> dict[str, nnx.Variable]:
  """The variables that hold a projection's weight `kernel` under `precision.storage`.

  Args:
    kernel: the [in, out] kernel.
    precision: the projection's settings (`PrecisionPolicy.projection`).
    compute_dtype: the model's compute dtype; "rollout_fp8" codes are those of the kernel cast
      to it, exactly as `fp8_matmul` quantises it in the forward.

  Returns:
    leaf name -> variable: {"kernel": Param} for "kernel"; the frozen codes and scales of
    `formats.quantize_weight` of the float32 kernel for "fp8", "nvfp4" and "int4"; the e4m3
    codes and scale of `formats.quantize_fp8(kernel in compute_dtype, w_block)` for
    "rollout_fp8".
  """
  storage = precision.storage
  if storage == "kernel":
    return {"kernel": nnx.Param(kernel)}
  if storage == "rollout_fp8":
    q = formats.quantize_fp8(kernel.astype(compute_dtype), formats.FP8_E4M3, precision.w_block)
    return {"quant_values": Frozen(q.values), "quant_scales": Frozen(q.scale)}
  q = formats.quantize_weight(kernel.astype(jnp.float32), storage)
  if isinstance(q, formats.NVFP4):
    return {
      "quant_values": Frozen(q.values),
      "quant_scales": Frozen(q.block_scales),
      "quant_tensor_scale": Frozen(q.tensor_scale),
    }
  return {"quant_values": Frozen(q.values), "quant_scales": Frozen(q.scale)}


def stored_quantized(storage: str, values, scales, tensor_scale=None):
  """The `formats` tuple of a projection's stored codes: `NVFP4` or `Quantized`."""
  if storage == "nvfp4":
    return formats.NVFP4(values, scales, tensor_scale)
  return formats.Quantized(values, scales)


def dequantized_weight(storage: str, values, scales, tensor_scale=None) -> jax.Array:
  """A quantised projection's weight [in, out] in float32."""
  q = stored_quantized(storage, values, scales, tensor_scale)
  if storage == "rollout_fp8":
    return formats.dequantize(q, jnp.float32)
  return formats.dequantize_weight(q, jnp.float32)


def lora_adapter(key: jax.Array, fan_in: int, fan_out: int, rank: int):
  """LoRA factors (arXiv 2106.09685): A [in, r] ~ U(-1/sqrt(in), 1/sqrt(in)), B [r, out] = 0.

  B = 0 makes the adapted projection start equal to its base; both are float32.

  Returns:
    (lora_a, lora_b), each an `nnx.LoRAParam`.
  """
  bound = 1.0 / np.sqrt(fan_in)
  a = jax.random.uniform(key, (fan_in, rank), jnp.float32, -bound, bound)
  return nnx.LoRAParam(a), nnx.LoRAParam(jnp.zeros((rank, fan_out), jnp.float32))


def _by_projection(state: nnx.State):
  """(flat leaves that are not in a layer projection, {owner path: {leaf name: variable}})."""
  other, projections = [], {}
  for path, var in nnx.to_flat_state(state):
    owner = tuple(path[:-1])
    if policy_lib.is_layer_projection(types.path_to_str(owner)):
      projections.setdefault(owner, {})[path[-1]] = var
    else:
      other.append((tuple(path), var))
  return other, projections


def _rebuild(other, projections: Mapping) -> nnx.State:
  flat = list(other)
  for owner, leaves in projections.items():
    flat.extend((owner + (name,), var) for name, var in leaves.items())
  return nnx.from_flat_state(flat)  # flattening sorts the keys: insertion order is free


def _map_projections(state: nnx.State, fn: Callable[[str, dict], dict]) -> nnx.State:
  """Applies fn(owner path string, {leaf: variable}) -> {leaf: variable} to every projection."""
  other, projections = _by_projection(state)
  edited = {
    owner: fn(types.path_to_str(owner), dict(leaves)) for owner, leaves in projections.items()
  }
  return _rebuild(other, edited)


def _weight_shape(leaves: Mapping[str, nnx.Variable]) -> tuple[int, int]:
  source = leaves["kernel"] if "kernel" in leaves else leaves["quant_values"]
  return tuple(source.get_value().shape)


def quantize_base(params: nnx.State, policy: policy_lib.PrecisionPolicy) -> nnx.State:
  """Replaces the kernels that `policy` stores quantised by frozen codes and scales.

  Each selected projection (`policy.base_format` != "none", name matching
  `policy.lora_targets`) gets `stored_weight(kernel)`: the codes and scales of
  `formats.quantize_weight(kernel in float32, base_format)`.

  Args:
    params: the state of a decoder (all variables, or `nnx.Param` only).
    policy: the target policy.

  Returns:
    The state with those kernels replaced; every other leaf is the same object.

  Raises:
    ValueError: a selected projection holds no kernel (its base is already quantised).
  """
  if policy.base_format == "none":
    return params

  def quantize(path, leaves):
    precision = policy.projection(path)
    if precision.storage not in formats.WEIGHT_FORMATS:
      return leaves
    if "kernel" not in leaves:
      raise ValueError(f"quantize_base: {path} holds no kernel (its base is already quantised)")
    kernel = leaves.pop("kernel").get_value()
    return leaves | stored_weight(kernel, precision, jnp.float32)

  return _map_projections(params, quantize)


def init_lora(params: nnx.State, policy: policy_lib.PrecisionPolicy, key: jax.Array) -> nnx.State:
  """Adds LoRA adapters (`lora_adapter`) to the projections `policy` adapts.

  The i-th adapted projection in path order (layer by layer; within a layer `mlp/down, gate,
  up`, then `self_attn/k, o, q, v`) draws A from `jax.random.fold_in(key, i)`.

  Args:
    params: the state of a decoder without adapters.
    policy: the target policy; unchanged `params` when `policy.lora_rank` is 0.
    key: PRNG key of the adapters.

  Returns:
    The state with `lora_a` and `lora_b` added; every other leaf is the same object.

  Raises:
    ValueError: no projection matches `policy.lora_targets`, or a projection already has
      adapters.
  """
  if policy.lora_rank == 0:
    return params
  other, projections = _by_projection(params)
  count = 0
  for owner in sorted(projections):
    path = types.path_to_str(owner)
    rank = policy.projection(path).lora_rank
    if not rank:
      continue
    leaves = projections[owner]
    if "lora_a" in leaves:
      raise ValueError(f"init_lora: {path} already has LoRA adapters")
    fan_in, fan_out = _weight_shape(leaves)
    a, b = lora_adapter(jax.random.fold_in(key, count), fan_in, fan_out, rank)
    projections[owner] = leaves | {"lora_a": a, "lora_b": b}
    count += 1
  if not count:
    raise ValueError(
      f"PrecisionPolicy.lora_targets={policy.lora_targets!r} matches no decoder projection"
    )
  return _rebuild(other, projections)


def merge_lora(params: nnx.State, policy: policy_lib.PrecisionPolicy) -> nnx.State:
  """Plain kernels for export: dequant(base) + (alpha / r) · A · B, computed in float32.

  Args:
    params: the state of a decoder under `policy` (all variables).
    policy: its precision policy (gives each projection's storage and LoRA scale).

  Returns:
    The state of the same decoder under the default policy: every projection holds one
    `kernel` (`nnx.Param`); those that had adapters or quantised storage get the float32
    merged kernel, the others keep theirs unchanged. A model with these kernels computes the
    adapted model's logits up to float rounding (the product is re-associated).
  """

  def merge(path, leaves):
    precision = policy.projection(path)
    if "kernel" in leaves and "lora_a" not in leaves:
      return leaves
    if "kernel" in leaves:
      w = leaves.pop("kernel").get_value().astype(jnp.float32)
    else:
      quant = [leaves.pop(n).get_value() if n in leaves else None for n in QUANT_LEAVES]
      w = dequantized_weight(precision.storage, *quant)
    if "lora_a" in leaves:
      a = leaves.pop("lora_a").get_value().astype(jnp.float32)
      b = leaves.pop("lora_b").get_value().astype(jnp.float32)
      w = w + precision.lora_scale * (a @ b)
    return leaves | {"kernel": nnx.Param(w)}

  return _map_projections(params, merge)


def _cast(var, dtype):
  value = var.get_value()
  if (
    isinstance(var, nnx.Param)
    and jnp.issubdtype(value.dtype, jnp.floating)
    and value.dtype.itemsize > jnp.dtype(dtype).itemsize
  ):
    return var.replace(value.astype(dtype))
  return var


def cast_floating_params(params, dtype):
  """`params` with every wider floating `nnx.Param` leaf cast to `dtype` (quantised frozen
  codes and scales are left alone)."""
  return jax.tree.map(
    lambda v: _cast(v, dtype), params, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )


def sampler_params(
  params: nnx.State, policy: policy_lib.PrecisionPolicy, *, compute_dtype
) -> nnx.State:
  """The sampler's copy of the trainer's parameters, for the graph built under `policy`.

  Projections that `policy` stores as "rollout_fp8" get the e4m3 codes and scale that
  `fp8_matmul` computes from their kernel in the trainer's forward (`stored_weight`), so the
  rollout stays bit-identical while a decode step reads one byte per weight and skips the
  per-call amax, scale and cast. Then, when `policy_lib.sampler_copy_dtype` allows it, every wider
  floating parameter outside the heads is stored in the compute dtype (half the memory under
  bf16 compute, the same numbers).

  Args:
    params: the trainer's state (`nnx.split(model)[1]`), under the trainer's policy.
    policy: the sampler's policy (`policy.sampler_policy` of the trainer's).
    compute_dtype: the model's compute dtype.

  Returns:
    A state for the sampler's graph; `params` itself when nothing changes. Pure and jittable.
  """

  def convert(path, leaves):
    precision = policy.projection(path)
    if precision.storage != "rollout_fp8" or "kernel" not in leaves:
      return leaves
    kernel = leaves.pop("kernel").get_value()
    return leaves | stored_weight(kernel, precision, compute_dtype)

  if policy.rollout_fp8:
    params = _map_projections(params, convert)
  dtype = policy_lib.sampler_copy_dtype(policy, compute_dtype)
  if dtype is None:
    return params
  flat = [
    (path, var if types.path_to_str(path).startswith(_HEADS_PREFIX) else _cast(var, dtype))
    for path, var in nnx.to_flat_state(params)
  ]
  return nnx.from_flat_state(flat)
