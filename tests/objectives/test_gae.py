"""Tests for grpojax/objectives/gae.py: GAE with decoupled λ and VAPO's length-adaptive λ,
against float64 NumPy references and hand-worked values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import gae
from tests.objectives.test_advantages import ATOL, RTOL


def _close(actual, expected, atol=ATOL, rtol=RTOL):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, atol=atol, rtol=rtol)


def ref_gae(r, values, m, gamma, lam):
  """A_t = sum_l (gamma*lam)^l delta_{t+l} over the valid positions of each row (explicit sum)."""
  adv = np.zeros_like(values)
  for b in range(r.shape[0]):
    idx = list(np.flatnonzero(m[b]))
    lam_b = lam[b] if np.ndim(lam) else lam
    vv = [values[b, t] for t in idx] + [0.0]
    deltas = [r[b, t] + gamma * vv[j + 1] - vv[j] for j, t in enumerate(idx)]
    for j, t in enumerate(idx):
      adv[b, t] = sum((gamma * lam_b) ** d * deltas[j + d] for d in range(len(idx) - j))
  return adv


def _gae_inputs(seed, batch=5, length=8):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(batch, length))
  values = rng.normal(size=(batch, length))
  mask = rng.random((batch, length)) < 0.75  # interior holes, as in multi-turn masks
  mask[0] = True
  mask[1] = False  # an empty row
  rewards = rewards.astype(np.float32).astype(np.float64)
  values = values.astype(np.float32).astype(np.float64)
  rewards[~mask] = np.nan
  values[~mask] = np.nan
  return rewards, values, mask


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lambda_policy", [0.0, 0.7, 1.0, "per_row"])
def test_gae_matches_reference(seed, gamma, lambda_policy):
  r, values, m = _gae_inputs(seed)
  if lambda_policy == "per_row":
    lambda_policy = np.linspace(0.0, 1.0, r.shape[0])
  lambda_critic = 0.9
  out = gae.gae(
    jnp.asarray(r, jnp.float32),
    jnp.asarray(values, jnp.float32),
    jnp.asarray(m),
    gamma=gamma,
    lambda_policy=lambda_policy,
    lambda_critic=lambda_critic,
  )
  values0 = np.where(m, values, 0.0)
  _close(out.advantages_bt, ref_gae(r, values, m, gamma, lambda_policy))
  _close(out.value_targets_bt, ref_gae(r, values, m, gamma, lambda_critic) + values0)


def test_vapo_lambda_matches_reference():
  lengths = np.array([0, 1, 10, 20, 21, 100, 4096])
  want = [min(max(1 - 1 / (0.05 * n), 0.0), 1.0) if n > 0 else 0.0 for n in lengths]
  _close(gae.vapo_length_adaptive_lambda(jnp.asarray(lengths), alpha=0.05), want)


def test_gae_hand_worked():
  # r = [0, 0, 1], V = [0.5, 0.5, 0.5], gamma = 1, V after the end = 0.
  # delta = [0 + 0.5 - 0.5, 0 + 0.5 - 0.5, 1 + 0 - 0.5] = [0, 0, 0.5].
  # lambda = 0.5: A_2 = 0.5, A_1 = 0 + 0.5 * 0.5 = 0.25, A_0 = 0 + 0.5 * 0.25 = 0.125.
  # lambda_critic = 1: A = [0.5, 0.5, 0.5], targets = A + V = [1, 1, 1] (the return).
  out = gae.gae(
    jnp.array([[0.0, 0.0, 1.0]]),
    jnp.array([[0.5, 0.5, 0.5]]),
    jnp.ones((1, 3)),
    gamma=1.0,
    lambda_policy=0.5,
    lambda_critic=1.0,
  )
  _close(out.advantages_bt, [[0.125, 0.25, 0.5]])
  _close(out.value_targets_bt, [[1.0, 1.0, 1.0]])


def test_vapo_lambda_hand_worked():
  # alpha = 0.05: l = 100 -> 1 - 1/5 = 0.8; l = 40 -> 1 - 1/2 = 0.5; l = 10 -> 1 - 2 < 0 -> 0.
  got = gae.vapo_length_adaptive_lambda(jnp.array([100, 40, 10]), alpha=0.05)
  _close(got, [0.8, 0.5, 0.0])


def test_gae_monte_carlo_targets_with_lambda_one():
  # gamma = lambda_critic = 1: the targets telescope to the reward-to-go over valid positions.
  r, values, m = _gae_inputs(3)
  out = gae.gae(
    jnp.asarray(r, jnp.float32), jnp.asarray(values, jnp.float32), jnp.asarray(m), lambda_critic=1.0
  )
  r0 = np.where(m, r, 0.0)
  to_go = np.cumsum(r0[:, ::-1], axis=1)[:, ::-1]
  _close(out.value_targets_bt, np.where(m, to_go, 0.0))
  assert np.all(np.isfinite(out.advantages_bt))
  np.testing.assert_array_equal(np.asarray(out.advantages_bt)[~m], 0.0)


def test_gae_jit_and_vmap():
  inputs = [_gae_inputs(s) for s in range(3)]
  rs, vals, ms = (jnp.stack([jnp.asarray(x[i]) for x in inputs]) for i in range(3))
  rs, vals = rs.astype(jnp.float32), vals.astype(jnp.float32)
  fn = functools.partial(gae.gae, gamma=0.95, lambda_policy=0.8, lambda_critic=1.0)
  eager = [fn(r, v, m) for r, v, m in zip(rs, vals, ms, strict=True)]
  for batched in (jax.vmap(fn)(rs, vals, ms), jax.jit(jax.vmap(fn))(rs, vals, ms)):
    for field in ("advantages_bt", "value_targets_bt"):
      want = np.stack([getattr(e, field) for e in eager])
      np.testing.assert_allclose(getattr(batched, field), want, atol=1e-6)
  lam = gae.vapo_length_adaptive_lambda(jnp.sum(ms[0], axis=-1), alpha=0.2)
  jitted = jax.jit(lambda r, v, m, lam: gae.gae(r, v, m, lambda_policy=lam))
  np.testing.assert_allclose(
    jitted(rs[0], vals[0], ms[0], lam).advantages_bt,
    gae.gae(rs[0], vals[0], ms[0], lambda_policy=lam).advantages_bt,
    atol=1e-6,
  )


def test_gae_outputs_carry_no_gradient():
  r, values, m = _gae_inputs(4)

  def loss(v):
    out = gae.gae(jnp.asarray(r), v, jnp.asarray(m), lambda_policy=0.9)
    return jnp.sum(jnp.where(m, out.advantages_bt + out.value_targets_bt, 0.0))

  grad = jax.grad(loss)(jnp.asarray(np.where(m, values, 0.0), jnp.float32))
  np.testing.assert_array_equal(grad, 0.0)
