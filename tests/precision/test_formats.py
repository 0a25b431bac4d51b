"""Tests for grpojax/precision/formats.py against float64 NumPy references of the same rounding."""

import functools
import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.precision import formats

# (fraction bits, smallest normal exponent, largest finite value) of each minifloat grid.
E4M3 = (3, -6, 448.0)
E5M2 = (2, -14, 57344.0)
E2M1 = (1, 0, 6.0)
FP8_GRIDS = {"e4m3": (formats.FP8_E4M3, E4M3), "e5m2": (formats.FP8_E5M2, E5M2)}

# ---------------------------------------------------------------------------------------------
# float64 references (imported by test_matmul.py too).
# ---------------------------------------------------------------------------------------------


def round_minifloat(y, grid):
  """Round-to-nearest-even of float64 `y` onto a binary float grid, saturating at ±max.

  A value in [2^e, 2^(e+1)) has spacing 2^(e - fraction bits); below the smallest normal
  exponent the spacing stays at its subnormal value. y / spacing is exact in float64, so
  np.round (half to even) performs the rounding.
  """
  fraction_bits, min_exp, fmax = grid
  y = np.clip(np.asarray(y, np.float64), -fmax, fmax)
  _, e = np.frexp(np.abs(y))  # |y| = f * 2^e with f in [0.5, 1): exponent e - 1.
  spacing = np.ldexp(1.0, np.maximum(e - 1, min_exp) - fraction_bits)
  return np.round(y / spacing) * spacing


def expand(scale, shape):
  """Compact-layout scale repeated over its blocks to `shape`."""
  scale = np.asarray(scale, np.float64)
  if scale.ndim == 0:
    return np.broadcast_to(scale, shape)
  for axis, (n, s) in enumerate(zip(shape, scale.shape, strict=True)):
    scale = np.repeat(scale, n // s, axis=axis)
  return scale


def block_amax(x, block):
  """max |x| over each block (one size per dimension), compact layout."""
  split = [d for n, b in zip(x.shape, block, strict=True) for d in (n // b, b)]
  return np.abs(x).reshape(split).max(axis=tuple(range(1, 2 * x.ndim, 2)))


def f32(v):
  """float64 values rounded to float32 (kept in float64), wherever the algorithm stores float32.

  A product or quotient of float32 numbers computed in float64 and rounded once to float32
  equals the float32 operation (float64 has more than 2 * 24 + 2 bits), so the references
  below reproduce every float32 step exactly.
  """
  return np.asarray(v, np.float64).astype(np.float32).astype(np.float64)


def reciprocal(scale):
  """float32(1 / scale), 0 where scale == 0."""
  scale = np.asarray(scale, np.float64)
  return np.where(scale > 0, f32(1.0 / np.where(scale > 0, scale, 1.0)), 0.0)


def f32_scale(amax, fmax):
  """The documented scale amax * float32(1 / fmax) in float32 (1 for amax == 0)."""
  scale = f32(np.asarray(amax, np.float64) * f32(1.0 / fmax))
  return np.where(scale > 0, scale, 1.0)


def to_grid(x, scale):
  """float32(x * float32(1 / scale)), each scale over its block."""
  return f32(x * expand(reciprocal(scale), x.shape))


def reference_fp8(x, grid, block=None):
  """(codes, scale, dequantised) of `quantize_fp8` in float64."""
  x = np.asarray(x, np.float64)
  if block is None:
    scale = f32_scale(np.abs(x).max(), grid[2])
  else:
    blocks = (1,) * (x.ndim - 2) + tuple(
      min(b, n) for b, n in zip(block, x.shape[-2:], strict=True)
    )
    scale = f32_scale(block_amax(x, blocks), grid[2])
  codes = round_minifloat(to_grid(x, scale), grid)
  return codes, scale, f32(codes * expand(scale, x.shape))


def reference_nvfp4(w, axis=0, block=16):
  """(codes, block_scales, tensor_scale, dequantised) of `quantize_nvfp4` in float64."""
  w = np.asarray(w, np.float64)
  blocks = tuple(min(block, n) if d == axis else 1 for d, n in enumerate(w.shape))
  tensor_scale = f32_scale(np.abs(w).max(), 6.0 * 448.0)
  block_scales = round_minifloat(to_grid(block_amax(w, blocks), f32(6.0 * tensor_scale)), E4M3)
  step = f32(block_scales * tensor_scale)
  codes = round_minifloat(to_grid(w, step), E2M1)
  return codes, block_scales, tensor_scale, f32(codes * expand(step, w.shape))


def reference_int4(w, axis=0, group=128):
  """(codes, scale, dequantised) of `quantize_int4` in float64."""
  w = np.asarray(w, np.float64)
  blocks = tuple(min(group, n) if d == axis else 1 for d, n in enumerate(w.shape))
  scale = f32_scale(block_amax(w, blocks), 7.0)
  codes = np.clip(np.round(to_grid(w, scale)), -7, 7)
  return codes, scale, f32(codes * expand(scale, w.shape))


def _wide_range(seed, shape):
  """float32 normal values times log-normal magnitudes spanning ~1e-4..1e4 (hits subnormals)."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=shape) * np.exp(2.0 * rng.normal(size=shape))).astype(np.float32)


def _f64(a):
  # ml_dtypes converts float8 / float4 / int4 arrays to float64 exactly, without compiling.
  return np.asarray(a).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# FP8.
# ---------------------------------------------------------------------------------------------


FP8_BLOCKS = [None, (1, 16), (8, 16), (128, 128)]


@pytest.mark.parametrize("name", sorted(FP8_GRIDS))
@pytest.mark.parametrize("block", FP8_BLOCKS)
def test_fp8_matches_reference(name, block):
  dtype, grid = FP8_GRIDS[name]
  x = _wide_range(0, (2, 16, 32))
  q = formats.quantize_fp8(x, dtype, block)
  codes, scale, deq = reference_fp8(x, grid, block)
  assert q.values.dtype == dtype and q.values.shape == x.shape
  assert q.scale.dtype == jnp.float32 and q.scale.shape == np.shape(scale)
  np.testing.assert_array_equal(_f64(q.scale), scale)
  np.testing.assert_array_equal(_f64(q.values), codes)
  np.testing.assert_array_equal(_f64(formats.dequantize(q)), deq)


def test_fp8_block_layout():
  x = _wide_range(1, (3, 16, 32))
  assert formats.quantize_fp8(x, block=(8, 16)).scale.shape == (3, 2, 2)
  assert formats.quantize_fp8(x, block=(1, 32)).scale.shape == (3, 16, 1)
  # (128, 128) is clipped to (16, 32): one scale per leading index.
  assert formats.quantize_fp8(x, block=(128, 128)).scale.shape == (3, 1, 1)
  assert formats.quantize_fp8(x).scale.shape == ()


@pytest.mark.parametrize(
  "name, bound",
  [
    ("e4m3", 2.0**-4),  # 3 fraction bits: half a spacing is <= 2^-4 of the magnitude.
    ("e5m2", 2.0**-3),  # 2 fraction bits.
  ],
)
@pytest.mark.parametrize("block", [None, (1, 16)])
def test_fp8_relative_error_bound_in_normal_range(name, bound, block):
  dtype, grid = FP8_GRIDS[name]
  x = _wide_range(2, (32, 64)).astype(np.float64)
  q = formats.quantize_fp8(x, dtype, block)
  scaled = np.abs(x) / expand(_f64(q.scale), x.shape)
  normal = scaled >= 2.0 ** grid[1]
  assert normal.mean() > 0.5
  err = np.abs(_f64(formats.dequantize(q)) - x)
  # The float32 product code * scale adds at most 2^-24 relative.
  assert np.all(err[normal] <= bound * (1 + 2.0**-20) * np.abs(x[normal]))


@pytest.mark.parametrize("name", sorted(FP8_GRIDS))
@pytest.mark.parametrize("block", [None, (4, 8)])
def test_fp8_amax_maps_to_format_max(name, block):
  dtype, grid = FP8_GRIDS[name]
  x = _wide_range(3, (8, 16))
  q = formats.quantize_fp8(x, dtype, block)
  codes = np.abs(_f64(q.values))
  assert np.isfinite(codes).all()
  blocks = (1, 1) if block is None else block
  amax_codes = codes.max() if block is None else block_amax(codes, blocks)
  np.testing.assert_array_equal(amax_codes, grid[2])


def test_e4m3_at_and_beyond_448_is_finite():
  # 448 itself is e4m3fn's largest value: scale 1, code 448, no NaN.
  x = np.array([[448.0, -448.0, 1.0, 0.0]], np.float32)
  q = formats.quantize_fp8(x)
  np.testing.assert_array_equal(_f64(q.scale), 1.0)
  np.testing.assert_array_equal(_f64(q.values), x)
  # A plain cast of 480 is NaN; scaling keeps every code finite whatever the magnitude.
  assert np.isnan(np.float64(jnp.asarray(480.0).astype(formats.FP8_E4M3)))
  big = np.array([[480.0, 1e6, -3e7, 2.0]], np.float32)
  for dtype in (formats.FP8_E4M3, formats.FP8_E5M2):
    assert np.isfinite(_f64(formats.quantize_fp8(big, dtype).values)).all()


@pytest.mark.parametrize("block", [None, (2, 4)])
def test_fp8_zeros(block):
  x = np.zeros((4, 8), np.float32)
  x_some = _wide_range(4, (4, 8))
  x_some[:2, :4] = 0.0  # a whole zero block when block == (2, 4), scattered zeros otherwise
  x_some[3, 7] = 0.0
  for arr in (x, x_some):
    q = formats.quantize_fp8(arr, block=block)
    deq = _f64(formats.dequantize(q))
    assert np.isfinite(_f64(q.scale)).all() and np.all(_f64(q.scale) > 0)
    np.testing.assert_array_equal(deq[arr == 0], 0.0)
  np.testing.assert_array_equal(_f64(formats.quantize_fp8(x, block=block).scale), 1.0)


def test_fake_quantize_keeps_dtype_and_equals_dequantize():
  x = _wide_range(5, (8, 32))
  for block in (None, (1, 16)):
    fq = formats.fake_quantize_fp8(x, block=block)
    assert fq.dtype == jnp.float32
    np.testing.assert_array_equal(fq, formats.dequantize(formats.quantize_fp8(x, block=block)))
  xb = jnp.asarray(x, jnp.bfloat16)
  fq = formats.fake_quantize_fp8(xb, formats.FP8_E5M2)
  assert fq.dtype == jnp.bfloat16
  ref = formats.dequantize(formats.quantize_fp8(xb, formats.FP8_E5M2)).astype(jnp.bfloat16)
  np.testing.assert_array_equal(fq, ref)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), power=st.integers(-20, 20))
def test_fp8_sign_symmetry_and_power_of_two_scaling(seed, power):
  """quantize(-x) = -quantize(x); quantize(2^p x) has the same codes and 2^p times the scale."""
  x = _wide_range(seed, (4, 16))
  q = formats.quantize_fp8(x, block=(1, 8))
  neg = formats.quantize_fp8(-x, block=(1, 8))
  np.testing.assert_array_equal(_f64(neg.values), -_f64(q.values))
  np.testing.assert_array_equal(_f64(neg.scale), _f64(q.scale))
  # Multiplying by 2^p is exact in float32 for these magnitudes, and so is every later step.
  scaled = formats.quantize_fp8(np.ldexp(x, power), block=(1, 8))
  np.testing.assert_array_equal(_f64(scaled.values), _f64(q.values))
  np.testing.assert_array_equal(_f64(scaled.scale), np.ldexp(_f64(q.scale), power))


# ---------------------------------------------------------------------------------------------
# NVFP4.
# ---------------------------------------------------------------------------------------------


def _half_spacing_e2m1(magnitude):
  """Half the e2m1 grid spacing around |y|: grid {0, .5, 1, 1.5, 2, 3, 4, 6}.

  Spacing 0.5 on [0, 2], 1 on (2, 4], 2 on (4, 6]; above 6 the value saturates to 6, and the
  error 6.4 - 6 = 0.4 still fits under the last half-spacing 1 (see the NVFP4 bound test).
  """
  return np.where(magnitude <= 2, 0.25, np.where(magnitude <= 4, 0.5, 1.0))


@pytest.mark.parametrize("axis, shape", [(0, (64, 24)), (1, (24, 64)), (0, (8, 4))])
def test_nvfp4_matches_reference(axis, shape):
  w = _wide_range(6, shape) * np.float32(0.3)
  q = formats.quantize_nvfp4(w, axis=axis)
  codes, block_scales, tensor_scale, deq = reference_nvfp4(w, axis=axis)
  assert q.values.dtype == formats.FP4_E2M1 and q.values.shape == w.shape
  assert q.block_scales.dtype == formats.FP8_E4M3 and q.block_scales.shape == block_scales.shape
  assert q.tensor_scale.dtype == jnp.float32 and q.tensor_scale.shape == ()
  np.testing.assert_array_equal(_f64(q.tensor_scale), tensor_scale)
  np.testing.assert_array_equal(_f64(q.block_scales), block_scales)
  np.testing.assert_array_equal(_f64(q.values), codes)
  np.testing.assert_array_equal(_f64(formats.dequantize_nvfp4(q)), deq)


def test_nvfp4_layout_and_grid():
  w = np.random.default_rng(7).normal(size=(64, 8)).astype(np.float32)
  q = formats.quantize_nvfp4(w)
  assert q.block_scales.shape == (4, 8)  # 64 / 16 blocks along axis 0
  assert set(np.abs(_f64(q.values)).ravel()) <= {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}
  # The tensor amax maps to 6 * 448: its block scale is exactly 448 and its code 6.
  i, j = np.unravel_index(np.argmax(np.abs(w)), w.shape)
  assert _f64(q.block_scales)[i // 16, j] == 448.0
  assert abs(_f64(q.values)[i, j]) == 6.0
  np.testing.assert_allclose(_f64(q.tensor_scale), np.abs(w).max() / (6 * 448), rtol=2.0**-23)


def test_nvfp4_error_bound():
  """|w - deq| <= h(|w / s|) * s, s = block_scale * tensor_scale, h = half the e2m1 spacing.

  Rounding to the nearest grid point errs by at most half the local spacing. The block amax
  would map to exactly 6 if the block scale were exact; e4m3 rounds it by at most 2^-4
  relative, so |w / s| <= 6 / (1 - 2^-4) = 6.4, and saturating to 6 errs by <= 0.4 s < 1 * s.
  This holds while block scales are e4m3 normals (>= 2^-6), true for the data here.
  """
  rng = np.random.default_rng(8)
  # 8 x 16 blocks (16 rows along axis 0 each) of very different magnitudes.
  magnitude = np.exp(rng.normal(size=(8, 1, 16)))
  w = (rng.normal(size=(8, 16, 16)) * magnitude).reshape(128, 16).astype(np.float32)
  q = formats.quantize_nvfp4(w)
  step = expand(_f64(q.block_scales) * _f64(q.tensor_scale), w.shape)
  assert np.all(_f64(q.block_scales) >= 2.0**-6)
  y = np.abs(w / step)
  assert y.max() <= 6.4
  err = np.abs(_f64(formats.dequantize_nvfp4(q)) - w)
  assert np.all(err <= _half_spacing_e2m1(y) * step * (1 + 2.0**-20))


def test_nvfp4_zeros():
  w = np.random.default_rng(9).normal(size=(32, 4)).astype(np.float32)
  w[:16, 1] = 0.0  # one all-zero block
  w[20, 2] = 0.0
  q = formats.quantize_nvfp4(w)
  deq = _f64(formats.dequantize_nvfp4(q))
  np.testing.assert_array_equal(deq[w == 0], 0.0)
  assert _f64(q.block_scales)[0, 1] == 0.0
  zero = formats.quantize_nvfp4(np.zeros((16, 4), np.float32))
  assert float(zero.tensor_scale) == 1.0
  np.testing.assert_array_equal(_f64(formats.dequantize_nvfp4(zero)), 0.0)


# ---------------------------------------------------------------------------------------------
# int4.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "axis, group, shape", [(0, 128, (256, 8)), (0, 16, (64, 8)), (1, 128, (8, 64)), (0, 128, (12, 4))]
)
def test_int4_matches_reference_and_bound(axis, group, shape):
  w = _wide_range(10, shape)
  q = formats.quantize_int4(w, axis=axis, group=group)
  codes, scale, deq = reference_int4(w, axis=axis, group=group)
  assert q.values.dtype == jnp.int4 and q.scale.dtype == jnp.float32
  assert q.scale.shape == scale.shape
  np.testing.assert_array_equal(_f64(q.scale), scale)
  np.testing.assert_array_equal(_f64(q.values), codes)
  out = _f64(formats.dequantize_int4(q))
  np.testing.assert_array_equal(out, deq)
  # Symmetric codes: -8 is never used; each group's amax maps to ±7 exactly.
  assert np.abs(codes).max() == 7 and codes.min() >= -7
  blocks = tuple(min(group, n) if d == axis else 1 for d, n in enumerate(shape))
  np.testing.assert_array_equal(block_amax(codes, blocks), 7.0)
  # Rounding to the nearest integer multiple of the scale: error <= scale / 2.
  assert np.all(np.abs(out - w) <= expand(scale, shape) * (0.5 + 2.0**-20))


def test_int4_zeros():
  w = np.zeros((16, 4), np.float32)
  w[:, 0] = np.arange(16) - 8.0
  q = formats.quantize_int4(w)
  np.testing.assert_array_equal(_f64(q.scale), [[f32_scale(8.0, 7.0), 1.0, 1.0, 1.0]])
  out = _f64(formats.dequantize_int4(q))
  np.testing.assert_array_equal(out[w == 0], 0.0)
  np.testing.assert_array_equal(out[:, 1:], 0.0)


# ---------------------------------------------------------------------------------------------
# Shared behaviour.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "fn, kwargs, shape",
  [
    (formats.quantize_fp8, dict(block=(3, 8)), (8, 32)),
    (formats.quantize_fp8, dict(block=(8, 24)), (8, 32)),
    (formats.quantize_fp8, dict(block=(1, 8)), (32,)),
    (formats.quantize_nvfp4, dict(), (24, 8)),
    (formats.quantize_nvfp4, dict(axis=1), (8, 24)),
    (formats.quantize_int4, dict(), (192, 8)),
    (formats.quantize_int4, dict(group=8), (20, 8)),
  ],
)
def test_bad_blocks_raise_naming_the_shape(fn, kwargs, shape):
  with pytest.raises(ValueError, match=re.escape(f"shape {shape}")):
    fn(np.ones(shape, np.float32), **kwargs)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="float8_e4m3fn or float8_e5m2"):
    formats.quantize_fp8(np.ones((4, 4), np.float32), jnp.bfloat16)
  with pytest.raises(ValueError, match="axis 2"):
    formats.quantize_int4(np.ones((4, 4), np.float32), axis=2)
  with pytest.raises(ValueError, match="fmt"):
    formats.quantize_weight(np.ones((4, 4), np.float32), "fp6")
  q = formats.quantize_fp8(np.ones((4, 4), np.float32), block=(2, 2))
  with pytest.raises(ValueError, match="does not tile"):
    formats.dequantize(formats.Quantized(q.values, q.scale[:, :1].repeat(3, 1)))


@pytest.mark.parametrize(
  "fn",
  [
    functools.partial(formats.quantize_fp8, dtype=formats.FP8_E4M3),
    functools.partial(formats.quantize_fp8, dtype=formats.FP8_E5M2, block=(1, 16)),
    formats.quantize_nvfp4,
  ],
)
def test_jit_matches_eager(fn):
  """Bit-identical op by op and compiled (XLA rewrites constant divisions when compiling)."""
  w = _wide_range(11, (32, 16))
  with jax.disable_jit():
    eager = fn(w)
  jitted = jax.jit(fn)(w)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(_f64(a), _f64(b))
  deq = jax.jit(formats.dequantize_weight)(jitted)
  np.testing.assert_array_equal(deq, formats.dequantize_weight(eager))


@pytest.mark.parametrize("fmt, rel", [("fp8", 2.0**-4), ("nvfp4", 0.25), ("int4", 0.25)])
def test_quantize_weight_round_trip(fmt, rel):
  """Relative Frobenius error of a Gaussian kernel; fp8 <= its per-element bound, 4-bit ~10%."""
  w = np.random.default_rng(12).normal(size=(256, 32)).astype(np.float32)
  q = formats.quantize_weight(w, fmt)
  out = formats.dequantize_weight(q, jnp.bfloat16)
  assert out.dtype == jnp.bfloat16 and out.shape == w.shape
  err = np.linalg.norm(_f64(out) - w) / np.linalg.norm(w)
  assert err <= rel
