"""Tests for grpojax/objectives/selective_surrogates.py (STAPO, Clip-Cov, KL-Cov)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import aggregation, selective_surrogates, surrogates
from tests.objectives import contract

B, T = 4, 6
LENGTHS = (6, 4, 1, 0)  # Row 3 is all padding; 11 valid tokens.
N_VALID = sum(LENGTHS)
RTOL, ATOL = 1e-5, 1e-6


def _mask():
  return (np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.float32)


def _inputs(seed, *, spread=0.5, adv_scale=1.0, garbage=True):
  """Random [B, T] inputs with per-token advantages; padding holds garbage."""
  rng = np.random.default_rng(seed)
  mask = _mask()
  logprobs = -np.abs(rng.normal(scale=2.0, size=(B, T))) - 0.05
  old = logprobs + rng.normal(scale=spread, size=(B, T))
  adv = adv_scale * rng.normal(size=(B, T))
  if garbage:
    logprobs = np.where(mask > 0, logprobs, -np.inf)
    old = np.where(mask > 0, old, 1e30)
    adv = np.where(mask > 0, adv, np.nan)
  return tuple(a.astype(np.float32) for a in (logprobs, old, adv, mask))


def _valid(mask):
  return np.asarray(mask) > 0


def _clean64(mask, *arrays):
  return tuple(np.where(_valid(mask), np.asarray(a, np.float64), 0.0) for a in arrays)


def _sum_grad(fn, lp, old, adv, mask, **kw):
  return jax.grad(lambda x: jnp.sum(fn(x, old, adv, mask, **kw)[0]))(jnp.asarray(lp))


def _assert_close(got, want, mask):
  want = np.where(_valid(mask), np.asarray(want, np.float64), 0.0)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL)


def _ref_ppo(lp64, old64, adv64, eps_low=0.2, eps_high=0.2):
  """float64 PPO-clip: (loss, gradient coefficient, clipped-by-PPO)."""
  r = np.exp(lp64 - old64)
  pg1 = -adv64 * r
  pg2 = -adv64 * np.clip(r, 1 - eps_low, 1 + eps_high)
  clipped = pg2 > pg1
  return np.maximum(pg1, pg2), np.where(clipped, 0.0, -adv64 * r), clipped


def _ref_cov(lp64, adv64, mask):
  v = _valid(mask)
  return (adv64 - adv64[v].mean()) * (lp64 - lp64[v].mean())


# ---------------------------------------------------------------------------------------------
# STAPO.
# ---------------------------------------------------------------------------------------------


def _stapo_inputs(seed):
  lp, old, adv, mask = _inputs(seed)
  rng = np.random.default_rng(seed + 100)
  # Most tokens improbable (p < 0.01) with positive advantage; entropies spread over [0, 3).
  lp = np.where(rng.random((B, T)) < 0.7, lp - 6.0, lp).astype(np.float32)
  adv = np.where(rng.random((B, T)) < 0.7, np.abs(adv), adv).astype(np.float32)
  entropy = np.where(_valid(mask), rng.random((B, T)) * 3.0, np.nan).astype(np.float32)
  return lp, old, adv, mask, entropy


def _ref_stapo_keep(lp, adv, mask, entropy, tau_p, tau_h):
  lp64, adv64, h64 = _clean64(mask, lp, adv, entropy)
  spurious = _valid(mask) & (adv64 > 0) & (np.exp(lp64) < tau_p) & (h64 < tau_h)
  return _valid(mask) & ~spurious, spurious


@pytest.mark.parametrize("tau_h, quantile", [(1.5, None), (None, 0.05), (None, 0.5), (None, 1.0)])
def test_stapo_mask_matches_reference(tau_h, quantile):
  lp, _, adv, mask, entropy = _stapo_inputs(0)
  kw = dict(entropy=entropy, prob_threshold=0.01, entropy_threshold=tau_h)
  if quantile is not None:
    kw["entropy_quantile"] = quantile
    tau_h = np.quantile(np.asarray(entropy, np.float64)[_valid(mask)], quantile)
  keep, metrics = selective_surrogates.stapo_mask(lp, adv, mask, **kw)
  want_keep, spurious = _ref_stapo_keep(lp, adv, mask, entropy, 0.01, tau_h)
  np.testing.assert_array_equal(np.asarray(keep), want_keep.astype(np.float32))
  np.testing.assert_allclose(metrics["stapo_entropy_threshold"], tau_h, rtol=1e-6)
  np.testing.assert_allclose(metrics["stapo_masked_frac"], spurious.sum() / N_VALID, rtol=1e-6)
  if quantile is None or quantile >= 0.5:
    assert spurious.any()


def test_stapo_mask_hand_worked():
  # p = [0.005, 0.005, 0.5, 0.005, 0.005], H = [0.1, 2.0, 0.1, 0.1, 0.1], A = [+1, +1, +1, −1, +1],
  # mask = [1, 1, 1, 1, 0], τ_p = 0.01, τ_h = 1.0: only token 0 is spurious (token 1 has high
  # entropy, token 2 high probability, token 3 negative advantage, token 4 is padding).
  lp = np.log(np.array([[0.005, 0.005, 0.5, 0.005, 0.005]], np.float32))
  entropy = np.array([[0.1, 2.0, 0.1, 0.1, 0.1]], np.float32)
  adv = np.array([[1.0, 1.0, 1.0, -1.0, 1.0]], np.float32)
  mask = np.array([[1.0, 1.0, 1.0, 1.0, 0.0]], np.float32)
  keep, metrics = selective_surrogates.stapo_mask(
    lp, adv, mask, entropy=entropy, entropy_threshold=1.0
  )
  np.testing.assert_array_equal(keep, [[0.0, 1.0, 1.0, 1.0, 0.0]])
  np.testing.assert_allclose(metrics["stapo_masked_frac"], 1 / 4)
  # Quantile threshold: valid H = [0.1, 2.0, 0.1, 0.1], sorted [0.1, 0.1, 0.1, 2.0];
  # q = 0.5 → position 1.5 → 0.1 + 0.5·(0.1 − 0.1) = 0.1, and H < 0.1 holds nowhere.
  keep, metrics = selective_surrogates.stapo_mask(
    lp, adv, mask, entropy=entropy, entropy_quantile=0.5
  )
  np.testing.assert_allclose(metrics["stapo_entropy_threshold"], 0.1, rtol=1e-6)
  np.testing.assert_array_equal(keep, mask)


def test_stapo_loss_is_ppo_renormalised_over_kept_tokens():
  lp, old, adv, mask, entropy = _stapo_inputs(1)
  kw = dict(entropy=entropy, entropy_threshold=2.0)
  loss, metrics = selective_surrogates.stapo(lp, old, adv, mask, **kw)
  keep, _ = selective_surrogates.stapo_mask(lp, adv, mask, **kw)
  want_keep, spurious = _ref_stapo_keep(lp, adv, mask, entropy, 0.01, 2.0)
  assert spurious.any()
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  ppo, coef, _ = _ref_ppo(lp64, old64, adv64)
  _assert_close(loss, np.where(want_keep, ppo, 0.0), mask)
  _assert_close(
    _sum_grad(selective_surrogates.stapo, lp, old, adv, mask, **kw),
    np.where(want_keep, coef, 0.0),
    mask,
  )
  # The composer aggregates with the returned mask: token-mean over the kept tokens only.
  total, denom = aggregation.token_mean(loss, keep)
  np.testing.assert_allclose(total / denom, ppo[want_keep].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["stapo_masked_frac"], spurious.sum() / N_VALID, rtol=1e-6)


def test_stapo_can_threshold_old_probabilities():
  lp, old, adv, mask, entropy = _stapo_inputs(2)
  old = (old - 6.0).astype(np.float32)  # Every old probability is tiny.
  kw = dict(entropy=entropy, entropy_threshold=2.0, use_old_probs=True)
  _, metrics = selective_surrogates.stapo(lp, old, adv, mask, **kw)
  _, spurious = _ref_stapo_keep(old, adv, mask, entropy, 0.01, 2.0)
  np.testing.assert_allclose(metrics["stapo_masked_frac"], spurious.sum() / N_VALID, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Clip-Cov.
# ---------------------------------------------------------------------------------------------

CLIP_COV_KW = dict(clip_cov_ratio=0.2, clip_cov_lb=0.05, clip_cov_ub=5.0)  # k = ⌊0.2·11⌋ = 2.


def _clip_cov_reference(lp, old, adv, mask, lb, ub):
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  ppo, coef, clipped = _ref_ppo(lp64, old64, adv64)
  cov = _ref_cov(lp64, adv64, mask)
  candidates = _valid(mask) & ~clipped & (cov > lb) & (cov < ub)
  return ppo, coef, candidates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_detaches_k_random_candidates(seed):
  lp, old, adv, mask = _inputs(40, adv_scale=2.0)
  kw = dict(key=jax.random.key(seed), **CLIP_COV_KW)
  loss, metrics = selective_surrogates.clip_cov(lp, old, adv, mask, **kw)
  ppo, coef, candidates = _clip_cov_reference(lp, old, adv, mask, 0.05, 5.0)
  assert candidates.sum() > 2  # The draw must have a choice to make.
  loss = np.asarray(loss, np.float64)
  v = _valid(mask)
  # Selected = valid tokens whose loss was zeroed although PPO's is not.
  selected = v & (loss == 0.0) & (ppo != 0.0)
  assert selected.sum() == 2 and np.all(candidates[selected])
  _assert_close(loss, np.where(selected, 0.0, ppo), mask)
  grad = _sum_grad(selective_surrogates.clip_cov, lp, old, adv, mask, **kw)
  _assert_close(grad, np.where(selected, 0.0, coef), mask)
  np.testing.assert_allclose(metrics["cov_selected_frac"], 2 / N_VALID, rtol=1e-6)
  # The same key draws the same tokens.
  again, _ = selective_surrogates.clip_cov(lp, old, adv, mask, **kw)
  np.testing.assert_array_equal(np.asarray(again), np.asarray(loss, np.float32))


def test_clip_cov_draw_depends_on_the_key():
  lp, old, adv, mask = _inputs(40, adv_scale=2.0)
  draws = set()
  for seed in range(8):
    loss, _ = selective_surrogates.clip_cov(
      lp, old, adv, mask, key=jax.random.key(seed), **CLIP_COV_KW
    )
    draws.add(tuple(np.flatnonzero(np.asarray(loss) == 0.0)))
  assert len(draws) > 1


def test_clip_cov_selects_every_candidate_when_k_is_large():
  # ratio = 1: k = 11 >= |C|, so the result no longer depends on the key: full reference check.
  lp, old, adv, mask = _inputs(41, adv_scale=2.0)
  kw = dict(key=jax.random.key(0), clip_cov_ratio=1.0, clip_cov_lb=0.05, clip_cov_ub=5.0)
  loss, _ = selective_surrogates.clip_cov(lp, old, adv, mask, **kw)
  ppo, coef, candidates = _clip_cov_reference(lp, old, adv, mask, 0.05, 5.0)
  assert candidates.any()
  _assert_close(loss, np.where(candidates, 0.0, ppo), mask)
  grad = _sum_grad(selective_surrogates.clip_cov, lp, old, adv, mask, **kw)
  _assert_close(grad, np.where(candidates, 0.0, coef), mask)


def test_clip_cov_hand_worked():
  # One row, on-policy (r = 1, nothing clipped by PPO), logπ = [−1, −2, −3], A = [3, 0, −3]:
  # mean A = 0, mean logπ = −2, cov = [3·1, 0·0, −3·(−1)] = [3, 0, 3].
  # Band (1, 5): candidates {0, 2}; ratio 0.5: k = ⌊0.5·3⌋ = 1, so one of them is detached.
  lp = np.array([[-1.0, -2.0, -3.0]], np.float32)
  adv = np.array([[3.0, 0.0, -3.0]], np.float32)
  mask = np.ones((1, 3), np.float32)
  loss, metrics = selective_surrogates.clip_cov(
    lp, lp, adv, mask, key=jax.random.key(0), clip_cov_ratio=0.5
  )
  loss = np.asarray(loss)[0]
  # PPO loss on-policy is −A: [−3, 0, 3]; exactly one of tokens 0 and 2 is zeroed.
  assert sorted([loss[0], loss[2]]) in ([-3.0, 0.0], [0.0, 3.0])
  np.testing.assert_allclose(metrics["cov_selected_frac"], 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["cov_mean"], 2.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# KL-Cov.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio, k", [(2e-4, 1), (0.2, 2), (0.5, 5), (1.0, 11)])
def test_kl_cov_matches_reference(ratio, k):
  lp, old, adv, mask = _inputs(50)
  kw = dict(kl_cov_ratio=ratio, kl_coef=0.7)
  loss, metrics = selective_surrogates.kl_cov(lp, old, adv, mask, **kw)
  lp64, old64, adv64 = _clean64(mask, lp, old, adv)
  v = _valid(mask)
  cov = np.where(v, _ref_cov(lp64, adv64, mask), -np.inf)
  top = np.argsort(-cov, axis=None, kind="stable")[:k]
  selected = np.zeros(B * T, bool)
  selected[top] = True
  selected = selected.reshape(B, T)
  d = lp64 - old64
  r = np.exp(d)
  # No ratio clipping at all; |Δ| is added on the k largest-covariance tokens.
  _assert_close(loss, -adv64 * r + np.where(selected, 0.7 * np.abs(d), 0.0), mask)
  grad = _sum_grad(selective_surrogates.kl_cov, lp, old, adv, mask, **kw)
  _assert_close(grad, -adv64 * r + np.where(selected, 0.7 * np.sign(d), 0.0), mask)
  np.testing.assert_allclose(metrics["cov_selected_frac"], k / N_VALID, rtol=1e-6)
  np.testing.assert_allclose(metrics["abs_kl"], np.abs(d)[v].mean(), rtol=RTOL)


def test_kl_cov_hand_worked():
  # logπ = [−1, −2, −3], A = [3, 0, −1]: mean A = 2/3, mean logπ = −2,
  # cov = [(3 − 2/3)·1, (−2/3)·0, (−1 − 2/3)·(−1)] = [2.333, 0, 1.667]: the top-1 is token 0.
  # Δ = [0.5, −0.5, 0.5] (old = logπ − Δ); r = [e^0.5, e^−0.5, e^0.5], kl_coef = 1:
  # ℓ = [−3·e^0.5 + 0.5, 0, +e^0.5] = [−4.446164, 0, 1.648721].
  lp = np.array([[-1.0, -2.0, -3.0]], np.float32)
  old = lp - np.array([[0.5, -0.5, 0.5]], np.float32)
  adv = np.array([[3.0, 0.0, -1.0]], np.float32)
  loss, _ = selective_surrogates.kl_cov(lp, old, adv, np.ones((1, 3), np.float32))
  np.testing.assert_allclose(loss, [[-4.446164, 0.0, 1.648721]], rtol=1e-6)


def test_kl_cov_on_policy_gradient_equals_reinforce():
  # |Δ| has gradient sign(Δ) = 0 at Δ = 0 (torch's convention), so on-policy KL-Cov is REINFORCE.
  lp, _, adv, mask = _inputs(51)
  got = _sum_grad(selective_surrogates.kl_cov, lp, lp, adv, mask, kl_cov_ratio=1.0)
  want = _sum_grad(surrogates.reinforce, lp, lp, adv, mask)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Invariants shared by the module.
# ---------------------------------------------------------------------------------------------

_ENTROPY = np.abs(np.random.default_rng(7).normal(size=(B, T))).astype(np.float32)
FNS = {
  "stapo": functools.partial(selective_surrogates.stapo, entropy=_ENTROPY),
  "clip_cov": functools.partial(
    selective_surrogates.clip_cov, key=jax.random.key(3), clip_cov_ratio=0.3, clip_cov_lb=0.05
  ),
  "kl_cov": functools.partial(selective_surrogates.kl_cov, kl_cov_ratio=0.3),
}


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
    (FNS["stapo"], dict(prob_threshold=0.0), "prob_threshold"),
    (FNS["stapo"], dict(entropy_quantile=1.5), "entropy_quantile"),
    (FNS["stapo"], dict(entropy_threshold=-1.0), "entropy_threshold"),
    (FNS["stapo"], dict(epsilon_low=-0.2), "epsilon_low"),
    (FNS["clip_cov"], dict(key=None), "key"),
    (FNS["clip_cov"], dict(clip_cov_ratio=0.0), "clip_cov_ratio"),
    (FNS["clip_cov"], dict(clip_cov_ub=0.01), "clip_cov_ub"),
    (FNS["clip_cov"], dict(epsilon_high=-0.2), "epsilon_high"),
    (FNS["kl_cov"], dict(kl_cov_ratio=1.5), "kl_cov_ratio"),
    (FNS["kl_cov"], dict(kl_coef=-1.0), "kl_coef"),
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


def test_stapo_entropy_shape_is_checked():
  lp, old, adv, mask = _inputs(32)
  with pytest.raises(ValueError, match="entropy"):
    selective_surrogates.stapo(lp, old, adv, mask, entropy=_ENTROPY[:, :-1])
  with pytest.raises(ValueError, match="entropy"):
    selective_surrogates.stapo_mask(lp, adv, mask, entropy=_ENTROPY[:-1])
