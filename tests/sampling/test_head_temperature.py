"""Tests for grpojax/sampling/head_temperature.py and head-driven decoding: the recorded
temperatures and their log-densities against a float64 NumPy Beta density of a teacher-forced
forward's head outputs, and the token log-probs at those temperatures against the full logits."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, sampling, types
from grpojax.models import transformer

CFG = models.ModelConfig(
  model_type="qwen2",
  vocab_size=37,
  hidden_size=16,
  intermediate_size=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  attention_bias=True,
)
PROMPTS = [[5, 17, 33, 9, 31], [30, 3, 8, 12, 36, 11, 25, 23]]
TP, G, N = 8, 3, 6
# Range ends exact in float32, so float32 and float64 see the same τ_min and τ_max.
METHOD = sampling.HeadTemperature(tau_min=0.5, tau_max=1.75, concentration=6.0)
TOL = dict(rtol=1e-5, atol=1e-5)


def _np_log_density(z, tau, *, tau_min, tau_max, concentration):
  """float64 log p(τ | z) of τ = τ_min + (τ_max − τ_min)·u, u ~ Beta(1 + κm, 1 + κ(1 − m))."""
  z, tau = np.asarray(z, np.float64), np.asarray(tau, np.float64)
  m = 1.0 / (1.0 + np.exp(-z))
  a, b = 1.0 + concentration * m, 1.0 + concentration * (1.0 - m)
  u = (tau - tau_min) / (tau_max - tau_min)
  log_beta = np.vectorize(lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y))(a, b)
  return (a - 1) * np.log(u) + (b - 1) * np.log1p(-u) - log_beta - np.log(tau_max - tau_min)


def _settings(method):
  return dict(tau_min=method.tau_min, tau_max=method.tau_max, concentration=method.concentration)


def test_log_prob_is_the_float64_beta_density():
  rng = np.random.RandomState(0)
  z = rng.normal(0.0, 2.0, (4, 7)).astype(np.float32)
  tau = rng.uniform(0.55, 1.7, (4, 7)).astype(np.float32)
  got = jax.jit(METHOD.log_prob)(z, tau)
  np.testing.assert_allclose(got, _np_log_density(z, tau, **_settings(METHOD)), **TOL)
  # A density on [τ_min, τ_max]: it integrates to 1 (midpoint rule on a fine grid).
  grid = np.linspace(0.5, 1.75, 20001)
  mid = (grid[1:] + grid[:-1]) / 2
  dens = np.exp(_np_log_density(np.full_like(mid, 0.8), mid, **_settings(METHOD)))
  assert abs(np.sum(dens * np.diff(grid)) - 1.0) < 1e-6
  got = np.exp(np.asarray(jax.jit(METHOD.log_prob)(jnp.full(mid.shape, 0.8), mid), np.float64))
  assert abs(np.sum(got * np.diff(grid)) - 1.0) < 1e-5


def test_draws_follow_the_head_and_stay_in_range():
  # m = sigmoid(z): z = -3 puts the mode near τ_min, z = 3 near τ_max; E[u] = a / (a + b).
  z = jnp.repeat(jnp.asarray([-3.0, 0.0, 3.0]), 4000)
  tau, logp = jax.jit(METHOD.draw)(z, jax.random.key(0))
  tau = np.asarray(tau).reshape(3, -1)
  assert tau.min() >= METHOD.tau_min and tau.max() <= METHOD.tau_max
  m = 1 / (1 + np.exp(-np.asarray([-3.0, 0.0, 3.0])))
  a, b = 1 + 6.0 * m, 1 + 6.0 * (1 - m)
  want_mean = 0.5 + 1.25 * a / (a + b)
  # Standard error of a mean of 4000 draws is below 0.005 here.
  np.testing.assert_allclose(tau.mean(axis=1), want_mean, atol=0.02)
  np.testing.assert_allclose(METHOD.mean_temperature(jnp.asarray([-3.0, 0.0, 3.0])), want_mean)
  np.testing.assert_allclose(logp, _np_log_density(z, tau.reshape(-1), **_settings(METHOD)), **TOL)


def test_bad_settings_name_the_field():
  with pytest.raises(ValueError, match="tau_min"):
    sampling.HeadTemperature(tau_min=1.0, tau_max=0.5)
  with pytest.raises(ValueError, match="concentration"):
    sampling.HeadTemperature(concentration=0.0)
  with pytest.raises(ValueError, match="top_p"):
    sampling.HeadTemperature(top_p=0.0)


def _policy(heads=True):
  model = models.init_policy(CFG, seed=0, heads=models.HeadsConfig(temperature=heads))
  graphdef, params = nnx.split(model)

  def scale(path, x):
    # Larger weights: peaked token distributions and head outputs spread over several units.
    return (
      4.0 * x if "heads" in types.path_to_str(path) or "embed" in types.path_to_str(path) else x
    )

  return graphdef, jax.tree_util.tree_map_with_path(scale, params)


@functools.partial(jax.jit, static_argnums=0)
def _full_forward(graphdef, params, tokens, mask):
  model = nnx.merge(graphdef, params)
  return model(
    tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
  )


def test_decode_records_each_temperature_and_its_density_under_the_head():
  graphdef, params = _policy()
  tokens, mask = sampling.pad_prompts(PROMPTS, pad_id=0, bucket=TP)
  st = sampling.prefill(
    graphdef,
    params,
    jnp.asarray(tokens),
    jnp.asarray(mask),
    jax.random.key(3),
    num_samples=G,
    max_new_tokens=N,
    pad_id=0,
  )
  st = sampling.decode(graphdef, params, st, method=METHOD, stop_ids=(4,), pad_id=0)
  comp = sampling.completions(st)
  sampled = np.asarray(comp.mask) > 0
  tau = np.asarray(comp.temperature)
  assert sampled.sum() > 10 and np.all(tau[sampled] >= 0.5) and np.all(tau[sampled] <= 1.75)
  assert np.std(tau[sampled]) > 0.05  # a temperature per token, not one per run
  np.testing.assert_array_equal(np.asarray(comp.temperature_logprobs)[~sampled], 0.0)

  # Teacher-forced forward of the full rows: the head's output on the hidden state that
  # predicts completion token t, the full logits at the same positions.
  full_tokens = jnp.concatenate([comp.prompt_tokens, comp.tokens], axis=1)
  full_mask = jnp.concatenate([comp.prompt_mask, comp.token_mask], axis=1)
  out = _full_forward(graphdef, params, full_tokens, full_mask)
  model = nnx.merge(graphdef, params)
  z = np.asarray(model.heads.temperature(out.hidden[:, TP - 1 : -1]), np.float64)
  want = _np_log_density(z, np.where(sampled, tau, 1.0), **_settings(METHOD))
  np.testing.assert_allclose(np.asarray(comp.temperature_logprobs)[sampled], want[sampled], **TOL)

  # The trainer scores each token at its own temperature: equal to the teacher-forced full
  # logits divided by that temperature (float64), and to the sampler's own log-probs.
  seqs = types.Sequences(
    tokens=full_tokens,
    attn_mask=full_mask,
    completion_mask=comp.mask,
    temperature=comp.temperature,
  )
  scored = jax.jit(models.split_and_score, static_argnums=0)(graphdef, params, seqs)
  logits = (
    np.asarray(out.logits, np.float64)[:, TP - 1 : -1] / np.where(sampled, tau, 1.0)[..., None]
  )
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  want_lp = np.take_along_axis(logp, np.asarray(comp.tokens)[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(scored.logprobs)[sampled], want_lp[sampled], **TOL)
  np.testing.assert_allclose(np.asarray(comp.sampling_logprobs)[sampled], want_lp[sampled], **TOL)
  # The head's outputs reach the trainer too: its log-densities are the sampler's.
  np.testing.assert_allclose(
    np.asarray(METHOD.log_prob(scored.temperature, comp.temperature))[sampled],
    want[sampled],
    **TOL,
  )


def test_head_temperature_needs_a_temperature_head():
  graphdef, params = _policy(heads=False)
  tokens, mask = sampling.pad_prompts(PROMPTS, pad_id=0, bucket=TP)
  st = sampling.prefill(
    graphdef,
    params,
    jnp.asarray(tokens),
    jnp.asarray(mask),
    jax.random.key(0),
    num_samples=1,
    max_new_tokens=N,
    pad_id=0,
  )
  with pytest.raises(ValueError, match="temperature head"):
    sampling.decode(graphdef, params, st, method=METHOD, stop_ids=(), pad_id=0)
