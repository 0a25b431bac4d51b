"""Tests for grpojax/objectives/soft_surrogates.py (SAPO, CISPO, MASPO, VESPO)."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import soft_surrogates, surrogates
from tests.objectives import contract

B, T = 4, 6
LENGTHS = (6, 4, 1, 0)  # Row 3 is all padding.
RTOL, ATOL = 1e-5, 1e-6


def _mask():
  return (np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.float32)


def _inputs(seed, *, spread=0.5, per_token_adv=True, garbage=True):
  """Random [B, T] inputs; padding holds garbage that must never matter."""
  rng = np.random.default_rng(seed)
  mask = _mask()
  logprobs = -np.abs(rng.normal(size=(B, T))) - 0.05
  old = logprobs + rng.normal(scale=spread, size=(B, T))
  if per_token_adv:
    adv = rng.normal(size=(B, T))
  else:
    adv = np.repeat(rng.normal(size=(B, 1)), T, axis=1)
  if garbage:
    logprobs = np.where(mask > 0, logprobs, -np.inf)
    old = np.where(mask > 0, old, 1e30)
    adv = np.where(mask > 0, adv, np.nan)
  return tuple(a.astype(np.float32) for a in (logprobs, old, adv, mask))


def _valid(mask):
  return np.asarray(mask) > 0


def _clean64(mask, *arrays):
  """float64 copies with padding set to 0 (the references only read valid entries)."""
  return tuple(np.where(_valid(mask), np.asarray(a, np.float64), 0.0) for a in arrays)


def _sum_grad(fn, lp, old, adv, mask, **kw):
  return jax.grad(lambda x: jnp.sum(fn(x, old, adv, mask, **kw)[0]))(jnp.asarray(lp))


def _assert_close(got, want, mask):
  want = np.where(_valid(mask), np.asarray(want, np.float64), 0.0)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# SAPO.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau_pos, tau_neg", [(1.0, 1.05), (0.5, 3.0)])
def test_sapo_matches_reference_and_gradient(tau_pos, tau_neg):
  lp, old, adv, mask = _inputs(0)
  kw = dict(tau_pos=tau_pos, tau_neg=tau_neg)
  loss, metrics = soft_surrogates.sapo(lp, old, adv, mask, **kw)
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  r = np.exp(lp64 - old64)
  tau = np.where(adv64 > 0, tau_pos, tau_neg)
  sig = _sigmoid(tau * (r - 1))
  _assert_close(loss, -sig * 4 / tau * adv64, mask)
  weight = 4 * sig * (1 - sig) * r  # = sech²(τ(r−1)/2)·r
  _assert_close(_sum_grad(soft_surrogates.sapo, lp, old, adv, mask, **kw), -weight * adv64, mask)
  np.testing.assert_allclose(metrics["gate_weight_mean"], weight[_valid(mask)].mean(), rtol=RTOL)


def test_sapo_hand_worked():
  # Token 0: r = e^0.5 = 1.648721, A = +1, τ_pos = 1: σ(0.648721) = 0.656722,
  #   ℓ = −σ·4/1·A = −2.626889; ∂ℓ/∂logπ = −4σ(1−σ)·r·A = −0.901848·1.648721 = −1.486739.
  # Token 1: r = e^−0.5 = 0.606531, A = −1, τ_neg = 1.05: σ(1.05·(−0.393469)) = 0.398159,
  #   ℓ = +σ·4/1.05 = 1.516795; ∂ℓ/∂logπ = +4σ(1−σ)·r = 0.581368.
  # Token 2: r = 1, A = +2: σ = 1/2, ℓ = −(1/2)·4·2 = −4, ∂ℓ/∂logπ = −1·1·2 = −2 (weight 1).
  old = np.full((1, 3), -1.0, np.float32)
  lp = old + np.array([[0.5, -0.5, 0.0]], np.float32)
  adv = np.array([[1.0, -1.0, 2.0]], np.float32)
  mask = np.ones((1, 3), np.float32)
  loss, _ = soft_surrogates.sapo(lp, old, adv, mask)
  np.testing.assert_allclose(loss, [[-2.626889, 1.516795, -4.0]], rtol=1e-6)
  grad = _sum_grad(soft_surrogates.sapo, lp, old, adv, mask)
  np.testing.assert_allclose(grad, [[-1.486739, 0.581368, -2.0]], rtol=1e-5)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(tau=st.floats(0.01, 50.0), adv=st.floats(-5.0, 5.0))
def test_sapo_weight_is_one_at_ratio_one(tau, adv):
  lp = np.array([[-0.7]], np.float32)
  a = np.array([[adv]], np.float32)
  mask = np.ones((1, 1), np.float32)
  _, metrics = soft_surrogates.sapo(lp, lp, a, mask, tau_pos=tau, tau_neg=tau)
  np.testing.assert_allclose(metrics["gate_weight_mean"], 1.0, rtol=1e-6)
  grad = _sum_grad(soft_surrogates.sapo, lp, lp, a, mask, tau_pos=tau, tau_neg=tau)
  np.testing.assert_allclose(grad, -a, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# CISPO.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "bound, eps_low, eps_high, low, high",
  [
    ("relative", None, 0.2, None, 1.2),
    ("relative", 0.2, 0.28, 0.8, 1.28),
    ("absolute", None, 1.5, None, 1.5),
    ("absolute", 0.5, 2.0, 0.5, 2.0),
  ],
)
def test_cispo_matches_reference_and_gradient(bound, eps_low, eps_high, low, high):
  lp, old, adv, mask = _inputs(1, spread=1.0)
  kw = dict(bound=bound, epsilon_low=eps_low, epsilon_high=eps_high)
  loss, metrics = soft_surrogates.cispo(lp, old, adv, mask, **kw)
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  r = np.exp(lp64 - old64)
  weight = np.minimum(r, high) if low is None else np.clip(r, low, high)
  _assert_close(loss, -weight * adv64 * lp64, mask)
  # Every token keeps a gradient: −sg(clip(r))·A.
  _assert_close(_sum_grad(soft_surrogates.cispo, lp, old, adv, mask, **kw), -weight * adv64, mask)
  v = _valid(mask)
  np.testing.assert_allclose(metrics["clip_frac_high"], (r > high)[v].mean(), rtol=RTOL)
  want_low = 0.0 if low is None else (r < low)[v].mean()
  np.testing.assert_allclose(metrics["clip_frac_low"], want_low, rtol=RTOL)
  assert (r > high)[v].any()


def test_cispo_hand_worked():
  # Token 0: r = 1.5, relative ε_high = 0.2: r̂ = 1.2; A = 2, logπ = −0.5:
  #   ℓ = −1.2·2·(−0.5) = 1.2; ∂ℓ/∂logπ = −r̂·A = −2.4.
  # Token 1: r = 0.1 (no lower bound): r̂ = 0.1; A = −1, logπ = −2: ℓ = −0.1·(−1)·(−2) = −0.2,
  #   ∂ℓ/∂logπ = +0.1.
  lp = np.array([[-0.5, -2.0]], np.float32)
  old = lp - np.log(np.array([[1.5, 0.1]], np.float32))
  adv = np.array([[2.0, -1.0]], np.float32)
  mask = np.ones((1, 2), np.float32)
  loss, _ = soft_surrogates.cispo(lp, old, adv, mask)
  np.testing.assert_allclose(loss, [[1.2, -0.2]], rtol=1e-5)
  grad = _sum_grad(soft_surrogates.cispo, lp, old, adv, mask)
  np.testing.assert_allclose(grad, [[-2.4, 0.1]], rtol=1e-5)
  # Absolute cap ε_max = 5: r = 6 → r̂ = 5, so ℓ = −5·1·(−1) = 5.
  lp1, old1 = np.array([[-1.0]], np.float32), np.array([[-1.0 - np.log(6.0)]], np.float32)
  loss, _ = soft_surrogates.cispo(
    lp1, old1, np.ones((1, 1), np.float32), np.ones((1, 1)), bound="absolute", epsilon_high=5.0
  )
  np.testing.assert_allclose(loss, [[5.0]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# MASPO.
# ---------------------------------------------------------------------------------------------

MASPO_DEFAULTS = dict(
  sigma_base=1.0,
  alpha=0.3,
  sigma_high=10.0,
  adv_low=0.1,
  adv_high=10.0,
  beta_pos=0.03,
  beta_neg=0.03,
)


def _ref_maspo_weight(old64, adv64, rho, p):
  """float64 MASPO gate straight from the the paper formula (p = hyper-parameters)."""
  p_old = np.exp(old64)
  m = np.clip(p["sigma_base"] / p_old ** p["alpha"], p["sigma_base"], p["sigma_high"])
  with np.errstate(divide="ignore", invalid="ignore"):
    sigma_pos = m * np.clip(1 + p["beta_pos"] * adv64, p["adv_low"], p["adv_high"])
    sigma_neg = m * np.clip(1 / (1 - p["beta_neg"] * adv64), p["adv_low"], p["adv_high"])
  w_pos = np.exp(-((rho - 1) ** 2) / (2 * sigma_pos**2))
  w_neg = np.exp(-((rho - 1) ** 2) / (2 * sigma_neg**2))
  return np.where((adv64 > 0) & (rho > 1), w_pos, np.where((adv64 < 0) & (rho < 1), w_neg, 1.0))


@pytest.mark.parametrize(
  "overrides",
  [
    dict(),
    dict(alpha=0.5, beta_pos=0.3, beta_neg=0.5, sigma_high=2.0),
    dict(sigma_base=0.2, alpha=1.0, adv_low=0.5, adv_high=1.5),
  ],
)
def test_maspo_matches_reference_and_gradient(overrides):
  params = {**MASPO_DEFAULTS, **overrides}
  lp, old, adv, mask = _inputs(2, spread=2.0)
  adv = (adv * 3).astype(np.float32)
  loss, metrics = soft_surrogates.maspo(lp, old, adv, mask, **params)
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  rho = np.exp(lp64 - old64)
  w = _ref_maspo_weight(old64, adv64, rho, params)
  _assert_close(loss, -adv64 * w * rho, mask)
  # The gate is computed on sg(ρ): the gradient is −w·ρ·A.
  grad = _sum_grad(soft_surrogates.maspo, lp, old, adv, mask, **params)
  _assert_close(grad, -w * rho * adv64, mask)
  v = _valid(mask)
  np.testing.assert_allclose(metrics["gate_weight_mean"], w[v].mean(), rtol=RTOL)
  active = ((adv64 > 0) & (rho > 1)) | ((adv64 < 0) & (rho < 1))
  np.testing.assert_allclose(metrics["gate_active_frac"], active[v].mean(), rtol=RTOL)
  assert (w[v] < 0.99).any()


def test_maspo_hand_worked():
  # p_old = 0.5, α = 0.3: m = 0.5^−0.3 = 1.231144 (inside [σ_base, σ_high] = [1, 10]).
  # Token 0: A = +1, ρ = 1.5: σ⁺ = m·(1 + 0.03) = 1.268079, w = exp(−0.25/(2·1.268079²)) =
  #   0.925209; ℓ = −1·0.925209·1.5 = −1.387814.
  # Token 1: A = −2, ρ = 0.5: σ⁻ = m/(1 + 0.06) = 1.161457, w = exp(−0.25/(2·1.161457²)) =
  #   0.911501; ℓ = +2·0.911501·0.5 = 0.911501.
  # Token 2: A = +1, ρ = 0.5 (not the gated direction): w = 1, ℓ = −0.5.
  old = np.full((1, 3), np.log(0.5), np.float32)
  lp = old + np.log(np.array([[1.5, 0.5, 0.5]], np.float32))
  adv = np.array([[1.0, -2.0, 1.0]], np.float32)
  loss, _ = soft_surrogates.maspo(lp, old, adv, np.ones((1, 3), np.float32))
  np.testing.assert_allclose(loss, [[-1.387814, 0.911501, -0.5]], rtol=1e-5)


def test_maspo_low_mass_tokens_get_a_wider_gate():
  # Same ρ and A; a rarer token (smaller p_old) has a larger σ, hence a weight closer to 1.
  old = np.log(np.array([[0.9, 0.1, 1e-30]], np.float32))
  lp = old + np.log(3.0)
  adv = np.ones((1, 3), np.float32)
  loss, _ = soft_surrogates.maspo(lp, old, adv, np.ones((1, 3), np.float32))
  weights = -np.asarray(loss)[0] / 3.0
  assert weights[0] < weights[1] < weights[2] < 1.0
  # p_old → 0 saturates at σ_high·(1 + β_pos): w = exp(−4/(2·(10.3)²)).
  np.testing.assert_allclose(weights[2], np.exp(-4 / (2 * 10.3**2)), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# VESPO.
# ---------------------------------------------------------------------------------------------


def _ref_vespo_phi(lp, old, adv, mask, k_pos, lam_pos, k_neg, lam_neg, rollout=None):
  """float64 φ(W_i) per token, row by row from the formula."""
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  phi = np.zeros((B, T))
  for b in range(B):
    n = int(mask[b].sum())
    if n == 0:
      continue
    log_w = np.sum(np.clip(lp64[b, :n] - old64[b, :n], -20, 20))
    if rollout is not None:
      log_w += np.sum(old64[b, :n] - np.asarray(rollout, np.float64)[b, :n])
    w = np.exp(np.clip(log_w, -20, 20))
    pos = adv64[b, :n] >= 0
    phi[b, :n] = np.where(
      pos, w**k_pos * np.exp(lam_pos * (1 - w)), w**k_neg * np.exp(lam_neg * (1 - w))
    )
  return phi


@pytest.mark.parametrize("with_rollout", [False, True])
@pytest.mark.parametrize("kl", [(2.0, 3.0, 3.0, 2.0), (0.5, 1.0, 4.0, 0.0)])
def test_vespo_matches_reference_and_gradient(kl, with_rollout):
  k_pos, lam_pos, k_neg, lam_neg = kl
  lp, old, adv, mask = _inputs(3, spread=0.3, per_token_adv=False)
  rollout = None
  if with_rollout:
    rng = np.random.default_rng(33)
    rollout = (old + rng.normal(scale=0.1, size=old.shape)).astype(np.float32)
  kw = dict(
    k_pos=k_pos, lambda_pos=lam_pos, k_neg=k_neg, lambda_neg=lam_neg, rollout_logprobs=rollout
  )
  loss, metrics = soft_surrogates.vespo(lp, old, adv, mask, **kw)
  phi = _ref_vespo_phi(lp, old, adv, mask, k_pos, lam_pos, k_neg, lam_neg, rollout)
  lp64, _, adv64 = _clean64(mask, lp, old, adv)
  _assert_close(loss, -phi * adv64 * lp64, mask)
  # φ is detached: the gradient is −φ(W)·A.
  _assert_close(_sum_grad(soft_surrogates.vespo, lp, old, adv, mask, **kw), -phi * adv64, mask)
  np.testing.assert_allclose(metrics["phi_mean"], phi[_valid(mask)].mean(), rtol=RTOL)


def test_vespo_hand_worked():
  # Row Δ = [0.1, 0.2]: W = e^0.3 = 1.349859 (product ratio, no length normalisation).
  # A = +1 (k, λ) = (2, 3): φ = W²·e^{3(1−W)} = 1.822119·0.350071 = 0.637898.
  # A = −1 (k, λ) = (3, 2): φ = W³·e^{2(1−W)} = 1.221748.
  # ℓ_t = −φ·A·logπ_t with logπ = [−1.0, −0.5] + Δ.
  old = np.array([[-1.0, -0.5], [-1.0, -0.5]], np.float32)
  lp = old + np.array([[0.1, 0.2], [0.1, 0.2]], np.float32)
  adv = np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32)
  loss, _ = soft_surrogates.vespo(lp, old, adv, np.ones((2, 2), np.float32))
  phi = np.array([[0.6378983], [1.2217477]])
  np.testing.assert_allclose(loss, -phi * adv * lp, rtol=1e-5)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(k=st.floats(0.0, 10.0), lam=st.floats(0.0, 10.0))
def test_vespo_kernel_is_one_at_w_one(k, lam):
  np.testing.assert_allclose(soft_surrogates.vespo_kernel(jnp.float32(0.0), k=k, lam=lam), 1.0)


# ---------------------------------------------------------------------------------------------
# Invariants shared by the module.
# ---------------------------------------------------------------------------------------------

FNS = {
  "sapo": soft_surrogates.sapo,
  "cispo": soft_surrogates.cispo,
  "cispo_absolute": functools.partial(soft_surrogates.cispo, bound="absolute", epsilon_high=5.0),
  "maspo": soft_surrogates.maspo,
  "vespo": soft_surrogates.vespo,
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_on_policy_gradient_equals_reinforce(name):
  lp, _, adv, mask = _inputs(4)
  got = _sum_grad(FNS[name], lp, lp, adv, mask)
  want = _sum_grad(surrogates.reinforce, lp, lp, adv, mask)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(FNS))
def test_jit_and_vmap_match_eager(name):
  fn = FNS[name]
  batches = [_inputs(10 + i) for i in range(3)]
  contract.assert_jit_and_vmap_match_eager(fn, batches)


@pytest.mark.parametrize("name", sorted(FNS))
def test_padding_is_zero_and_extreme_log_ratios_stay_finite(name):
  fn = FNS[name]
  lp, old, adv, mask = _inputs(20)
  old = np.where(_valid(mask), lp + np.where(np.arange(T) % 2 == 0, 50.0, -50.0), old)
  old = old.astype(np.float32)
  contract.assert_padding_is_zero_and_finite(fn, (lp, old, adv, mask), _valid(mask))


@pytest.mark.parametrize(
  "fn, kwargs, field",
  [
    (soft_surrogates.sapo, dict(tau_pos=0.0), "tau_pos"),
    (soft_surrogates.sapo, dict(tau_neg=-1.0), "tau_neg"),
    (soft_surrogates.cispo, dict(bound="both"), "bound"),
    (soft_surrogates.cispo, dict(epsilon_high=-0.1), "epsilon_high"),
    (soft_surrogates.cispo, dict(epsilon_low=-0.1), "epsilon_low"),
    (soft_surrogates.cispo, dict(bound="absolute", epsilon_high=0.2), "epsilon_high"),
    (
      soft_surrogates.cispo,
      dict(bound="absolute", epsilon_high=5.0, epsilon_low=2.0),
      "epsilon_low",
    ),
    (soft_surrogates.maspo, dict(sigma_base=0.0), "sigma_base"),
    (soft_surrogates.maspo, dict(alpha=-0.3), "alpha"),
    (soft_surrogates.maspo, dict(sigma_high=0.5), "sigma_high"),
    (soft_surrogates.maspo, dict(adv_low=0.0), "adv_low"),
    (soft_surrogates.maspo, dict(adv_high=0.05), "adv_high"),
    (soft_surrogates.maspo, dict(beta_pos=-0.03), "beta_pos"),
    (soft_surrogates.maspo, dict(beta_neg=-0.03), "beta_neg"),
    (soft_surrogates.vespo, dict(k_pos=-1.0), "k_pos"),
    (soft_surrogates.vespo, dict(lambda_pos=float("inf")), "lambda_pos"),
    (soft_surrogates.vespo, dict(k_neg=-2.0), "k_neg"),
    (soft_surrogates.vespo, dict(lambda_neg=-2.0), "lambda_neg"),
  ],
)
def test_bad_hyper_parameters_raise(fn, kwargs, field):
  lp, old, adv, mask = _inputs(30)
  with pytest.raises(ValueError, match=field):
    fn(lp, old, adv, mask, **kwargs)
  with pytest.raises(ValueError, match=field):
    jax.jit(functools.partial(fn, **kwargs))(lp, old, adv, mask)


@pytest.mark.parametrize("name", sorted(FNS))
@pytest.mark.parametrize("field", ["old_logprobs", "advantages", "mask"])
def test_mismatched_shapes_raise(name, field):
  args = dict(zip(("logprobs", "old_logprobs", "advantages", "mask"), _inputs(31), strict=True))
  args[field] = args[field][:, :-1]
  with pytest.raises(ValueError, match=field):
    FNS[name](**args)


def test_vespo_rollout_logprobs_shape_is_checked():
  lp, old, adv, mask = _inputs(32)
  with pytest.raises(ValueError, match="rollout_logprobs"):
    soft_surrogates.vespo(lp, old, adv, mask, rollout_logprobs=old[:, :-1])
