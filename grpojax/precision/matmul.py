"""FP8 GEMM with a custom VJP: e4m3 forward, e5m2 output gradient, float32 accumulation.

With q_f(·) the quantise-dequantise of `formats.fake_quantize_fp8` in format f, x̂ = q_e4m3(x)
(per tensor, or per `x_block`) and ŵ = q_e4m3(w) (per tensor, or per `w_block`):

  forward    y  = x̂ @ ŵ                      [M, K] @ [K, N], float32 accumulation
  backward   ĝ  = q_e5m2(dy)  (per tensor)
             dx = ĝ @ ŵᵀ,   dw = x̂ᵀ @ ĝ       float32 accumulation, cast to x's / w's dtype

The backward reuses the forward's quantised operands (kept as FP8 codes plus scales, one byte
per element, rather than wide copies) and treats quantisation as the identity
(straight-through), the recipe of DeepSeek-V3 (arXiv 2412.19437) and Jet-RL (arXiv 2601.14243):
e4m3's extra mantissa bit for weights and activations, e5m2's range for gradients.

**How the products are formed.** When both operands have per-tensor scales, the FP8 codes are
multiplied directly, `dot(fp8, fp8, preferred_element_type=float32) * (s_a * s_b)`, with the
scales applied to the float32 result, as an FP8 GEMM's epilogue does. On an H100 (jax 0.11.2)
this lowers to cuBLASLt's FP8 GEMM (`__cublas$lt$matmul$f8`) in the forward and in both
backward products (e5m2 x e4m3). The alternative spelling, convert(fp8) -> float32 * scale ->
dot, is rewritten into the same FP8 GEMM only when the FP8 codes enter the program as
arguments; quantised inside the same program, as here, it compiled to a float32 cuBLASLt GEMM
at half the speed. On XLA:CPU the FP8 dot is emulated exactly (operands widened to float32).
Block-scaled operands (scales varying along K) are dequantised to float32 before an ordinary
dot: an exact emulation on CPU, while on GPU the float32 dot runs at the default matmul
precision (TF32 on H100; use `jax.default_matmul_precision("highest")` for exactness).

Two GPU caveats: Hopper's FP8 tensor cores accumulate with reduced precision (DeepSeek-V3,
"Increasing Accumulation Precision"; about 3e-3 of the largest output at K = 4096 on an H100),
so "float32 accumulation" is exact only in the CPU emulation; and whether XLA
picks the FP8 GEMM depends on its version and flags, so check the compiled HLO for
`__cublas$lt$matmul$f8` when speed matters.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from grpojax.precision import formats

# lax.dot_general dimension numbers: a @ b, a @ bᵀ and aᵀ @ b.
_AB = (((1,), (0,)), ((), ()))
_ABT = (((1,), (1,)), ((), ()))
_ATB = (((0,), (0,)), ((), ()))


@dataclasses.dataclass(frozen=True)
class _Spec:
  """Static (hashable) settings of one `fp8_matmul` call."""

  fwd_dtype: jnp.dtype
  bwd_dtype: jnp.dtype
  x_block: tuple[int, int] | None
  w_block: tuple[int, int] | None
  out_dtype: jnp.dtype
  x_dtype: jnp.dtype
  w_dtype: jnp.dtype


def _outer_scale(q: formats.Quantized, contract_axis: int) -> jax.Array | None:
  """q's scale as one entry per index of its free axis (or a single entry), or None when it
  varies along the contraction."""
  if q.scale.ndim == 0:
    return q.scale[None]
  if q.scale.shape[contract_axis] != 1:
    return None
  per_block = q.scale.reshape(-1)
  free = q.values.shape[1 - contract_axis]
  return jnp.repeat(per_block, free // per_block.shape[0]) if per_block.shape[0] > 1 else per_block


def _scaled_dot(a: formats.Quantized, b: formats.Quantized, dims) -> jax.Array:
  """dequantize(a) · dequantize(b) contracted over `dims`, in float32.

  When neither scale varies along the contracted axis (per tensor, per row of x, per column of
  w) the scales factor out of the sum: the FP8 codes are multiplied directly (an FP8 GEMM on
  Hopper GPUs) and the result is scaled by the outer product of the two scale vectors.
  """
  (a_contract,), (b_contract,) = dims[0]
  sa, sb = _outer_scale(a, a_contract), _outer_scale(b, b_contract)
  if sa is not None and sb is not None:
    codes = jax.lax.dot_general(a.values, b.values, dims, preferred_element_type=jnp.float32)
    return codes * (sa[:, None] * sb[None, :])
  return jax.lax.dot_general(
    formats.dequantize(a), formats.dequantize(b), dims, preferred_element_type=jnp.float32
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fp8_matmul(spec, x, w):
  return _fp8_matmul_fwd(spec, x, w)[0]


def _fp8_matmul_fwd(spec, x, w):
  xq = formats.quantize_fp8(x, spec.fwd_dtype, spec.x_block)
  wq = formats.quantize_fp8(w, spec.fwd_dtype, spec.w_block)
  return _scaled_dot(xq, wq, _AB).astype(spec.out_dtype), (xq, wq)


def _fp8_matmul_bwd(spec, residuals, dy):
  xq, wq = residuals
  gq = formats.quantize_fp8(dy, spec.bwd_dtype)
  dx = _scaled_dot(gq, wq, _ABT).astype(spec.x_dtype)
  dw = _scaled_dot(xq, gq, _ATB).astype(spec.w_dtype)
  return dx, dw


_fp8_matmul.defvjp(_fp8_matmul_fwd, _fp8_matmul_bwd)


def fp8_matmul(
  x: jax.Array,
  w: jax.Array,
  *,
  fwd_dtype=formats.FP8_E4M3,
  bwd_dtype=formats.FP8_E5M2,
  x_block: tuple[int, int] | None = None,
  w_block: tuple[int, int] | None = None,
  out_dtype=None,
) -> jax.Array:
  """x @ w through FP8 (module docstring), differentiable in x and w.

  Args:
    x: [M, K] floating activations.
    w: [K, N] floating kernel.
    fwd_dtype: FP8 format of x and w in the forward (and reused in the backward).
    bwd_dtype: FP8 format of the output cotangent dy (per-tensor scaled).
    x_block: None (per tensor) or (bm, bk) blocks of x, e.g. (1, 128) per-token groups.
    w_block: None (per tensor) or (bk, bn) blocks of w, e.g. (128, 128).
    out_dtype: dtype of y; defaults to x's dtype.

  Returns:
    y [M, N] in `out_dtype`; its VJP returns dx in x's dtype and dw in w's dtype.

  Raises:
    ValueError: x or w is not 2-D or not floating, their inner dimensions differ, or a block
      does not tile its operand.
  """
  x, w = jnp.asarray(x), jnp.asarray(w)
  if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
    raise ValueError(
      f"fp8_matmul: expects x [M, K] and w [K, N], got shapes {x.shape} and {w.shape}."
    )
  if not (jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(w.dtype, jnp.floating)):
    raise ValueError(f"fp8_matmul: x and w must be floating, got {x.dtype} and {w.dtype}.")
  spec = _Spec(
    fwd_dtype=jnp.dtype(fwd_dtype),
    bwd_dtype=jnp.dtype(bwd_dtype),
    x_block=None if x_block is None else tuple(x_block),
    w_block=None if w_block is None else tuple(w_block),
    out_dtype=jnp.dtype(x.dtype if out_dtype is None else out_dtype),
    x_dtype=x.dtype,
    w_dtype=w.dtype,
  )
  return _fp8_matmul(spec, x, w)


def fp8_matmul_prequantized(
  x: jax.Array,
  wq: formats.Quantized,
  *,
  fwd_dtype=formats.FP8_E4M3,
  x_block: tuple[int, int] | None = None,
  out_dtype=None,
) -> jax.Array:
  """The forward of `fp8_matmul(x, w)` with w's quantisation done beforehand.

  `wq = formats.quantize_fp8(w, fwd_dtype, w_block)` gives bit-identical results to
  `fp8_matmul(x, w, w_block=w_block)`'s forward, without re-quantising w in every call: the
  sampler's copy stores its kernels this way (`precision.transforms.sampler_params`), so a
  decode step reads one byte per weight and skips the amax/scale/cast pass. No gradient.
  """
  xq = formats.quantize_fp8(x, fwd_dtype, None if x_block is None else tuple(x_block))
  return _scaled_dot(xq, wq, _AB).astype(x.dtype if out_dtype is None else out_dtype)
