"""Tests for grpojax/objectives/distribution_losses.py: LAD's practical objective (arXiv
2602.20132) against a float64 NumPy reference, and the property its gradient is built on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives
from grpojax.objectives import distribution_losses as dl

RNG = np.random.RandomState(0)
B, T = 3, 5
LOGP = -RNG.uniform(0.1, 3.0, (B, T))
OLD = LOGP + RNG.normal(0.0, 0.3, (B, T))
ADV = np.repeat(RNG.normal(0.0, 1.0, (B, 1)), T, axis=1)
MASK = np.ones((B, T))
MASK[1, 3:] = 0


def _f_np(x, divergence):
  if divergence == "js":
    return 0.5 * (x * np.log(x) - (x + 1.0) * np.log((x + 1.0) / 2.0))
  if divergence == "hellinger":
    return 0.5 * (np.sqrt(x) - 1.0) ** 2
  return np.abs(x - 1.0)


@pytest.mark.parametrize("divergence", dl.DIVERGENCES)
@pytest.mark.parametrize("eta", [0.25, 1.0])
def test_lad_matches_float64_reference(divergence, eta):
  loss, metrics = dl.lad(
    jnp.asarray(LOGP, jnp.float32),
    jnp.asarray(OLD, jnp.float32),
    jnp.asarray(ADV, jnp.float32),
    jnp.asarray(MASK),
    eta=eta,
    divergence=divergence,
  )
  u = ADV / eta
  x = np.exp(LOGP - OLD) / np.exp(u)
  want = np.where(MASK > 0, np.exp(u) * _f_np(x, divergence), 0.0)
  np.testing.assert_allclose(np.asarray(loss), want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(
    float(metrics["target_ratio_mean"]), np.exp(u)[MASK > 0].mean(), rtol=1e-5
  )


def test_lad_gradient_vanishes_when_the_ratio_reaches_its_target():
  """d/dlogπ [e^u f(r e^-u)] = r f'(r e^-u): zero at r = e^u (f'(1) = 0), negative below it
  (raise the probability), positive above it (lower it). Hand-worked for JS:
  f'(x) = ½ log(2x / (x + 1))."""
  adv = np.array([[0.5, 0.5, 0.5]])
  u = adv / 0.25  # 2
  old = np.full((1, 3), -1.0)
  logp = old + u + np.array([[0.0, -0.5, 0.5]])  # on, below and above the target

  def total(lp):
    loss, _ = dl.lad(lp, jnp.asarray(old), jnp.asarray(adv), jnp.ones((1, 3)), eta=0.25)
    return jnp.sum(loss)

  grad = np.asarray(jax.grad(total)(jnp.asarray(logp, jnp.float32)))[0]
  r = np.exp(logp - old)[0]
  x = r * np.exp(-u[0])
  np.testing.assert_allclose(grad, r * 0.5 * np.log(2 * x / (x + 1)), rtol=1e-4, atol=1e-6)
  assert abs(grad[0]) < 1e-5 and grad[1] < 0 < grad[2]


def test_lad_rejects_bad_hyperparameters_by_name():
  args = [jnp.zeros((1, 2))] * 3 + [jnp.ones((1, 2))]
  with pytest.raises(ValueError, match="eta"):
    dl.lad(*args, eta=0.0)
  with pytest.raises(ValueError, match="divergence"):
    dl.lad(*args, divergence="kl")
  config = objectives.default_config("lad")
  config.eta = -1.0
  with pytest.raises(objectives.ConfigError, match="objective.eta"):
    objectives.make(config, path="objective")
