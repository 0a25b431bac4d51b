"""Tests for grpojax/precision/matmul.py: the FP8 GEMM and its custom VJP, against float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.precision import formats, matmul
from tests.precision.test_formats import E4M3, E5M2, reference_fp8

M, K, N = 8, 64, 16
U32 = 2.0**-24  # float32 unit roundoff


def _inputs(seed, m=M, k=K, n=N):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(m, k)).astype(np.float32)
  w = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
  return x, w


def _assert_f32_dot_close(actual, a, b):
  """actual ≈ a @ b (float64 operands), within float32 accumulation of K products.

  A float32 dot of K terms errs by at most γ_K (|a| @ |b|), γ_K = K u / (1 - K u) (Higham,
  Theorem 3.5), u = 2^-24. Forming the operands (code * scale) or applying the scales after
  the dot (scale product, final multiply) adds a few more roundings: γ_(K+3) covers them.
  """
  k = a.shape[1] + 3
  gamma = k * U32 / (1 - k * U32)
  exact = a @ b
  bound = gamma * (np.abs(a) @ np.abs(b))
  err = np.abs(np.asarray(actual, np.float64) - exact)
  assert np.all(err <= bound), f"max excess {np.max(err - bound):.3g}"


def _fake(a, grid, block=None):
  return reference_fp8(a, grid, block)[2]


BLOCKS = [(None, None), ((1, 32), (32, 8)), ((1, 128), (128, 128))]


@pytest.mark.parametrize("x_block, w_block", BLOCKS)
def test_forward_matches_reference(x_block, w_block):
  x, w = _inputs(0)
  y = matmul.fp8_matmul(x, w, x_block=x_block, w_block=w_block)
  assert y.dtype == jnp.float32 and y.shape == (M, N)
  _assert_f32_dot_close(y, _fake(x, E4M3, x_block), _fake(w, E4M3, w_block))


@pytest.mark.parametrize("x_block, w_block", BLOCKS)
def test_gradients_match_reference(x_block, w_block):
  """dx = ĝ ŵᵀ and dw = x̂ᵀ ĝ, with ĝ = q_e5m2(dy) per tensor and the forward's x̂, ŵ."""
  x, w = _inputs(1)
  dy = np.random.default_rng(2).normal(size=(M, N)).astype(np.float32)
  _, vjp = jax.vjp(lambda a, b: matmul.fp8_matmul(a, b, x_block=x_block, w_block=w_block), x, w)
  dx, dw = vjp(jnp.asarray(dy))
  g = _fake(dy, E5M2)
  x_hat, w_hat = _fake(x, E4M3, x_block), _fake(w, E4M3, w_block)
  assert dx.dtype == jnp.float32 and dw.dtype == jnp.float32
  _assert_f32_dot_close(dx, g, w_hat.T)
  _assert_f32_dot_close(dw, x_hat.T, g)


def test_jit_grad():
  x, w = _inputs(3)
  dy = np.random.default_rng(4).normal(size=(M, N)).astype(np.float32)

  def loss(a, b):
    return jnp.sum(matmul.fp8_matmul(a, b, x_block=(1, 32)) * dy)

  dx, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
  ref_dx, ref_dw = jax.vjp(lambda a, b: matmul.fp8_matmul(a, b, x_block=(1, 32)), x, w)[1](dy)
  np.testing.assert_allclose(dx, ref_dx, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dw, ref_dw, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
    jax.jit(loss)(x, w),
    np.sum(np.asarray(matmul.fp8_matmul(x, w, x_block=(1, 32))) * dy),
    rtol=1e-5,
  )


def test_close_to_unquantised_product():
  """|x̂ŵ - xw| <= Ex (|w| + Ew) + |x| Ew elementwise, from x̂ŵ - xw = (x̂ - x)ŵ + x(ŵ - w).

  Per element, e4m3 rounding errs by at most 2^-4 |v| in the normal range and by half the
  subnormal spacing, 2^-10 s, below it: Ev = 2^-4 |v| + 2^-10 s (s the operand's scale).
  Gaussian operands also give a normwise relative error below 2^-4.
  """
  x, w = _inputs(5, m=16, k=128, n=32)
  y = np.asarray(matmul.fp8_matmul(x, w), np.float64)
  x64, w64 = x.astype(np.float64), w.astype(np.float64)
  s_x = float(formats.quantize_fp8(x).scale)
  s_w = float(formats.quantize_fp8(w).scale)
  e_x = 2.0**-4 * np.abs(x64) + 2.0**-10 * s_x
  e_w = 2.0**-4 * np.abs(w64) + 2.0**-10 * s_w
  exact = x64 @ w64
  bound = e_x @ (np.abs(w64) + e_w) + np.abs(x64) @ e_w
  bound += 2 * 128 * U32 * (np.abs(x64) + e_x) @ (np.abs(w64) + e_w)  # float32 accumulation
  assert np.all(np.abs(y - exact) <= bound)
  assert np.linalg.norm(y - exact) <= 2.0**-4 * np.linalg.norm(exact)


def test_block_scaling_beats_per_tensor_with_an_outlier():
  """One huge weight inflates the per-tensor scale and pushes every other weight into e4m3's
  subnormal range (or to 0); (128, 128) blocks confine that to the outlier's own block, and
  (1, 128) groups do the same for an activation outlier.

  Errors are measured relative to |x| @ |w|, the natural size of each output's rounding error
  (an outlier's own rounding error, 2^-4 of 1e5, is unavoidable in both schemes).
  """
  x, w = _inputs(6, m=8, k=512, n=256)
  w[3, 5] = 1e5
  x[2, 300] = 1e4
  x64, w64 = x.astype(np.float64), w.astype(np.float64)
  exact, size = x64 @ w64, np.abs(x64) @ np.abs(w64)

  def error(**blocks):
    return np.abs(np.asarray(matmul.fp8_matmul(x, w, **blocks), np.float64) - exact)

  per_tensor = error()
  per_block = error(x_block=(1, 128), w_block=(128, 128))
  assert np.mean(per_block / size) <= np.mean(per_tensor / size)
  assert np.mean(per_block / size) <= 0.2 * np.mean(per_tensor / size)  # in fact ~0.1
  # Columns 128.. only meet outlier-free weight blocks: plain e4m3 accuracy there.
  far = np.s_[:, 128:]
  assert np.linalg.norm(per_block[far]) <= 2.0**-4 * np.linalg.norm(exact[far])
  assert np.linalg.norm(per_tensor[far]) > 0.5 * np.linalg.norm(exact[far])


def test_dtypes():
  x, w = _inputs(7)
  xb = jnp.asarray(x, jnp.bfloat16)
  y, vjp = jax.vjp(matmul.fp8_matmul, xb, w)
  assert y.dtype == jnp.bfloat16
  dx, dw = vjp(jnp.ones_like(y))
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
  y32 = matmul.fp8_matmul(xb, w, out_dtype=jnp.float32)
  assert y32.dtype == jnp.float32
  np.testing.assert_array_equal(y32.astype(jnp.bfloat16), y)


def test_bad_shapes_raise():
  x, w = _inputs(8)
  with pytest.raises(ValueError, match=r"\(8, 64\) and \(16, 64\)"):
    matmul.fp8_matmul(x, w.T)
  with pytest.raises(ValueError, match="x \\[M, K\\]"):
    matmul.fp8_matmul(x[None], w)
  with pytest.raises(ValueError, match=r"shape \(8, 64\)"):
    matmul.fp8_matmul(x, w, x_block=(3, 64))
  with pytest.raises(ValueError, match="floating"):
    matmul.fp8_matmul(x.astype(np.int32), w)


def test_per_tensor_products_are_fp8_dots_with_epilogue_scales():
  """Per-tensor: dot of the FP8 codes (the cuBLASLt FP8 GEMM on Hopper), then s_a * s_b."""
  x, w = _inputs(9)
  dy = np.random.default_rng(10).normal(size=(M, N)).astype(np.float32)
  xq, wq = formats.quantize_fp8(x), formats.quantize_fp8(w)
  gq = formats.quantize_fp8(dy, formats.FP8_E5M2)

  def by_hand(a, b, dims):
    codes = jax.lax.dot_general(a.values, b.values, dims, preferred_element_type=jnp.float32)
    return codes * (a.scale * b.scale)

  y, vjp = jax.vjp(matmul.fp8_matmul, x, w)
  dx, dw = vjp(jnp.asarray(dy))
  np.testing.assert_array_equal(y, by_hand(xq, wq, (((1,), (0,)), ((), ()))))
  np.testing.assert_array_equal(dx, by_hand(gq, wq, (((1,), (1,)), ((), ()))))
  np.testing.assert_array_equal(dw, by_hand(xq, gq, (((0,), (0,)), ((), ()))))


def test_block_scaled_gradients_with_several_blocks_along_the_free_axis():
  """w [256, 128] in 128x128 blocks: two scales along w's free axis in dx = q(dy) @ ŵᵀ, which
  factor out of the sum only when expanded to one entry per row of w."""
  rs = np.random.RandomState(7)
  x = jnp.asarray(rs.randn(4, 256), jnp.float32)
  w = jnp.asarray(rs.randn(256, 128) * np.repeat([[1.0], [30.0]], 128, 0), jnp.float32)
  dy = jnp.asarray(rs.randn(4, 128), jnp.float32)
  _, vjp = jax.vjp(lambda a, b: matmul.fp8_matmul(a, b, x_block=(1, 128), w_block=(128, 128)), x, w)
  dx, dw = vjp(dy)
  g = np.asarray(formats.dequantize(formats.quantize_fp8(dy, formats.FP8_E5M2)), np.float64)
  w_hat = np.asarray(formats.fake_quantize_fp8(w, formats.FP8_E4M3, (128, 128)), np.float64)
  x_hat = np.asarray(formats.fake_quantize_fp8(x, formats.FP8_E4M3, (1, 128)), np.float64)
  np.testing.assert_allclose(np.asarray(dx), g @ w_hat.T, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dw), x_hat.T @ g, rtol=1e-5, atol=1e-4)
