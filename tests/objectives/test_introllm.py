"""Tests for grpojax/objectives/introllm.py: the temperature policy's PPO-clip term and the
coordinate-ascent schedule against float64 NumPy, phase by phase."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives
from grpojax.objectives import introllm

P, G, T = 2, 4, 5
B = P * G


def _np_ppo_clip(lp, old, adv, eps):
  r = np.exp(lp - old)
  return np.maximum(-adv * r, -adv * np.clip(r, 1 - eps, 1 + eps))


def _np_seq_mean_token_mean(loss, mask):
  per_row = (loss * mask).sum(1) / np.maximum(mask.sum(1), 1)
  return per_row[mask.sum(1) > 0].mean()


def _np_zscore(rewards_pg):
  mean = rewards_pg.mean(1, keepdims=True)
  std = rewards_pg.std(1, ddof=1, keepdims=True)
  return ((rewards_pg - mean) / (std + 1e-6)).reshape(-1)


def _data(seed=0):
  rng = np.random.RandomState(seed)
  mask = np.ones((B, T), np.float32)
  mask[1, 3:] = 0
  mask[6, 1:] = 0
  rewards = rng.randint(0, 2, (P, G)).astype(np.float32)
  rewards[0, 0], rewards[0, 1] = 0.0, 1.0  # no group of equal rewards only
  rewards[1, 0], rewards[1, 1] = 0.0, 1.0
  old = rng.normal(-1.5, 0.5, (B, T)).astype(np.float32)
  lp = (old + rng.normal(0, 0.3, (B, T))).astype(np.float32)
  tau_old = rng.normal(0.2, 0.5, (B, T)).astype(np.float32)
  tau_lp = (tau_old + rng.normal(0, 0.3, (B, T))).astype(np.float32)
  return mask, rewards, old, lp, tau_old, tau_lp


def _loss_and_grads(objective, state, data):
  mask, rewards, old, lp, tau_old, tau_lp = data
  adv, state = objective.advantages(
    jnp.asarray(rewards), state, objectives.GroupInputs(mask=jnp.asarray(mask))
  )

  def loss(lp, tau_lp):
    inputs = objectives.LossInputs(
      logprobs=lp,
      mask=jnp.asarray(mask),
      old_logprobs=jnp.asarray(old),
      sampler_logprobs=jnp.asarray(old),
      advantages=adv,
      temperature=jnp.zeros((B, T)),
      temperature_logprobs=tau_lp,
      sampler_temperature_logprobs=jnp.asarray(tau_old),
    )
    s, d, metrics, _ = objective.loss(state, inputs)
    return s / d, metrics

  (value, metrics), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(
    jnp.asarray(lp), jnp.asarray(tau_lp)
  )
  return float(value), grads, metrics


@pytest.mark.parametrize("alternate_every", [0, 2])
def test_phases_against_float64_numpy(alternate_every):
  data = _data()
  mask, rewards, old, lp, tau_old, tau_lp = (np.asarray(x, np.float64) for x in data)
  objective = objectives.make(
    dict(
      recipe="introllm",
      kl_coef=0.0,
      epsilon_low=0.2,
      epsilon_high=0.28,
      temperature_epsilon=0.1,
      temperature_coef=0.5,
      alternate_every=alternate_every,
    ),
    group_size=G,
  )
  adv = np.repeat(_np_zscore(rewards)[:, None], T, axis=1)
  token = _np_seq_mean_token_mean(
    np.maximum(-adv * np.exp(lp - old), -adv * np.clip(np.exp(lp - old), 0.8, 1.28)), mask
  )
  temp = _np_seq_mean_token_mean(0.5 * _np_ppo_clip(tau_lp, tau_old, adv, 0.1), mask)
  state = objective.init()
  # k = 2: steps 0, 1 train the token policy, 2, 3 the temperature policy, 4 the tokens again.
  for step in range(5):
    value, (g_lp, g_tau), metrics = _loss_and_grads(objective, state, data)
    if alternate_every == 0:
      w_token, w_temp = 1.0, 1.0
    else:
      w_token = 1.0 if step in (0, 1, 4) else 0.0
      w_temp = 1.0 - w_token
    np.testing.assert_allclose(value, w_token * token + w_temp * temp, rtol=1e-5, atol=1e-6)
    assert float(metrics["phase/token"]) == w_token
    assert float(metrics["phase/temperature"]) == w_temp
    # The resting policy's inputs get no gradient.
    assert np.any(np.asarray(g_lp) != 0) == (w_token > 0)
    assert np.any(np.asarray(g_tau) != 0) == (w_temp > 0)
    state = objective.finalize(state)
  assert int(state.loss.step) == 5


def test_temperature_term_alone_matches_numpy_and_its_gradient():
  mask, _, _, _, tau_old, tau_lp = _data(1)
  adv = np.random.RandomState(2).normal(0, 1, (B, T)).astype(np.float32)
  term = introllm.temperature_policy_loss(epsilon_low=0.2, epsilon_high=0.3, coef=2.0)
  terms = objectives.Terms(
    loss=jnp.zeros((B, T)), weights=jnp.ones((B, T)), mask=jnp.asarray(mask), metrics={}
  )

  def total(tau_lp):
    x = objectives.LossInputs(
      logprobs=jnp.zeros((B, T)),
      mask=jnp.asarray(mask),
      advantages=jnp.asarray(adv),
      temperature_logprobs=tau_lp,
      sampler_temperature_logprobs=jnp.asarray(tau_old),
    )
    out, _ = term.update(terms, (), x)
    return jnp.sum(out.loss * mask), out.loss

  (_, loss), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(tau_lp))
  lp64, old64, adv64 = (np.asarray(x, np.float64) for x in (tau_lp, tau_old, adv))
  r = np.exp(lp64 - old64)
  want = 2.0 * np.maximum(-adv64 * r, -adv64 * np.clip(r, 0.8, 1.3))
  np.testing.assert_allclose(np.asarray(loss) * mask, want * mask, rtol=1e-5, atol=1e-6)
  # ∂ℓ/∂log p = −c Â r inside the trust region, 0 where the clip binds.
  clipped = ((adv64 > 0) & (r > 1.3)) | ((adv64 < 0) & (r < 0.8))
  want_grad = np.where(clipped, 0.0, -2.0 * adv64 * r) * mask
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)


def test_recipe_is_registered_and_reads_the_temperature_head():
  config = objectives.default_config("introllm")
  assert config.alternate_every == 1 and config.kl_coef == 0.04
  objective = objectives.make(config)
  assert {"temperature", "temperature_logprobs", "sampler_temperature_logprobs"} <= (
    objective.requires
  )


@pytest.mark.parametrize(
  "field, value",
  [("alternate_every", -1), ("temperature_coef", -1.0), ("temperature_epsilon", -0.1)],
)
def test_bad_values_name_the_field(field, value):
  with pytest.raises(objectives.ConfigError, match=rf"objective\.{field}"):
    objectives.make({"recipe": "introllm", field: value})
