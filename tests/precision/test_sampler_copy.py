"""The sampler's copy of a policy (`precision.sampler_policy`, `precision.sampler_params`,
`models.policy_graphdef`) on a real model: bit-identical rollouts from the compact copies,
unified vs naive FP8, and AQN noise on the copy only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, precision
from tests.precision import decode


def _sampler(model, matmul="same"):
  """(graphdef, params) of the sampler's copy of `model`."""
  policy = precision.sampler_policy(model.precision, matmul=matmul)
  params = precision.sampler_params(nnx.state(model), policy, compute_dtype=model.dtype)
  return models.policy_graphdef(model, policy), params


def _sample(graphdef, params, key=2):
  prompt, mask = decode.prompts()
  return decode.sample(graphdef, params, prompt, mask, jax.random.key(key))


@pytest.mark.parametrize("matmul", ["fp8", "fp8_block"])
def test_unified_fp8_sampler_and_trainer_agree_naive_does_not(matmul):
  prompt, mask = decode.prompts()
  unified = models.init_policy(
    decode.CFG, seed=0, precision=precision.PrecisionPolicy(matmul=matmul)
  )
  tokens, sampler_lp = _sample(*_sampler(unified), key=0)
  seqs = decode.sequences(prompt, mask, tokens)
  trainer_lp = decode.trainer_logprobs(*nnx.split(unified), seqs)
  unified_gap = np.abs(np.asarray(trainer_lp - sampler_lp)).max()
  assert unified_gap < 1e-5, unified_gap  # the same graph: only float32 reassociation
  # Naive: FP8 rollouts of a higher-precision trainer, same weights.
  trainer = models.init_policy(decode.CFG, seed=0)
  tokens, sampler_lp = _sample(*_sampler(trainer, matmul=matmul), key=0)
  seqs = decode.sequences(prompt, mask, tokens)
  naive_gap = np.abs(np.asarray(decode.trainer_logprobs(*nnx.split(trainer), seqs) - sampler_lp))
  assert naive_gap.mean() > 1e-4, naive_gap.mean()
  assert naive_gap.mean() > 100 * unified_gap


def test_bf16_sampler_copy_samples_bit_identically_at_half_the_memory():
  model = models.init_policy(decode.CFG, seed=0, dtype=jnp.bfloat16)
  graphdef, params = nnx.split(model)
  sample_graphdef, copy = _sampler(model)
  assert sample_graphdef == graphdef  # the same graph, over parameters stored in bf16
  assert decode.nbytes(copy) * 2 == decode.nbytes(params)
  a, b = _sample(graphdef, params), _sample(sample_graphdef, copy)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
  # A float32 head needs the full-precision copy.
  f32_head = dataclasses.replace(model.precision, lm_head_f32=True)
  assert precision.sampler_copy_dtype(f32_head, jnp.bfloat16) is None
  assert precision.sampler_params(params, f32_head, compute_dtype=jnp.bfloat16) is params


@pytest.mark.parametrize("matmul", ["fp8", "fp8_block"])
def test_prequantised_fp8_sampler_copy_samples_bit_identically(matmul):
  """The sampler's copy stores FP8 kernels quantised once (one byte per weight) and samples
  exactly what the trainer's parameters sample, in bf16 compute."""
  policy = precision.PrecisionPolicy(matmul=matmul)
  model = models.init_policy(decode.CFG, seed=0, dtype=jnp.bfloat16, precision=policy)
  graphdef, params = nnx.split(model)
  sample_graphdef, copy = _sampler(model)
  kinds = {str(x.dtype) for x in jax.tree.leaves(copy)}
  assert "float8_e4m3fn" in kinds and "float32" in kinds  # codes; scales
  assert not any(p[-1] == "kernel" and p[0] == "layers" for p, _ in nnx.to_flat_state(copy))
  a, b = _sample(graphdef, params), _sample(sample_graphdef, copy)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
  # Converting inside jit (as a trainer does after each update) gives the same copy.
  convert = jax.jit(
    lambda p: precision.sampler_params(
      p, precision.sampler_policy(policy), compute_dtype=jnp.bfloat16
    )
  )
  for x, y in zip(jax.tree.leaves(convert(params)), jax.tree.leaves(copy), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_heads_stay_float32_in_the_bf16_sampler_copy():
  heads = models.HeadsConfig(value=True, temperature=True)
  model = models.init_policy(decode.CFG, seed=0, dtype=jnp.bfloat16, heads=heads)
  _, copy = _sampler(model)
  for path, var in nnx.to_flat_state(copy):
    want = jnp.float32 if path[0] == "heads" else jnp.bfloat16
    assert var.get_value().dtype == want, path


def test_aqn_noise_goes_to_the_sampler_copy_only():
  # 10 stages over 10 steps: step 0 is clean, step 1 has sigma_start = 1e-2.
  model = models.init_policy(decode.CFG, seed=0)
  params = nnx.state(model)
  _, copy = _sampler(model)
  clean, noisy = (
    precision.add_norm_noise(copy, jax.random.key(0), precision.aqn_sigma(step, 10))
    for step in (0, 1)
  )
  for (path, p), (_, c), (_, n) in zip(
    nnx.to_flat_state(params), nnx.to_flat_state(clean), nnx.to_flat_state(noisy), strict=True
  ):
    # Stage 0 is clean.
    np.testing.assert_array_equal(np.asarray(c.get_value()), np.asarray(p.get_value()))
    diff = np.asarray(n.get_value()) - np.asarray(p.get_value())
    if path[-2].endswith("norm"):
      assert 0.3e-2 < diff.std() < 3e-2, (path, diff.std())  # sigma_start = 1e-2
    else:
      assert not diff.any(), path
  # The trainer's own parameters stay clean.
  assert np.all(np.asarray(params["norm"]["scale"].get_value()) == 1.0)
