"""Sampling methods against their distributions, with fixed seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.sampling import methods

# Chi-square critical values at significance 0.001 (degrees of freedom -> value).
CHI2_CRIT_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def _chi_square(counts, probs):
  expected = counts.sum() * probs
  keep = probs > 0
  assert counts[~keep].sum() == 0, "sampled a token outside the kept set"
  return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum()) - 1


LOGITS = np.array([1.2, 0.3, -0.5, 2.0, 0.0, -1.5, 0.8, 1.9], np.float64)


def _reference_probs(params: methods.SamplingParams) -> np.ndarray:
  """The truncated, tempered distribution, from the definitions (float64)."""
  x = LOGITS / params.temperature
  keep = np.ones_like(x, bool)
  if params.top_k is not None:
    keep &= x >= np.sort(x)[::-1][params.top_k - 1]
  p = np.exp(x - x.max()) * keep
  p /= p.sum()
  if params.top_p < 1:
    order = np.argsort(-p)
    before = np.cumsum(p[order]) - p[order]
    nucleus = np.zeros_like(keep)
    nucleus[order[before < params.top_p]] = True
    keep &= nucleus
  p = np.exp(x - x.max()) * keep
  p /= p.sum()
  if params.min_p > 0:
    keep &= p >= params.min_p * p.max()
  p = np.exp(x - x.max()) * keep
  return p / p.sum()


@pytest.mark.parametrize(
  "params",
  [
    methods.SamplingParams(temperature=1.0),
    methods.SamplingParams(temperature=0.7),
    methods.SamplingParams(temperature=1.0, top_k=4),
    methods.SamplingParams(temperature=1.0, top_p=0.7),
    methods.SamplingParams(temperature=2.0, min_p=0.3),
  ],
)
def test_samples_follow_the_distribution(params):
  draws = 20_000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS, jnp.float32), (draws, LOGITS.size))
  tokens, samp_lp, pol_lp = jax.jit(methods.sample_token, static_argnums=2)(
    logits, jax.random.key(0), params
  )
  probs = _reference_probs(params)
  counts = np.bincount(np.asarray(tokens), minlength=LOGITS.size)
  stat, dof = _chi_square(counts, probs)
  print(f"{params}: chi2 = {stat:.2f} with {dof} dof")
  assert stat < CHI2_CRIT_001[dof]
  tok = np.asarray(tokens)
  np.testing.assert_allclose(np.asarray(samp_lp), np.log(probs[tok]), atol=1e-5)
  policy = LOGITS - np.log(np.exp(LOGITS).sum())
  np.testing.assert_allclose(np.asarray(pol_lp), policy[tok], atol=1e-5)


def test_greedy_is_argmax_with_zero_sampling_logprob():
  logits = jnp.asarray(np.random.RandomState(0).randn(6, 11), jnp.float32)
  tokens, samp_lp, _ = methods.sample_token(
    logits, jax.random.key(0), methods.SamplingParams(temperature=0.0)
  )
  np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))
  assert np.all(np.asarray(samp_lp) == 0)
