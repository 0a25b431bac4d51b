"""Low-precision number formats with explicit scales: FP8 (e4m3, e5m2), NVFP4 and int4.

A quantised tensor is a pair (codes, scales) with

  dequantised = codes.astype(float32) * scale    (each scale applied to its block of codes).

**Scale layout.** A scale array is either a float32 scalar (one per-tensor scale) or has the rank
of the codes with dimension d of length `codes.shape[d] // block[d]` (the "compact block
layout"): scale[i, j] belongs to the block codes[i*bm:(i+1)*bm, j*bn:(j+1)*bn]. The block is
recovered from the two shapes, so dequantising needs no metadata. For example a [256, 512]
kernel in (128, 128) FP8 blocks has a [2, 4] scale, a [4096, 128] kernel in int4 groups of 128
along axis 0 has a [32, 128] scale. This is the layout of DeepSeek-V3's block-scaled FP8
checkpoints (arXiv 2412.19437).

**Blocks.** A block size larger than its dimension is clipped to the dimension (so a (128, 128)
weight block also serves a 64 x 64 test kernel); a dimension that the clipped block size does not
divide raises ValueError naming the shape and the block.

**Rounding.** Every cast rounds to nearest, ties to even (XLA's convert, bit-identical to
`ml_dtypes` on CPU; `jnp.round` for int4). Before each cast the scaled values are clipped to the
format's largest finite value: `float8_e4m3fn` has no infinity and a float32 -> e4m3fn convert
returns NaN above 464, e5m2 returns inf above 61440, and float -> int converts truncate.

**Scales.** scale = amax / fmax maps each block's amax to the format maximum fmax (448 for e4m3,
57344 for e5m2, 7 for int4; NVFP4 below); an all-zero block gets scale 1 (codes 0). The amax
element lands within a few float32 roundings of fmax, and the saturating cast codes it as
exactly ±fmax. Non-finite inputs give NaN scales.

**Arithmetic.** Every step is a correctly rounded float32 operation: scale = amax *
float32(1 / fmax), and codes = cast(x * float32(1 / scale)). Compiled XLA rewrites a division by
a constant or by a broadcast scalar into a multiplication by a rounded reciprocal (eager
execution does not), so writing the reciprocals explicitly keeps results bit-identical with and
without `jit`, and lets a float64 reference reproduce them exactly on CPU. On an H100 XLA's
float32 reciprocal is not correctly rounded (about one result in eight differed from IEEE), so
a code near a rounding boundary can differ by one step from the CPU result, and between
programs that XLA:GPU fuses differently.

**Formats.**
- FP8 (`quantize_fp8`): per-tensor scaling, or per-block over the last two dimensions, e.g.
  (128, 128) for weights and (1, 128) for activation groups, as in DeepSeek-V3 and Jet-RL
  (arXiv 2601.14243).
- NVFP4 (`quantize_nvfp4`), NVIDIA's 4-bit format used by QeRL (arXiv 2510.11696): e2m1 codes
  (magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}), one e4m3 scale per 16 consecutive elements along an
  axis, and one float32 tensor scale amax / (6 * 448) that brings the block scales into e4m3
  range. Codes are stored as `jnp.float4_e2m1fn`.
- int4 (`quantize_int4`): symmetric per-group scaling, scale = group amax / 7, codes in [-7, 7],
  stored as `jnp.int4`. -8 is left unused so that the grid is symmetric and both +amax and -amax
  are exact; reaching -8 would need scale amax / 8, with +amax overflowing 7.

**XLA:CPU.** `float4_e2m1fn` and `int4` arrays can be created, cast, reshaped and passed through
`jit`, but they occupy one byte per element on CPU, and dots on them fail there ("does not
support custom element sizes"; a float4 dot without `preferred_element_type` compiles but
rounds its result to float4). Dequantise before any matmul.

The quantisers are jitted with their format arguments (dtype, block, axis, group) static, so
blocks are passed as tuples.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

FP8_E4M3 = jnp.float8_e4m3fn
FP8_E5M2 = jnp.float8_e5m2
FP4_E2M1 = jnp.float4_e2m1fn
INT4 = jnp.int4

E4M3_MAX = 448.0
E5M2_MAX = 57344.0
FP4_MAX = 6.0
INT4_MAX = 7

NVFP4_BLOCK = 16
INT4_GROUP = 128
# DeepSeek-V3's weight block; clipped to small kernels.
FP8_WEIGHT_BLOCK = (128, 128)

WEIGHT_FORMATS = ("fp8", "nvfp4", "int4")

_FP8_MAX = {jnp.dtype(FP8_E4M3): E4M3_MAX, jnp.dtype(FP8_E5M2): E5M2_MAX}


class Quantized(NamedTuple):
  """Codes and float32 scales in the compact block layout (module docstring).

  Attributes:
    values: codes, e.g. float8_e4m3fn, float8_e5m2 or int4, same shape as the original tensor.
    scale: float32, a scalar or one entry per block.
  """

  values: jax.Array
  scale: jax.Array


class NVFP4(NamedTuple):
  """An NVFP4 tensor: dequantised = values * block_scales * tensor_scale.

  Attributes:
    values: float4_e2m1fn codes, same shape as the original tensor.
    block_scales: float8_e4m3fn, one per block of 16 along the quantised axis (compact layout).
    tensor_scale: float32 scalar, amax / (6 * 448).
  """

  values: jax.Array
  block_scales: jax.Array
  tensor_scale: jax.Array


# ---------------------------------------------------------------------------------------------
# Block helpers.
# ---------------------------------------------------------------------------------------------


def _clip_blocks(where, shape, block):
  """`block` (one size per dimension) clipped to `shape`; ValueError unless it tiles `shape`."""
  clipped = tuple(min(int(b), n) for b, n in zip(block, shape, strict=True))
  tiles = all(b >= 1 and n % b == 0 for b, n in zip(clipped, shape, strict=True))
  if not tiles or any(int(b) < 1 for b in block):
    raise ValueError(
      f"{where}: an array of shape {tuple(shape)} cannot be split into blocks {tuple(block)} "
      f"(clipped to the shape: {clipped}); every dimension must be divisible by its block size."
    )
  return clipped


def _axis_blocks(where, shape, axis, size):
  """Blocks of `size` along `axis` only (groups of consecutive elements)."""
  if not -len(shape) <= axis < len(shape):
    raise ValueError(f"{where}: axis {axis} is out of range for an array of shape {shape}.")
  axis %= len(shape)
  return _clip_blocks(where, shape, tuple(size if d == axis else 1 for d in range(len(shape))))


def _split_shape(shape, block):
  """[n0, n1, ...] -> [n0/b0, b0, n1/b1, b1, ...]; odd axes index within a block."""
  return tuple(d for n, b in zip(shape, block, strict=True) for d in (n // b, b))


def _block_amax(x, block):
  """max |x| over each block, in the compact layout."""
  split = jnp.abs(x).reshape(_split_shape(x.shape, block))
  return jnp.max(split, axis=tuple(range(1, 2 * x.ndim, 2)))


def _blockwise(op, x, scale):
  """op(x, s) with each entry s of the compact-layout `scale` applied to its block of `x`."""
  if scale.ndim == 0:
    return op(x, scale)
  if scale.ndim != x.ndim or any(s < 1 or n % s for n, s in zip(x.shape, scale.shape, strict=True)):
    raise ValueError(
      f"scale of shape {scale.shape} does not tile values of shape {x.shape}; expected a scalar "
      f"or one scale per block (same rank, each dimension dividing the values' dimension)."
    )
  block = tuple(n // s for n, s in zip(x.shape, scale.shape, strict=True))
  # Reshape instead of repeating the scale, so no full-size scale array is materialised.
  scale_split = tuple(d for s in scale.shape for d in (s, 1))
  out = op(x.reshape(_split_shape(x.shape, block)), scale.reshape(scale_split))
  return out.reshape(x.shape)


def _scale_for(amax, fmax):
  """amax * float32(1 / fmax); 1 where that is 0 (all-zero block, or underflow)."""
  scale = jnp.asarray(amax, jnp.float32) * jnp.float32(1.0 / fmax)
  return jnp.where(scale > 0, scale, jnp.float32(1.0))


def _saturating_cast(y, dtype, fmax):
  """Round-to-nearest-even cast of float32 `y` to `dtype`, clipped to ±fmax first."""
  return jnp.clip(y, -fmax, fmax).astype(dtype)


def _reciprocal(scale):
  """float32 1 / scale, and 0 where scale == 0 (a zero scale codes its whole block as 0)."""
  positive = scale > 0
  return jnp.where(positive, 1.0 / jnp.where(positive, scale, 1.0), 0.0)


def _to_grid(x, scale):
  """x * float32(1 / scale), each scale over its block: the value to round onto the grid."""
  return _blockwise(jnp.multiply, x, _reciprocal(scale))


# ---------------------------------------------------------------------------------------------
# FP8.
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("dtype", "block"))
def quantize_fp8(x: jax.Array, dtype=FP8_E4M3, block: tuple[int, int] | None = None) -> Quantized:
  """Quantises `x` to FP8 with float32 scales mapping each amax to the format maximum.

  Args:
    x: array of any float dtype; rank >= 2 when `block` is given.
    dtype: `FP8_E4M3` (max 448) or `FP8_E5M2` (max 57344).
    block: None for one per-tensor scale, or (bm, bn) for one scale per bm x bn block of the last
      two dimensions (leading dimensions are blocked one by one), e.g. (128, 128) for weights,
      (1, 128) for per-token activation groups. Sizes are clipped to the dimensions.

  Returns:
    `Quantized(values, scale)`: values of `dtype` with x's shape; scale float32, shape () or
    [..., M/bm, N/bn]. scale = amax / fmax (module docstring; 1 for an all-zero block).

  Raises:
    ValueError: unknown dtype, or a block that does not tile the last two dimensions.
  """
  if jnp.dtype(dtype) not in _FP8_MAX:
    raise ValueError(f"quantize_fp8: dtype must be float8_e4m3fn or float8_e5m2, got {dtype}.")
  fmax = _FP8_MAX[jnp.dtype(dtype)]
  x32 = jnp.asarray(x).astype(jnp.float32)
  if block is None:
    scale = _scale_for(jnp.max(jnp.abs(x32)), fmax)
  else:
    if x32.ndim < 2 or len(block) != 2:
      raise ValueError(
        f"quantize_fp8: block {block} needs (bm, bn) and an array of rank >= 2, got shape "
        f"{x32.shape}."
      )
    blocks = _clip_blocks("quantize_fp8", x32.shape, (1,) * (x32.ndim - 2) + tuple(block))
    scale = _scale_for(_block_amax(x32, blocks), fmax)
  return Quantized(_saturating_cast(_to_grid(x32, scale), dtype, fmax), scale)


@functools.partial(jax.jit, static_argnames=("dtype",))
def dequantize(q: Quantized, dtype=jnp.float32) -> jax.Array:
  """codes * scale (in float32, each scale over its block), cast to `dtype`.

  Works for every `Quantized` of this module (FP8 and int4).
  """
  values = q.values.astype(jnp.float32)
  return _blockwise(jnp.multiply, values, jnp.asarray(q.scale, jnp.float32)).astype(dtype)


@functools.partial(jax.jit, static_argnames=("dtype", "block"))
def fake_quantize_fp8(x: jax.Array, dtype=FP8_E4M3, block: tuple[int, int] | None = None):
  """dequantize(quantize_fp8(x, dtype, block)) in x's dtype: what an emulated FP8 GEMM sees."""
  x = jnp.asarray(x)
  return dequantize(quantize_fp8(x, dtype, block), x.dtype)


# ---------------------------------------------------------------------------------------------
# NVFP4.
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("axis", "block"))
def quantize_nvfp4(w: jax.Array, axis: int = 0, block: int = NVFP4_BLOCK) -> NVFP4:
  """Quantises `w` to NVFP4 (arXiv 2510.11696; NVIDIA's two-level-scaled e2m1 format).

  tensor_scale = amax(|w|) / (6 * 448) (1 if w == 0), so that every block scale fits e4m3;
  block_scales = e4m3(block_amax / (6 * tensor_scale)); values = e2m1(w / (block_scale *
  tensor_scale)), both round-to-nearest-even and saturating, each division a multiplication by
  a float32 reciprocal (module docstring). Because the block scale is rounded, a block's amax
  maps to 6 only up to e4m3's relative rounding (2^-4); above 6 it saturates.

  Args:
    w: array of rank >= 1, e.g. an [in, out] kernel used as x @ w.
    axis: the axis along which consecutive elements share a block scale; 0 is the contraction
      axis of an [in, out] kernel, as the hardware format requires.
    block: elements per block (16 in NVFP4), clipped to the axis length.

  Returns:
    `NVFP4(values float4_e2m1fn, block_scales float8_e4m3fn [compact layout], tensor_scale f32)`.
    A block whose scale underflows e4m3 (block amax <= amax / (448 * 2^10)) is coded as 0.

  Raises:
    ValueError: `axis` out of range or `block` does not divide the axis.
  """
  w32 = jnp.asarray(w).astype(jnp.float32)
  if w32.ndim < 1:
    raise ValueError(f"quantize_nvfp4: needs an array of rank >= 1, got shape {w32.shape}.")
  blocks = _axis_blocks("quantize_nvfp4", w32.shape, axis, block)
  tensor_scale = _scale_for(jnp.max(jnp.abs(w32)), FP4_MAX * E4M3_MAX)
  block_scales = _saturating_cast(
    _to_grid(_block_amax(w32, blocks), FP4_MAX * tensor_scale), FP8_E4M3, E4M3_MAX
  )
  step = block_scales.astype(jnp.float32) * tensor_scale
  values = _saturating_cast(_to_grid(w32, step), FP4_E2M1, FP4_MAX)
  return NVFP4(values, block_scales, tensor_scale)


@functools.partial(jax.jit, static_argnames=("dtype",))
def dequantize_nvfp4(q: NVFP4, dtype=jnp.float32) -> jax.Array:
  """values * (block_scale * tensor_scale) in float32, cast to `dtype`."""
  step = q.block_scales.astype(jnp.float32) * jnp.asarray(q.tensor_scale, jnp.float32)
  return _blockwise(jnp.multiply, q.values.astype(jnp.float32), step).astype(dtype)


# ---------------------------------------------------------------------------------------------
# int4.
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("axis", "group"))
def quantize_int4(w: jax.Array, axis: int = 0, group: int = INT4_GROUP) -> Quantized:
  """Symmetric per-group int4: scale = group amax / 7, codes = clip(round(w / scale), -7, 7).

  Args:
    w: array of rank >= 1, e.g. an [in, out] kernel.
    axis: the axis along which `group` consecutive elements share a scale (0: contraction axis).
    group: group size, clipped to the axis length.

  Returns:
    `Quantized(values int4, scale float32 [compact layout])`; |w - dequantised| <= scale / 2.

  Raises:
    ValueError: `axis` out of range or `group` does not divide the axis.
  """
  w32 = jnp.asarray(w).astype(jnp.float32)
  if w32.ndim < 1:
    raise ValueError(f"quantize_int4: needs an array of rank >= 1, got shape {w32.shape}.")
  blocks = _axis_blocks("quantize_int4", w32.shape, axis, group)
  scale = _scale_for(_block_amax(w32, blocks), INT4_MAX)
  codes = jnp.clip(jnp.round(_to_grid(w32, scale)), -INT4_MAX, INT4_MAX)
  return Quantized(codes.astype(INT4), scale)


def dequantize_int4(q: Quantized, dtype=jnp.float32) -> jax.Array:
  """codes * scale, cast to `dtype` (the same as `dequantize`)."""
  return dequantize(q, dtype)


# ---------------------------------------------------------------------------------------------
# Weight formats by name.
# ---------------------------------------------------------------------------------------------


def quantize_weight(w: jax.Array, fmt: str) -> Quantized | NVFP4:
  """Quantises an [in, out] kernel in the named format with its default blocking.

  "fp8": e4m3 in (128, 128) blocks; "nvfp4": blocks of 16 along axis 0; "int4": groups of 128
  along axis 0 (all clipped to the kernel's shape).
  """
  if fmt == "fp8":
    return quantize_fp8(w, FP8_E4M3, block=FP8_WEIGHT_BLOCK)
  if fmt == "nvfp4":
    return quantize_nvfp4(w)
  if fmt == "int4":
    return quantize_int4(w)
  raise ValueError(f"quantize_weight: fmt must be one of {WEIGHT_FORMATS}, got {fmt!r}.")


def dequantize_weight(q: Quantized | NVFP4, dtype=jnp.float32) -> jax.Array:
  """Dequantises the result of `quantize_weight` to `dtype`."""
  if isinstance(q, NVFP4):
    return dequantize_nvfp4(q, dtype)
  return dequantize(q, dtype)
