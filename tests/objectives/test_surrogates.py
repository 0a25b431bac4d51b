"""Tests for grpojax/objectives/surrogates.py (REINFORCE, PPO-clip, GSPO, GSPO-token, GMPO)."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import surrogates
from tests.objectives import contract

B, T = 4, 6
LENGTHS = (6, 4, 1, 0)  # Row 3 is all padding.
RTOL, ATOL = 1e-5, 1e-6


def _mask():
  return (np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.float32)


def _inputs(seed, *, spread=0.5, per_token_adv=False, garbage=True):
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


def _f64(*arrays):
  return tuple(np.asarray(a, np.float64) for a in arrays)


def _sum_grad(fn, lp, old, adv, mask, **kw):
  """∂(Σ_bt loss_bt)/∂logprobs."""
  return jax.grad(lambda x: jnp.sum(fn(x, old, adv, mask, **kw)[0]))(jnp.asarray(lp))


def _row_mean_grad(fn, lp, old, adv, mask, **kw):
  """∂(Σ_b (1/|y_b|) Σ_t loss_bt)/∂logprobs, i.e. the seq_mean_token_mean numerator."""

  def objective(x):
    loss = fn(x, old, adv, mask, **kw)[0]
    return jnp.sum(jnp.sum(loss, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0))

  return jax.grad(objective)(jnp.asarray(lp))


def _valid(mask):
  return np.asarray(mask) > 0


def _assert_close(got, want, mask=None):
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  if mask is not None:
    want = np.where(_valid(mask), want, 0.0)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def _ref_ratio_metrics(lp, old, mask):
  v = _valid(mask)
  d = np.clip(lp - old, -20, 20)[v]
  r = np.exp(d)
  return {
    "ratio_mean": r.mean(),
    "ratio_max": r.max(),
    "ratio_min": r.min(),
    "approx_kl": (r - 1 - d).mean(),
  }


# ---------------------------------------------------------------------------------------------
# REINFORCE.
# ---------------------------------------------------------------------------------------------


def test_reinforce_matches_reference_and_gradient():
  lp, old, adv, mask = _inputs(0, per_token_adv=True)
  loss, metrics = surrogates.reinforce(lp, old, adv, mask)
  lp64, old64, adv64 = _f64(lp, old, adv)
  _assert_close(loss, -adv64 * lp64, mask)
  _assert_close(_sum_grad(surrogates.reinforce, lp, old, adv, mask), -adv64, mask)
  for k, v in _ref_ratio_metrics(lp64, old64, mask).items():
    np.testing.assert_allclose(metrics[k], v, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# PPO-clip.
# ---------------------------------------------------------------------------------------------


def _ref_ppo(lp, old, adv, mask, eps_low, eps_high, c):
  """float64 PPO-clip from the formula; returns (loss, dloss/dlogp, clip_low, clip_high)."""
  lp, old, adv = _f64(lp, old, adv)
  v = _valid(mask)
  lp, old, adv = (np.where(v, a, 0.0) for a in (lp, old, adv))
  eps_high = eps_low if eps_high is None else eps_high
  r = np.exp(np.clip(lp - old, -20, 20))
  loss = np.maximum(-adv * r, -adv * np.clip(r, 1 - eps_low, 1 + eps_high))
  clip_low = (adv < 0) & (r < 1 - eps_low)
  clip_high = (adv > 0) & (r > 1 + eps_high)
  dual = np.zeros_like(v)
  if c is not None:
    loss = np.where(adv < 0, np.minimum(loss, -c * adv), loss)
    dual = (adv < 0) & (r > c)
  # Analytic coefficient: −A·r inside the trust region, 0 where any clip binds.
  grad = np.where(clip_low | clip_high | dual, 0.0, -adv * r)
  return loss, grad, clip_low, clip_high, dual


@pytest.mark.parametrize(
  "eps_low, eps_high, c",
  [(0.2, None, None), (0.2, 0.28, None), (0.2, 0.28, 3.0), (0.1, 0.5, 1.5)],
)
def test_ppo_clip_matches_reference(eps_low, eps_high, c):
  lp, old, adv, mask = _inputs(1, spread=1.0, per_token_adv=True)
  kw = dict(epsilon_low=eps_low, epsilon_high=eps_high, dual_clip_c=c)
  loss, metrics = surrogates.ppo_clip(lp, old, adv, mask, **kw)
  want, grad, clip_low, clip_high, dual = _ref_ppo(lp, old, adv, mask, eps_low, eps_high, c)
  _assert_close(loss, want, mask)
  _assert_close(_sum_grad(surrogates.ppo_clip, lp, old, adv, mask, **kw), grad, mask)
  v = _valid(mask)
  np.testing.assert_allclose(metrics["clip_frac_low"], clip_low[v].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["clip_frac_high"], clip_high[v].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["dual_clip_frac"], dual[v].mean(), rtol=RTOL)
  # The test inputs must exercise both clips, or the test proves little.
  assert clip_low[v].any() and clip_high[v].any()
  if c is not None:
    assert dual[v].any()


def test_ppo_clip_hand_worked():
  # Token 0: r = 1.5, A = +1, ε_high = 0.28: loss = max(−1.5, −1.28) = −1.28, clipped (grad 0).
  # Token 1: r = 0.5, A = −2, ε_low = 0.2: loss = max(2·0.5, 2·0.8) = 1.6, clipped (grad 0).
  # Token 2: r = 4.0, A = −1: max(4, 1.28) = 4, dual clip c = 3: min(4, 3) = 3 (grad 0).
  # Token 3: r = 1.1, A = +2 (inside): loss = −2.2, grad = −A·r = −2.2.
  # Token 4: r = 0.5, A = +1 (the low side does not clip positive A): loss = −0.5, grad −0.5.
  r = np.array([[1.5, 0.5, 4.0, 1.1, 0.5]], np.float32)
  adv = np.array([[1.0, -2.0, -1.0, 2.0, 1.0]], np.float32)
  old = np.full_like(r, -1.0)
  lp = old + np.log(r)
  mask = np.ones_like(r)
  kw = dict(epsilon_low=0.2, epsilon_high=0.28, dual_clip_c=3.0)
  loss, metrics = surrogates.ppo_clip(lp, old, adv, mask, **kw)
  np.testing.assert_allclose(loss, [[-1.28, 1.6, 3.0, -2.2, -0.5]], rtol=1e-6)
  grad = _sum_grad(surrogates.ppo_clip, lp, old, adv, mask, **kw)
  np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0, -2.2, -0.5]], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(metrics["clip_frac_high"], 1 / 5)
  np.testing.assert_allclose(metrics["clip_frac_low"], 1 / 5)
  np.testing.assert_allclose(metrics["dual_clip_frac"], 1 / 5)


def test_on_policy_ppo_gradient_equals_reinforce():
  lp, _, adv, mask = _inputs(2, per_token_adv=True)
  for kw in (dict(), dict(epsilon_low=0.2, epsilon_high=0.28, dual_clip_c=3.0)):
    got = _sum_grad(surrogates.ppo_clip, lp, lp, adv, mask, **kw)
    want = _sum_grad(surrogates.reinforce, lp, lp, adv, mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    got = _sum_grad(surrogates.gspo_token, lp, lp, adv, mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
  log_r=st.floats(-3.0, 3.0),
  adv=st.floats(-5.0, 5.0),
  eps_low=st.floats(0.0, 0.9),
  eps_high=st.floats(0.0, 2.0),
)
def test_ppo_clip_is_a_pessimistic_bound(log_r, adv, eps_low, eps_high):
  # PPO's objective is a lower bound of the unclipped IS objective, so the loss is an upper bound
  # of −A·r, and its gradient never exceeds the unclipped one −A·r in magnitude.
  lp = np.array([[-1.0 + log_r]], np.float32)
  old = np.array([[-1.0]], np.float32)
  a = np.array([[adv]], np.float32)
  mask = np.ones((1, 1), np.float32)
  kw = dict(epsilon_low=eps_low, epsilon_high=eps_high)
  loss, _ = surrogates.ppo_clip(lp, old, a, mask, **kw)
  r = np.exp(np.float64(lp[0, 0]) - np.float64(old[0, 0]))
  assert float(loss[0, 0]) >= -adv * r - 1e-5 * (1 + abs(adv * r))
  grad = _sum_grad(surrogates.ppo_clip, lp, old, a, mask, **kw)
  assert abs(float(grad[0, 0])) <= abs(adv * r) * (1 + 1e-5) + 1e-6


# ---------------------------------------------------------------------------------------------
# GSPO / GSPO-token.
# ---------------------------------------------------------------------------------------------


def _ref_gspo(lp, old, adv, mask, eps_low, eps_high):
  """float64 GSPO from the formula, row by row; returns (loss, seq ratio s, clipped rows)."""
  lp, old, adv = _f64(lp, old, adv)
  loss = np.zeros((B, T))
  s_b = np.ones(B)
  for b in range(B):
    n = int(mask[b].sum())
    if n == 0:
      continue
    s = np.exp(min(np.mean(np.clip(lp[b, :n] - old[b, :n], -20, 20)), 10.0))
    a = adv[b, :n]
    loss[b, :n] = np.maximum(-a * s, -a * np.clip(s, 1 - eps_low, 1 + eps_high))
    s_b[b] = s
  return loss, s_b


@pytest.mark.parametrize("eps_low, eps_high", [(3e-4, 4e-4), (0.05, 0.1)])
def test_gspo_matches_reference(eps_low, eps_high):
  lp, old, adv, mask = _inputs(3, spread=0.2, per_token_adv=True)
  kw = dict(epsilon_low=eps_low, epsilon_high=eps_high)
  loss, metrics = surrogates.gspo(lp, old, adv, mask, **kw)
  want, s_b = _ref_gspo(lp, old, adv, mask, eps_low, eps_high)
  _assert_close(loss, want, mask)
  rows = np.asarray(LENGTHS) > 0
  np.testing.assert_allclose(metrics["seq_ratio_mean"], s_b[rows].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["seq_ratio_max"], s_b[rows].max(), rtol=RTOL)
  loss_tok, _ = surrogates.gspo_token(lp, old, adv, mask, **kw)
  _assert_close(loss_tok, want, mask)


def test_gspo_gradient_is_sequence_level():
  # Sequence-constant A, wide band so that some rows are inside and some clipped:
  # ∂/∂logπ_{b,t} of Σ_b mean_t ℓ_{b,t} = −A_b s_b / |y_b| inside the band, 0 when clipped.
  lp, old, adv, mask = _inputs(4, spread=0.3)
  eps_low, eps_high = 0.05, 0.1
  kw = dict(epsilon_low=eps_low, epsilon_high=eps_high)
  _, s_b = _ref_gspo(lp, old, adv, mask, eps_low, eps_high)
  a_b = np.asarray(adv, np.float64)[:, 0]
  clipped_b = ((a_b > 0) & (s_b > 1 + eps_high)) | ((a_b < 0) & (s_b < 1 - eps_low))
  lengths = np.maximum(np.asarray(LENGTHS), 1)
  coef_b = np.where(clipped_b, 0.0, -a_b * s_b / lengths)
  want = np.broadcast_to(coef_b[:, None], (B, T))
  _assert_close(_row_mean_grad(surrogates.gspo, lp, old, adv, mask, **kw), want, mask)
  rows = np.asarray(LENGTHS) > 0
  assert clipped_b[rows].any() and not clipped_b[rows].all()


def test_gspo_token_equals_gspo_with_sequence_constant_advantages():
  lp, old, adv, mask = _inputs(5, spread=0.3)
  for kw in (dict(), dict(epsilon_low=0.05, epsilon_high=0.1), dict(epsilon_low=1.0)):
    loss_seq, m_seq = surrogates.gspo(lp, old, adv, mask, **kw)
    loss_tok, m_tok = surrogates.gspo_token(lp, old, adv, mask, **kw)
    np.testing.assert_allclose(loss_tok, loss_seq, rtol=1e-6, atol=1e-7)
    g_seq = _row_mean_grad(surrogates.gspo, lp, old, adv, mask, **kw)
    g_tok = _row_mean_grad(surrogates.gspo_token, lp, old, adv, mask, **kw)
    np.testing.assert_allclose(g_tok, g_seq, rtol=1e-5, atol=1e-7)
    for k in m_seq:
      np.testing.assert_allclose(m_tok[k], m_seq[k], rtol=1e-6)


def test_gspo_token_gradient_is_per_token():
  # ∂ℓ_{b,t}/∂logπ_{b,t} = −A_{b,t} s_b where token t is not clipped (per-token A).
  lp, old, adv, mask = _inputs(6, spread=0.3, per_token_adv=True)
  eps_low, eps_high = 0.05, 0.1
  _, s_b = _ref_gspo(lp, old, adv, mask, eps_low, eps_high)
  a = np.asarray(adv, np.float64)
  s = s_b[:, None]
  clipped = ((a > 0) & (s > 1 + eps_high)) | ((a < 0) & (s < 1 - eps_low))
  want = np.where(clipped, 0.0, -a * s)
  got = _sum_grad(
    surrogates.gspo_token, lp, old, adv, mask, epsilon_low=eps_low, epsilon_high=eps_high
  )
  _assert_close(got, want, mask)


def test_gspo_hand_worked():
  # Both rows: Δ = [0.1, 0.3], s = exp(mean Δ) = exp(0.2) = 1.221403; ε_low = 0.3, ε_high = 0.1.
  # Row 0, A = +1: s > 1 + 0.1, the clip binds: ℓ = max(−1.2214, −1.1) = −1.1 on both tokens.
  # Row 1, A = −1: ℓ = max(s, clip(s, 0.7, 1.1)) = max(1.2214, 1.1) = s (no clip on this side).
  old = np.full((2, 2), -1.0, np.float32)
  lp = old + np.array([[0.1, 0.3], [0.1, 0.3]], np.float32)
  adv = np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32)
  mask = np.ones((2, 2), np.float32)
  loss, _ = surrogates.gspo(lp, old, adv, mask, epsilon_low=0.3, epsilon_high=0.1)
  s = np.exp(0.2)
  np.testing.assert_allclose(loss, [[-1.1, -1.1], [s, s]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# GMPO.
# ---------------------------------------------------------------------------------------------


def _ref_gmpo(lp, old, adv, mask, eps_low, eps_high):
  """float64 GMPO: (loss, d(row-mean objective)/dlogp)."""
  lp, old, adv = _f64(lp, old, adv)
  loss = np.zeros((B, T))
  grad = np.zeros((B, T))
  for b in range(B):
    n = int(mask[b].sum())
    if n == 0:
      continue
    d = np.clip(lp[b, :n] - old[b, :n], -20, 20)
    a = adv[b, :n]
    d_tilde = np.where(a > 0, np.minimum(d, eps_high), np.where(a < 0, np.maximum(d, -eps_low), 0))
    ratio = np.exp(d_tilde.mean())
    a_bar = a.mean()
    loss[b, :n] = -a_bar * ratio
    free = ((a > 0) & (d < eps_high)) | ((a < 0) & (d > -eps_low))
    # Row-mean objective of a row-constant loss is L_b itself: ∂L_b/∂Δ_t = −Ā R / n on free Δ_t.
    grad[b, :n] = np.where(free, -a_bar * ratio / n, 0.0)
  return loss, grad


@pytest.mark.parametrize("per_token_adv", [False, True])
def test_gmpo_matches_reference(per_token_adv):
  lp, old, adv, mask = _inputs(7, spread=0.5, per_token_adv=per_token_adv)
  kw = dict(epsilon_low=0.4, epsilon_high=0.3)
  loss, _ = surrogates.gmpo(lp, old, adv, mask, **kw)
  want, grad = _ref_gmpo(lp, old, adv, mask, 0.4, 0.3)
  _assert_close(loss, want, mask)
  _assert_close(_row_mean_grad(surrogates.gmpo, lp, old, adv, mask, **kw), grad, mask)


def test_gmpo_hand_worked():
  # Δ = [0.2, 0.6], A = +1, log-space ε = 0.4: Δ̃ = [0.2, 0.4], R = exp(0.3), L = −exp(0.3).
  # With A = −1 the low side clips instead: Δ = [−0.2, −0.6] → Δ̃ = [−0.2, −0.4], L = exp(−0.3).
  old = np.full((2, 2), -1.0, np.float32)
  lp = old + np.array([[0.2, 0.6], [-0.2, -0.6]], np.float32)
  adv = np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32)
  loss, metrics = surrogates.gmpo(lp, old, adv, np.ones((2, 2), np.float32))
  np.testing.assert_allclose(loss, [[-np.exp(0.3)] * 2, [np.exp(-0.3)] * 2], rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_frac_high"], 0.25)
  np.testing.assert_allclose(metrics["clip_frac_low"], 0.25)


# ---------------------------------------------------------------------------------------------
# Contract invariants for every surrogate of this module.
# ---------------------------------------------------------------------------------------------

FNS = {
  "reinforce": surrogates.reinforce,
  "ppo_clip": functools.partial(surrogates.ppo_clip, epsilon_high=0.28, dual_clip_c=3.0),
  "gspo": surrogates.gspo,
  "gspo_token": surrogates.gspo_token,
  "gmpo": surrogates.gmpo,
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_jit_and_vmap_match_eager(name):
  fn = FNS[name]
  batches = [_inputs(10 + i, per_token_adv=True) for i in range(3)]
  contract.assert_jit_and_vmap_match_eager(fn, batches)


@pytest.mark.parametrize("name", sorted(FNS))
def test_padding_is_zero_and_extreme_log_ratios_stay_finite(name):
  fn = FNS[name]
  lp, old, adv, mask = _inputs(20, per_token_adv=True)
  # Log-ratios of ±50 on valid tokens, garbage (±inf, NaN) on padding.
  old = np.where(_valid(mask), lp + np.where(np.arange(T) % 2 == 0, 50.0, -50.0), old)
  old = old.astype(np.float32)
  contract.assert_padding_is_zero_and_finite(fn, (lp, old, adv, mask), _valid(mask))


@pytest.mark.parametrize(
  "fn, kwargs, field",
  [
    (surrogates.ppo_clip, dict(epsilon_low=-0.1), "epsilon_low"),
    (surrogates.ppo_clip, dict(epsilon_high=-0.1), "epsilon_high"),
    (surrogates.ppo_clip, dict(dual_clip_c=1.0), "dual_clip_c"),
    (surrogates.ppo_clip, dict(epsilon_low=float("nan")), "epsilon_low"),
    (surrogates.ppo_clip, dict(epsilon_low="0.2"), "epsilon_low"),
    (surrogates.gspo, dict(epsilon_low=-1e-4), "epsilon_low"),
    (surrogates.gspo_token, dict(epsilon_high=-1e-4), "epsilon_high"),
    (surrogates.gmpo, dict(epsilon_low=-0.4), "epsilon_low"),
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


def test_traced_hyper_parameters_are_accepted():
  # A schedule may pass ε as a traced value; it cannot be validated eagerly but must work.
  lp, old, adv, mask = _inputs(32, per_token_adv=True)
  got = jax.jit(lambda e: surrogates.ppo_clip(lp, old, adv, mask, epsilon_low=e)[0])(0.2)
  want, *_ = _ref_ppo(lp, old, adv, mask, 0.2, None, None)
  _assert_close(got, want, mask)
