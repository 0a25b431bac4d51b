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


def _reference_probs(params: methods.Sample) -> np.ndarray:
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
    methods.Sample(temperature=1.0),
    methods.Sample(temperature=0.7),
    methods.Sample(temperature=1.0, top_k=4),
    methods.Sample(temperature=1.0, top_p=0.7),
    methods.Sample(temperature=2.0, min_p=0.3),
  ],
)
def test_samples_follow_the_distribution(params):
  draws = 20_000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS, jnp.float32), (draws, LOGITS.size))
  tokens, samp_lp, pol_lp = jax.jit(methods.sample_token)(logits, jax.random.key(0), params)
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
  tokens, samp_lp, _ = methods.sample_token(logits, jax.random.key(0), methods.Greedy())
  np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))
  assert np.all(np.asarray(samp_lp) == 0)


def test_per_row_temperatures_equal_one_scalar_per_row():
  logits = jnp.asarray(np.random.RandomState(1).randn(3, 11), jnp.float32)
  temps = [0.5, 1.0, 1.7]
  method = methods.Sample(jnp.asarray(temps), top_k=6, top_p=0.9)
  rows = jax.jit(methods.processed_logits)(logits, method)
  for i, t in enumerate(temps):
    one = methods.processed_logits(logits[i : i + 1], methods.Sample(t, top_k=6, top_p=0.9))
    np.testing.assert_array_equal(np.asarray(rows[i]), np.asarray(one[0]))


def test_per_token_temperatures_are_read_at_each_rows_index():
  t_bn = jnp.asarray([[0.5, 0.6, 0.7], [1.5, 1.6, 1.7]])
  at = methods.Sample(t_bn).at(jnp.asarray([2, 0]))
  np.testing.assert_allclose(np.asarray(at.temperature), [0.7, 1.5])
  # Past the last column (a full row that samples nothing) the last column is read.
  np.testing.assert_allclose(
    np.asarray(methods.Sample(t_bn).at(jnp.asarray([3, 1])).temperature), [0.7, 1.6]
  )
  with pytest.raises(ValueError, match="Sample.at"):
    methods.processed_logits(jnp.zeros((2, 5)), methods.Sample(t_bn))
  np.testing.assert_array_equal(
    np.asarray(methods.token_temperature(methods.Greedy(), 2)), [0.0, 0.0]
  )


def test_methods_are_pytrees_with_static_truncation():
  method = methods.Sample(0.7, top_k=3, top_p=0.9, min_p=0.1)
  leaves, treedef = jax.tree.flatten(method)
  assert leaves == [0.7]
  assert jax.tree.unflatten(treedef, [jnp.ones(4)]).top_k == 3
  assert jax.tree.structure(methods.Sample(0.7, top_k=4)) != treedef  # top_k is static
  assert jax.tree.leaves(methods.Greedy()) == []


@pytest.mark.parametrize(
  "kwargs, culprit",
  [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(min_p=1.0), "min_p"),
    (dict(min_p=-0.1), "min_p"),
  ],
)
def test_bad_settings_are_named(kwargs, culprit):
  with pytest.raises(ValueError, match=culprit):
    methods.Sample(**kwargs)
