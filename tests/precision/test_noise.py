"""Tests for grpojax/precision/noise.py: the AQN schedule and noise on RMSNorm scales."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, types
from grpojax.precision import noise

# K = 10, σ_start = 1e-2, σ_end = 1e-4, T = 100: ten intervals of 10 steps. Interval k >= 1 has
# σ = 1e-2 · (1e-4 / 1e-2)^((k-1)/8) = 10^(-2 - (k-1)/4):
#   k:  0   1      2            3            4            5     6            7
#   σ:  0   1e-2   10^-2.25     10^-2.5      10^-2.75     1e-3  10^-3.25     10^-3.5
#          = 5.6234e-3 = 3.1623e-3 = 1.7783e-3          = 5.6234e-4 = 3.1623e-4
#   k:  8            9
#   σ:  10^-3.75     1e-4
#     = 1.7783e-4
HAND_TABLE = {
  0: 0.0,
  1: 1e-2,
  2: 5.623413251903491e-3,
  3: 3.1622776601683794e-3,
  4: 1.7782794100389228e-3,
  5: 1e-3,
  6: 5.623413251903491e-4,
  7: 3.1622776601683794e-4,
  8: 1.7782794100389228e-4,
  9: 1e-4,
}


def test_schedule_k10_over_100_steps():
  for step in range(100):
    np.testing.assert_allclose(noise.aqn_sigma(step, 100), HAND_TABLE[step // 10], rtol=1e-12)
  # Steps at and beyond the end stay in the last interval.
  for step in (100, 101, 10_000):
    np.testing.assert_allclose(noise.aqn_sigma(step, 100), 1e-4, rtol=1e-12)
  np.testing.assert_allclose(noise.aqn_schedule(), list(HAND_TABLE.values()), rtol=1e-12)


def test_schedule_boundaries_when_steps_do_not_divide():
  # T = 7, K = 10: interval floor(10 s / 7) = 0, 1, 2, 4, 5, 7, 8 for s = 0..6, and 9 at s = 7.
  stages = [0, 1, 2, 4, 5, 7, 8, 9]
  table = noise.aqn_schedule()
  assert [noise.aqn_sigma(s, 7) for s in range(8)] == [table[k] for k in stages]


def test_schedule_edge_cases():
  # K = 1: a single, noise-free interval.
  assert [noise.aqn_sigma(s, 10, num_stages=1) for s in range(12)] == [0.0] * 12
  # K = 2: steps 0-4 noise-free, then σ_start (the exponent 0/0 taken as 0).
  got = [noise.aqn_sigma(s, 10, num_stages=2, sigma_start=0.5, sigma_end=0.1) for s in range(12)]
  assert got == [0.0] * 5 + [0.5] * 7
  # K = 3, T = 9: intervals of 3 steps at 0, σ_start, σ_end.
  got = [noise.aqn_sigma(s, 9, num_stages=3, sigma_start=0.5, sigma_end=0.1) for s in range(10)]
  assert got == [0.0] * 3 + [0.5] * 3 + [0.1] * 4
  # T = 1: step 0 is the noise-free interval, step 1 is the end.
  assert noise.aqn_sigma(0, 1) == 0.0 and noise.aqn_sigma(1, 1) == pytest.approx(1e-4)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(step=-1, total_steps=10), "step"),
    (dict(step=0, total_steps=0), "total_steps"),
    (dict(step=0, total_steps=10, num_stages=0), "num_stages"),
    (dict(step=0, total_steps=10, sigma_start=0.0), "sigma_start"),
    (dict(step=0, total_steps=10, sigma_end=float("nan")), "sigma_end"),
  ],
)
def test_schedule_rejects_bad_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    noise.aqn_sigma(**kwargs)


def test_traced_schedule_matches_python():
  steps = np.arange(-3, 130)
  for total, stages in ((100, 10), (7, 10), (10, 1), (10, 2)):
    got = jax.jit(lambda s, t=total, k=stages: noise.aqn_sigma_array(s, t, num_stages=k))(steps)
    want = [noise.aqn_sigma(max(s, 0), total, num_stages=stages) for s in steps.tolist()]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Noise on the parameters.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _params():
  """The nnx.Param state of a tiny Qwen3 decoder (q/k norms included), random values.

  Shapes come from `eval_shape` and values from NumPy, which is much faster than running the
  initialisers op by op; only the paths, shapes and dtypes matter here.
  """
  cfg = models.ModelConfig(
    model_type="qwen3",
    vocab_size=37,
    hidden_size=16,
    intermediate_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
    qk_norm=True,
  )
  abstract = jax.eval_shape(lambda: nnx.split(models.Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)[1])
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), abstract)


def _by_path(tree):
  return {types.path_to_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


NORM_PATHS = {
  f"layers/{i}/{name}/scale"
  for i in range(2)
  for name in (
    "input_layernorm",
    "post_attention_layernorm",
    "self_attn/q_norm",
    "self_attn/k_norm",
  )
} | {"norm/scale"}


def test_noise_only_on_norm_scales():
  params = _params()
  noisy = noise.add_norm_noise(params, jax.random.key(0), 0.1)
  assert type(noisy) is type(params)
  assert jax.tree.structure(noisy) == jax.tree.structure(params)
  clean, out = _by_path(params), _by_path(noisy)
  assert {p for p in clean if re.search(noise.NORM_SCALE_PATTERN, p)} == NORM_PATHS
  for path, leaf in clean.items():
    if path in NORM_PATHS:
      assert out[path].dtype == leaf.dtype and out[path].shape == leaf.shape
      delta = np.asarray(out[path]) - np.asarray(leaf)
      assert np.all(delta != 0) and np.abs(delta).max() < 0.6  # 6 σ
    else:
      assert out[path] is leaf
      np.testing.assert_array_equal(out[path], leaf)
  # Independent noise per leaf.
  deltas = [np.asarray(out[p]) - np.asarray(clean[p]) for p in sorted(NORM_PATHS)]
  assert len({d[:8].tobytes() for d in deltas}) == len(deltas)


def test_noise_std_matches_sigma():
  params = {
    "norm": {"scale": jnp.ones((40_000,))},
    "layers": [{"post_norm": {"scale": jnp.ones((40_000,))}}],
  }
  for sigma in (1e-2, 1e-4):
    noisy = noise.add_norm_noise(params, jax.random.key(1), sigma)
    for delta in (noisy["norm"]["scale"] - 1.0, noisy["layers"][0]["post_norm"]["scale"] - 1.0):
      delta = np.asarray(delta, np.float64)
      # Sample std of n = 40k normals: relative standard error 1/sqrt(2n) = 0.35%; allow 2%.
      np.testing.assert_allclose(delta.std(), sigma, rtol=0.02)
      assert abs(delta.mean()) < 5 * sigma / np.sqrt(delta.size)


def test_zero_sigma_is_identity_and_noise_is_deterministic():
  params = _params()
  same = noise.add_norm_noise(params, jax.random.key(2), 0.0)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True):
    np.testing.assert_array_equal(a, b)
  a = noise.add_norm_noise(params, jax.random.key(3), 1e-2)
  b = noise.add_norm_noise(params, jax.random.key(3), 1e-2)
  c = noise.add_norm_noise(params, jax.random.key(4), 1e-2)
  np.testing.assert_array_equal(a["norm"]["scale"], b["norm"]["scale"])
  assert not np.array_equal(a["norm"]["scale"], c["norm"]["scale"])


def test_noise_under_jit_with_traced_sigma_and_bf16_leaves():
  params = {"norm": {"scale": jnp.ones((64,), jnp.bfloat16)}, "w": {"kernel": jnp.ones((4, 4))}}
  key = jax.random.key(5)
  jitted = jax.jit(noise.add_norm_noise)(params, key, jnp.float32(1e-2))
  eager = noise.add_norm_noise(params, key, 1e-2)
  assert jitted["norm"]["scale"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(jitted["norm"]["scale"], eager["norm"]["scale"])
  np.testing.assert_array_equal(jitted["w"]["kernel"], params["w"]["kernel"])
  # Noise drawn in float32 then cast: bf16(1 + bf16(ε)) with |ε| ~ 1e-2 moves the scale.
  assert np.any(np.asarray(eager["norm"]["scale"], np.float32) != 1.0)


def test_custom_pattern():
  params = _params()
  noisy = noise.add_norm_noise(params, jax.random.key(6), 0.1, pattern=r"embed_tokens/embedding$")
  clean, out = _by_path(params), _by_path(noisy)
  changed = {p for p in clean if out[p] is not clean[p]}
  assert changed == {"embed_tokens/embedding"}
