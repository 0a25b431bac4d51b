"""The decoder's parameterised building blocks: a precision-aware dense layer, RMSNorm, and the
token embedding.

Attribute names mirror Hugging Face's (`kernel` is torch's `weight` transposed, `scale` a
norm's `weight`, `embedding` the embedding table), so parameter paths map to checkpoint names
by rule (`grpojax.models.hf_checkpoint.hf_name`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.precision import matmul as fp8
from grpojax.precision import policy as precision_policy
from grpojax.precision import transforms

Array = jax.Array
# The settings of a projection outside the decoder layers (the LM head): frozen, so one value
# serves every build.
PLAIN = precision_policy.ProjectionPrecision()


def _normal_init(stddev: float = 0.02):
  return jax.nn.initializers.normal(stddev)


class Dense(nnx.Module):
  """y = x @ W (+ bias), computed as one 2-D matmul, in the precision its policy gives.

  Flattening leading axes to a 2-D `[B·T, D] @ [D, F]` product lets XLA's CPU backend avoid
  physical transposes in the weight-gradient matmuls (1.3-1.4x faster training steps).

  `precision` (a `grpojax.precision.ProjectionPrecision`, part of the graph definition, so a
  sampler and a trainer built with the same policy compute the same function) decides:
    matmul: "default" (the compute dtype), "fp8" (e4m3 forward with a per-tensor weight scale
      and per-token activation scales, e5m2 gradients) or "fp8_block" (128x128 weight blocks,
      1x128 activation groups; Jet-RL's granularity, arXiv 2601.14243).
    storage: W is `kernel` (an `nnx.Param`), or frozen codes and scales (`quant_values`,
      `quant_scales`, for NVFP4 `quant_tensor_scale`; `grpojax.precision.transforms`)
      dequantised in the forward, or, in the sampler's copy of an FP8 policy ("rollout_fp8"),
      the e4m3 codes and scale that `fp8_matmul` would compute from the kernel, multiplied
      directly.
    lora_rank: > 0 adds `lora_scale · x A B` with lora_a [in, r] and lora_b [r, out]
      (`nnx.LoRAParam`).
  The kernel is drawn from `rngs.params()` whatever the storage, so every policy consumes the
  same random numbers; a quantised storage keeps that kernel's codes, and adapters draw A from a
  fold of the kernel's key (`grpojax.models.build.init_policy` draws them as training runs do).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    use_bias: bool,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    precision: precision_policy.ProjectionPrecision = PLAIN,
  ):
    key = rngs.params()
    kernel = _normal_init()(key, (in_features, out_features), param_dtype)
    stored = transforms.stored_weight(kernel, precision, dtype)
    self.kernel = stored.get("kernel")
    self.quant_values = stored.get("quant_values")
    self.quant_scales = stored.get("quant_scales")
    self.quant_tensor_scale = stored.get("quant_tensor_scale")
    self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
    if precision.lora_rank:
      self.lora_a, self.lora_b = transforms.lora_adapter(
        jax.random.fold_in(key, 1), in_features, out_features, precision.lora_rank
      )
    else:
      self.lora_a = self.lora_b = None
    self.dtype = dtype
    self.precision = precision

  def _quantized(self):
    tensor_scale = None if self.quant_tensor_scale is None else self.quant_tensor_scale[...]
    return self.quant_values[...], self.quant_scales[...], tensor_scale

  def weight(self) -> Array:
    """W [in, out] as the forward multiplies it (dequantised to float32 when stored quantised)."""
    if self.kernel is not None:
      return self.kernel[...]
    return transforms.dequantized_weight(self.precision.storage, *self._quantized())

  def __call__(self, x: Array) -> Array:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    matmul = self.precision.matmul
    x_block = (1, 128) if matmul == "fp8_block" else (1, x2.shape[1])
    if self.precision.storage == "rollout_fp8":
      wq = transforms.stored_quantized("rollout_fp8", *self._quantized())
      y = fp8.fp8_matmul_prequantized(x2, wq, x_block=x_block)
    elif matmul == "default":
      y = x2 @ self.weight().astype(self.dtype)
    else:
      # Activations are scaled per token (per 1x128 group with blocks), never per tensor: a
      # per-tensor scale would depend on the other rows of the batch, so one token's FP8 value
      # would differ between a decode step and the trainer's full-sequence forward.
      w = self.weight().astype(self.dtype)
      y = fp8.fp8_matmul(x2, w, x_block=x_block, w_block=self.precision.w_block)
    if self.lora_a is not None:
      y = y + (x2 @ self.lora_a[...].astype(self.dtype)) @ (
        self.lora_b[...].astype(self.dtype) * self.precision.lora_scale
      )
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y.reshape(*lead, y.shape[-1])


class RMSNorm(nnx.Module):
  """x / sqrt(mean(x²) + eps) · scale, normalised in float32 as Hugging Face does."""

  def __init__(self, dim: int, *, eps: float, param_dtype):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


class Embed(nnx.Module):
  """Token embedding table [V, D]."""

  def __init__(self, vocab_size: int, dim: int, *, param_dtype, rngs: nnx.Rngs):
    self.embedding = nnx.Param(_normal_init()(rngs.params(), (vocab_size, dim), param_dtype))

  def __call__(self, tokens_bt: Array) -> Array:
    return jnp.take(self.embedding[...], tokens_bt, axis=0)
