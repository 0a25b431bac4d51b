"""A model's precision policy, applied in place: FP8 matmuls, an FP32 LM head, a frozen
quantised base with LoRA adapters (QeRL), and the LoRA merge for export.

Every function edits attributes of the model's `Dense` layers, which are part of its graph
definition: the sampler and the trainer built from one definition run the identical graph
(Jet-RL's "unified precision flow", arXiv 2601.14243), and a different definition over the same
parameters gives a deliberately different rollout graph (the "naive" FP8-rollout baseline).

Only the decoder layers' projections are touched: embeddings and the LM head stay in the compute
dtype (or float32 with `lm_head_f32`), as in Jet-RL and QeRL (arXiv 2510.11696).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models import transformer
from grpojax.precision import formats

MATMULS = ("default", "fp8", "fp8_block")
DEFAULT_LORA_TARGETS = r"(q|k|v|o|gate|up|down)_proj"


def _path_str(path) -> str:
  return "/".join(str(p) for p in path)


def layer_projections(model: transformer.Decoder, targets: str = DEFAULT_LORA_TARGETS):
  """(path, Dense) of every decoder-layer projection whose name matches `targets` (a regex)."""
  pattern = re.compile(rf"(^|/)(?:{targets})$")
  found = []
  for path, node in nnx.iter_graph(model):
    if isinstance(node, transformer.Dense) and path and path[0] == "layers":
      name = _path_str(path)
      if pattern.search(name):
        found.append((name, node))
  return found


def set_matmul(model: transformer.Decoder, matmul: str) -> None:
  """Every decoder-layer projection multiplies in `matmul` ("default", "fp8", "fp8_block")."""
  if matmul not in MATMULS:
    raise ValueError(f"matmul={matmul!r}; expected one of {MATMULS}")
  for _, dense in layer_projections(model, r".*"):
    dense.matmul = matmul


def set_lm_head_f32(model: transformer.Decoder, enabled: bool) -> None:
  """Computes the LM head (and so every log-prob) in float32 (MiniMax-M1, arXiv 2506.13585)."""
  model.lm_head_f32 = bool(enabled)


def add_lora(
  model: transformer.Decoder,
  *,
  rank: int,
  alpha: float,
  key: jax.Array,
  targets: str = DEFAULT_LORA_TARGETS,
) -> int:
  """Adds LoRA adapters (arXiv 2106.09685) to the matching projections.

  A [in, r] ~ U(-1/sqrt(in), 1/sqrt(in)) and B [r, out] = 0, so the adapted model starts equal
  to the base; the update is scaled by alpha / r.

  Returns:
    How many projections got adapters.

  Raises:
    ValueError: rank < 1, or no projection matches `targets`.
  """
  if rank < 1:
    raise ValueError(f"lora rank must be >= 1, got {rank}")
  found = layer_projections(model, targets)
  if not found:
    raise ValueError(f"lora targets {targets!r} match no decoder projection")
  for i, (_, dense) in enumerate(found):
    w = dense.weight()
    fan_in, fan_out = w.shape
    bound = 1.0 / np.sqrt(fan_in)
    a = jax.random.uniform(jax.random.fold_in(key, i), (fan_in, rank), jnp.float32, -bound, bound)
    dense.lora_a = nnx.LoRAParam(a)
    dense.lora_b = nnx.LoRAParam(jnp.zeros((rank, fan_out), jnp.float32))
    dense.lora_scale = float(alpha) / rank
  return len(found)


def quantize_base(model: transformer.Decoder, fmt: str, targets: str = DEFAULT_LORA_TARGETS) -> int:
  """Replaces the matching projections' kernels by frozen `fmt` codes and scales.

  Args:
    model: edited in place.
    fmt: "nvfp4", "int4" or "fp8" (see `formats.quantize_weight`).
    targets: regex of projection names.

  Returns:
    How many kernels were quantised.
  """
  found = layer_projections(model, targets)
  for _, dense in found:
    if dense.kernel is None:
      raise ValueError("quantize_base: the model's base is already quantised")
    q = formats.quantize_weight(dense.kernel[...].astype(jnp.float32), fmt)
    dense.quant_format = fmt
    dense.quant_values = transformer.Frozen(q.values)
    if isinstance(q, formats.NVFP4):
      dense.quant_scales = transformer.Frozen(q.block_scales)
      dense.quant_tensor_scale = transformer.Frozen(q.tensor_scale)
    else:
      dense.quant_scales = transformer.Frozen(q.scale)
    dense.kernel = None
  return len(found)


def merged_model(model: transformer.Decoder) -> transformer.Decoder:
  """A plain `Decoder` (no adapters, no quantised storage, default matmuls) with each kernel
  equal to dequant(base) + (alpha / r) A B: what `save_pretrained` exports.

  Its logits equal the adapted model's up to float rounding (the product is re-associated).
  """
  plain = nnx.eval_shape(
    lambda: transformer.Decoder(model.config, rngs=nnx.Rngs(0), dtype=model.dtype)
  )
  adapted = dict(nnx.iter_graph(model))
  values = {}
  for path, var in nnx.to_flat_state(nnx.state(plain)):
    *owner, leaf = path
    node = adapted[tuple(owner)]
    if isinstance(node, transformer.Dense) and leaf == "kernel":
      w = node.weight().astype(jnp.float32)
      if node.lora_a is not None:
        w = w + node.lora_scale * (
          node.lora_a[...].astype(jnp.float32) @ node.lora_b[...].astype(jnp.float32)
        )
      values[path] = w.astype(var.get_value().dtype)
    else:
      values[path] = getattr(node, leaf)[...]
  graphdef, state = nnx.split(plain)
  flat = [(path, var.replace(values[path])) for path, var in nnx.to_flat_state(state)]
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def rollout_copy_dtype(model: transformer.Decoder):
  """The dtype the sampler's copy of the parameters can be stored in without changing one
  number of the rollout, or None to keep the parameters' own.

  Every parameter is cast to the compute dtype right before use (kernels, biases, norm scales,
  embeddings, LoRA factors), so a copy stored already cast computes bit-identically, at half
  the memory of float32 parameters under bf16 compute. A float32 LM head needs the full
  precision, so `lm_head_f32` keeps the copy as it is.
  """
  if model.lm_head_f32 or jnp.dtype(model.dtype).itemsize >= 4:
    return None
  return jnp.dtype(model.dtype)


def cast_floating_params(params, dtype):
  """`params` with every wider floating `nnx.Param` leaf cast to `dtype` (quantised frozen
  codes and scales are left alone)."""

  def cast(v):
    if (
      isinstance(v, nnx.Param)
      and jnp.issubdtype(v.get_value().dtype, jnp.floating)
      and v.get_value().dtype.itemsize > jnp.dtype(dtype).itemsize
    ):
      return v.replace(v.get_value().astype(dtype))
    return v

  return jax.tree.map(cast, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def rollout_converter(model: transformer.Decoder):
  """The sampler's graph and a function from the trainer's parameters to the sampler's, with
  every FP8 projection's kernel quantised once instead of in every matmul call.

  The codes and scales are exactly what `fp8_matmul` computes from the kernel in the trainer's
  forward (`formats.quantize_fp8` of the kernel in the compute dtype), so the rollout stays
  bit-identical while a decode step reads one byte per weight and skips the per-call amax,
  scale and cast. Projections with LoRA adapters or a quantised base are left as they are.

  Returns:
    (graphdef, convert): `convert(params)` maps the trainer's state (`nnx.split(model)[1]`) to
    a state for `graphdef`; it is pure and jittable. With nothing to convert, `graphdef` is the
    model's own and `convert` the identity.
  """
  sample = nnx.clone(model)
  blocks = {}
  for path, dense in nnx.iter_graph(sample):
    if (
      isinstance(dense, transformer.Dense)
      and path
      and path[0] == "layers"
      and dense.matmul != "default"
      and dense.kernel is not None
      and dense.lora_a is None
    ):
      w_block = (128, 128) if dense.matmul == "fp8_block" else None
      q = formats.quantize_fp8(dense.kernel[...].astype(dense.dtype), formats.FP8_E4M3, w_block)
      dense.quant_format = "rollout_fp8"
      dense.quant_values = transformer.Frozen(q.values)
      dense.quant_scales = transformer.Frozen(q.scale)
      dense.kernel = None
      blocks[tuple(path)] = (w_block, dense.dtype)
  if not blocks:
    return nnx.split(model)[0], lambda params: params
  graphdef = nnx.split(sample)[0]

  def convert(params):
    flat = []
    for path, var in nnx.to_flat_state(params):
      owner = tuple(path[:-1])
      if path[-1] == "kernel" and owner in blocks:
        w_block, dtype = blocks[owner]
        q = formats.quantize_fp8(var.get_value().astype(dtype), formats.FP8_E4M3, w_block)
        flat.append((owner + ("quant_scales",), transformer.Frozen(q.scale)))
        flat.append((owner + ("quant_values",), transformer.Frozen(q.values)))
      else:
        flat.append((tuple(path), var))
    return nnx.from_flat_state(sorted(flat, key=lambda kv: kv[0]))

  return graphdef, convert
