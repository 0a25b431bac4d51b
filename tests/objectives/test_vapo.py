"""Tests for grpojax/objectives/vapo.py and the critic helpers of gae.py, against float64 NumPy
re-implementations of VAPO's pieces (arXiv 2504.05118) written out loop by loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grpojax.objectives as objectives
from grpojax.objectives import aggregation, gae, vapo
from grpojax.rl import setup

P, G, T = 2, 3, 6
B = P * G
LENGTHS = np.array([6, 3, 1, 4, 5, 0])  # row 5 is all padding
REWARDS_PG = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, np.nan]])  # row 5's reward is garbage


def _mask():
  return (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float32)


def _values(seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(scale=0.5, size=(B, T)).astype(np.float32)


def _np_lambda(length, alpha):
  """NeMo-RL's form: clamp(1 − 1/clamp(α·L, min=1), 0, 1)."""
  return float(np.clip(1.0 - 1.0 / max(alpha * length, 1.0), 0.0, 1.0))


def _np_gae(rewards_b, values, lengths, *, gamma, lams):
  """Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} − V_t, reward on the last token, V_L = 0."""
  adv = np.zeros((B, T))
  for b in range(B):
    n = lengths[b]
    for t in range(n):
      total = 0.0
      for k in range(t, n):
        r = rewards_b[b] if k == n - 1 else 0.0
        v_next = values[b, k + 1] if k + 1 < n else 0.0
        delta = r + gamma * v_next - values[b, k]
        total += (gamma * lams[b]) ** (k - t) * delta
      adv[b, t] = total
  return adv


def _np_whiten(adv, mask):
  x = adv[mask > 0]
  out = (adv - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-8)
  return np.where(mask > 0, out, 0.0)


def _np_returns(rewards_b, lengths, gamma):
  out = np.zeros((B, T))
  for b in range(B):
    for t in range(lengths[b]):
      out[b, t] = gamma ** (lengths[b] - 1 - t) * rewards_b[b]
  return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_gae_advantages_match_numpy(gamma, whiten, alpha):
  # α = 0.3 gives λ = 0.44 (L = 6), 0.17 (L = 4), 1/3 (L = 5), 0 (L = 3, 1): every case of the
  # clamp; α = 0.05 gives λ = 0 everywhere (one-step TD), this task's regime.
  values = _values()
  mask = _mask()
  adv = vapo.gae_advantages(
    jnp.asarray(REWARDS_PG, jnp.float32),
    jnp.asarray(np.where(mask > 0, values, np.nan)),  # garbage on padding must not matter
    jnp.asarray(mask),
    gamma=gamma,
    alpha=alpha,
    whiten_advantages=whiten,
  )
  rewards_b = np.nan_to_num(REWARDS_PG.reshape(B))
  lams = [_np_lambda(n, alpha) for n in LENGTHS]
  want = _np_gae(rewards_b, values.astype(np.float64), LENGTHS, gamma=gamma, lams=lams)
  if whiten:
    want = _np_whiten(want, mask)
  np.testing.assert_allclose(np.asarray(adv, np.float64), want, rtol=1e-5, atol=1e-6)


def test_fixed_lambda_and_invalid_samples():
  values, mask = _values(1), _mask()
  valid_pg = np.array([[True, False, True], [True, True, True]])
  adv = vapo.gae_advantages(
    jnp.asarray(np.nan_to_num(REWARDS_PG), jnp.float32),
    jnp.asarray(values),
    jnp.asarray(mask),
    jnp.asarray(valid_pg),
    adaptive_lambda=False,
    lambda_policy=0.95,
    whiten_advantages=False,
  )
  lengths = LENGTHS * valid_pg.reshape(B)
  want = _np_gae(
    np.nan_to_num(REWARDS_PG.reshape(B)),
    values.astype(np.float64),
    lengths,
    gamma=1.0,
    lams=[0.95] * B,
  )
  np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(adv)[1] == 0)


def test_length_adaptive_lambda_is_the_clamped_formula():
  lengths = np.array([0, 1, 10, 19, 20, 21, 40, 100, 1000])
  got = gae.vapo_length_adaptive_lambda(jnp.asarray(lengths), alpha=0.05)
  want = [_np_lambda(n, 0.05) if n > 0 else 0.0 for n in lengths]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
  # Hand-worked: L = 40 -> 1 − 1/2 = 0.5; L = 100 -> 1 − 1/5 = 0.8; L <= 20 -> 0.
  np.testing.assert_allclose(np.asarray(got)[[6, 7]], [0.5, 0.8], rtol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_monte_carlo_returns_and_value_loss_match_numpy(gamma):
  values, mask = _values(2), _mask()
  rewards_b = np.nan_to_num(REWARDS_PG.reshape(B)).astype(np.float32)
  returns = gae.monte_carlo_returns(jnp.asarray(rewards_b), jnp.asarray(mask), gamma=gamma)
  want_returns = _np_returns(rewards_b.astype(np.float64), LENGTHS, gamma)
  np.testing.assert_allclose(np.asarray(returns), want_returns, rtol=1e-6, atol=1e-7)

  def total(v):
    loss, _ = vapo.value_loss_terms(v, jnp.asarray(rewards_b), jnp.asarray(mask), gamma=gamma)
    return jnp.sum(loss)

  loss_value, grad = jax.value_and_grad(total)(jnp.asarray(values))
  v64 = values.astype(np.float64)
  want_loss = np.sum(np.where(mask > 0, 0.5 * (v64 - want_returns) ** 2, 0.0))
  np.testing.assert_allclose(float(loss_value), want_loss, rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(grad), np.where(mask > 0, v64 - want_returns, 0.0), rtol=1e-5, atol=1e-6
  )


def test_positive_nll_matches_numpy():
  rng = np.random.default_rng(3)
  logprobs = -np.abs(rng.normal(size=(B, T))).astype(np.float32)
  mask = _mask()
  rewards_b = np.array([1.0, 0.0, 0.7, 0.2, 1.0, 1.0], np.float32)  # row 5: no tokens

  def total(lp):
    loss, metrics = vapo.positive_nll_terms(
      lp, jnp.asarray(rewards_b), jnp.asarray(mask), correct_threshold=0.5
    )
    return jnp.sum(loss), metrics

  (value, metrics), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(logprobs))
  on = (mask > 0) & (rewards_b >= 0.5)[:, None]
  np.testing.assert_allclose(float(value), -np.sum(logprobs.astype(np.float64)[on]), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(grad), np.where(on, -1.0, 0.0))
  # Rows 0, 2, 4 are correct: 6 + 1 + 5 = 12 of the 19 tokens.
  np.testing.assert_allclose(float(metrics["nll_pos_frac"]), 12 / 19, rtol=1e-6)


def test_explained_variance_matches_numpy():
  values, mask = _values(4), _mask()
  returns = _np_returns(np.nan_to_num(REWARDS_PG.reshape(B)), LENGTHS, 1.0)
  got = gae.explained_variance(jnp.asarray(values), jnp.asarray(returns), jnp.asarray(mask))
  on = mask > 0
  y, v = returns[on], values.astype(np.float64)[on]
  np.testing.assert_allclose(float(got), 1 - np.var(y - v) / np.var(y), rtol=1e-5)
  # A perfect critic explains everything; a constant one (the mean) nothing.
  assert float(gae.explained_variance(returns, returns, mask)) == pytest.approx(1.0)
  flat = np.full_like(returns, y.mean())
  assert float(gae.explained_variance(flat, returns, mask)) == pytest.approx(0.0, abs=1e-6)


def _np_ppo(lp, old, adv, eps_low, eps_high):
  ratio = np.exp(lp - old)
  return np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - eps_low, 1 + eps_high))


def test_vapo_recipe_matches_numpy():
  # The whole objective through `make`: GAE advantages on V_old, then token-mean of
  # clip-higher PPO + 0.1 · NLL on correct rows + 1.0 · ½ (V − R)², and its gradients.
  objective = objectives.make(objectives.default_config("vapo"), group_size=G)
  assert objective.advantages_need_values and "values" in objective.requires
  assert setup.heads_for(objective).value
  rng = np.random.default_rng(5)
  mask = _mask()
  old_values = _values(6)
  values = (old_values + rng.normal(scale=0.1, size=(B, T))).astype(np.float32)
  logprobs = (-np.abs(rng.normal(size=(B, T))) - 0.05).astype(np.float32)
  old = (logprobs + rng.normal(scale=0.4, size=(B, T))).astype(np.float32)
  rewards_pg = jnp.asarray(REWARDS_PG, jnp.float32)
  group = objectives.GroupInputs(
    valid_pg=jnp.asarray((LENGTHS > 0).reshape(P, G)),
    mask=jnp.asarray(mask),
    values=jnp.asarray(old_values),
  )
  adv, state = objective.advantages(rewards_pg, objective.init(), group)
  rewards_b = np.nan_to_num(REWARDS_PG.reshape(B))
  lams = [_np_lambda(n, 0.05) for n in LENGTHS]  # all 0 here
  want_adv = _np_whiten(
    _np_gae(rewards_b, old_values.astype(np.float64), LENGTHS, gamma=1.0, lams=lams), mask
  )
  np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-6)

  def total(lp, v):
    x = objectives.LossInputs(
      logprobs=lp,
      mask=jnp.asarray(mask),
      old_logprobs=jnp.asarray(old),
      sampler_logprobs=jnp.asarray(old),
      advantages=adv,
      values=v,
      rewards=jnp.asarray(REWARDS_PG.reshape(B), jnp.float32),
    )
    s, d, metrics, _ = objective.loss(state, x)
    return aggregation.finalize(s, d), metrics

  (loss, metrics), (g_lp, g_v) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
    jnp.asarray(logprobs), jnp.asarray(values)
  )
  on = mask > 0
  lp64, old64, v64 = (x.astype(np.float64) for x in (logprobs, old, values))
  correct = (rewards_b >= 0.5)[:, None] & on
  returns = _np_returns(rewards_b, LENGTHS, 1.0)
  per_token = (
    _np_ppo(lp64, old64, want_adv, 0.2, 0.28)
    + 0.1 * np.where(correct, -lp64, 0.0)
    + 1.0 * 0.5 * (v64 - returns) ** 2
  )
  n = on.sum()
  np.testing.assert_allclose(float(loss), per_token[on].sum() / n, rtol=1e-5)
  # ∂/∂V = (V − R)/n; ∂/∂logπ of the NLL part is −0.1/n on correct tokens (checked by
  # subtracting the PPO part's finite-free analytic gradient).
  np.testing.assert_allclose(
    np.asarray(g_v), np.where(on, (v64 - returns) / n, 0.0), rtol=1e-5, atol=1e-7
  )
  ratio = np.exp(lp64 - old64)
  unclipped, clipped = -want_adv * ratio, -want_adv * np.clip(ratio, 0.8, 1.28)
  g_ppo = np.where(unclipped >= clipped, -want_adv * ratio, 0.0)
  want_g_lp = np.where(on, (g_ppo + np.where(correct, -0.1, 0.0)) / n, 0.0)
  np.testing.assert_allclose(np.asarray(g_lp), want_g_lp, rtol=1e-5, atol=1e-7)
  for name in ("value_loss", "value_mean", "nll_pos", "nll_pos_frac", "clip_frac_high"):
    assert name in metrics, name


def test_advantages_need_the_values():
  objective = objectives.make(objectives.default_config("vapo"), group_size=G)
  with pytest.raises(ValueError, match="values"):
    objective.advantages(
      jnp.zeros((P, G)), objective.init(), objectives.GroupInputs(mask=jnp.asarray(_mask()))
    )


@pytest.mark.parametrize(
  "field, value",
  [("alpha", 0.0), ("lambda_policy", 1.5), ("gamma", 1.2), ("value_coef", 0.0), ("nll_coef", -1.0)],
)
def test_bad_hyper_parameters_name_the_field(field, value):
  config = objectives.default_config("vapo")
  config[field] = value
  with pytest.raises(ValueError, match=rf"objective\.{field}"):
    objectives.make(config, group_size=G)
