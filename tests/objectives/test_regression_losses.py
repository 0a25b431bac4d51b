"""Tests for grpojax/objectives/regression_losses.py (OAPL, FlowRL)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives
from grpojax.objectives import aggregation, regression_losses
from tests.objectives import contract

B, T = 4, 6
LENGTHS = (6, 4, 1, 0)  # Row 3 is all padding.
RTOL, ATOL = 1e-5, 1e-6


def _mask():
  return (np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.float32)


def _inputs(seed, *, spread=0.3, garbage=True):
  """Random [B, T] inputs (sequence-constant advantages) plus ref logprobs and log Z [B]."""
  rng = np.random.default_rng(seed)
  mask = _mask()
  logprobs = -np.abs(rng.normal(size=(B, T))) - 0.05
  old = logprobs + rng.normal(scale=spread, size=(B, T))
  ref = logprobs + rng.normal(scale=spread, size=(B, T))
  adv = np.repeat(rng.normal(size=(B, 1)), T, axis=1)
  log_z = rng.normal(size=B)
  if garbage:
    logprobs = np.where(mask > 0, logprobs, -np.inf)
    old = np.where(mask > 0, old, 1e30)
    ref = np.where(mask > 0, ref, np.inf)
    adv = np.where(mask > 0, adv, np.nan)
  f32 = lambda a: np.asarray(a, np.float32)
  return f32(logprobs), f32(old), f32(adv), f32(mask), f32(ref), f32(log_z)


def _valid(mask):
  return np.asarray(mask) > 0


def _clean64(mask, *arrays):
  return tuple(np.where(_valid(mask), np.asarray(a, np.float64), 0.0) for a in arrays)


def _row_mean(loss_bt, mask):
  """Σ_b (1/|y_b|) Σ_t loss_bt: the seq_mean_token_mean numerator, i.e. Σ_b L_b."""
  return jnp.sum(jnp.sum(loss_bt, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0))


def _assert_close(got, want, mask):
  want = np.where(_valid(mask), np.asarray(want, np.float64), 0.0)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL)


def _per_row(x_b):
  return np.broadcast_to(np.asarray(x_b)[:, None], (B, T))


# ---------------------------------------------------------------------------------------------
# OAPL.
# ---------------------------------------------------------------------------------------------


def _ref_oapl(lp, lag, adv, mask, beta2):
  """float64 OAPL per row: (L_b, residual_b, S_b)."""
  lp64, lag64, adv64 = _clean64(mask, lp, lag, adv)
  n = np.maximum(mask.sum(-1), 1)
  seq = (lp64 - lag64).sum(-1)  # Token SUM, no length normalisation.
  residual = beta2 * seq - adv64.sum(-1) / n
  return residual**2, residual, seq


@pytest.mark.parametrize("beta2", [1e-3, 0.5])
def test_oapl_matches_reference_and_gradient(beta2):
  lp, lag, adv, mask, _, _ = _inputs(0)
  loss, metrics = regression_losses.oapl_loss(lp, lag, adv, mask, beta2=beta2)
  want_b, residual_b, seq_b = _ref_oapl(lp, lag, adv, mask, beta2)
  _assert_close(loss, _per_row(want_b), mask)
  # ∂L_b/∂logπ_{b,t} = 2·β2·(β2·S_b − (r_b − V̂*)) on every valid token of row b.
  grad = jax.grad(
    lambda x: _row_mean(regression_losses.oapl_loss(x, lag, adv, mask, beta2=beta2)[0], mask)
  )(lp)
  _assert_close(grad, _per_row(2 * beta2 * residual_b), mask)
  rows = np.asarray(LENGTHS) > 0
  np.testing.assert_allclose(metrics["residual_mean"], residual_b[rows].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["seq_log_ratio_mean"], seq_b[rows].mean(), rtol=RTOL)
  # seq_mean_token_mean aggregation gives the paper's mean_i L_i.
  total, denom = aggregation.seq_mean_token_mean(loss, mask)
  np.testing.assert_allclose(total / denom, want_b[rows].mean(), rtol=RTOL)


def test_oapl_hand_worked():
  # β2 = 0.5, Δ = [1, 2]: S = 3; r − V̂* = 1: residual = 0.5·3 − 1 = 0.5, L = 0.25;
  # ∂L/∂logπ_t = 2·0.5·0.5 = 0.5 on both tokens.
  lag = np.array([[-2.0, -3.0]], np.float32)
  lp = lag + np.array([[1.0, 2.0]], np.float32)
  adv = np.ones((1, 2), np.float32)
  mask = np.ones((1, 2), np.float32)
  loss, _ = regression_losses.oapl_loss(lp, lag, adv, mask, beta2=0.5)
  np.testing.assert_allclose(loss, [[0.25, 0.25]], rtol=1e-6)
  grad = jax.grad(lambda x: regression_losses.oapl_loss(x, lag, adv, mask, beta2=0.5)[0][0, 0])(lp)
  np.testing.assert_allclose(grad, [[0.5, 0.5]], rtol=1e-6)


def test_oapl_keeps_the_regression_gradient_for_large_log_ratios():
  # No exp, so no clamp: a log-ratio of 50 still gets the full regression gradient.
  lag = np.array([[-1.0, -1.0]], np.float32)
  lp = lag + np.array([[50.0, 50.0]], np.float32)
  adv = np.zeros((1, 2), np.float32)
  mask = np.ones((1, 2), np.float32)
  loss, _ = regression_losses.oapl_loss(lp, lag, adv, mask, beta2=1e-3)
  # S = 100, residual = 0.1, L = 0.01, ∂L/∂logπ_t = 2·1e-3·0.1 = 2e-4.
  np.testing.assert_allclose(loss, [[0.01, 0.01]], rtol=1e-5)
  grad = jax.grad(lambda x: regression_losses.oapl_loss(x, lag, adv, mask)[0][0, 0])(lp)
  np.testing.assert_allclose(grad, [[2e-4, 2e-4]], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# FlowRL.
# ---------------------------------------------------------------------------------------------


def _ref_flowrl(lp, old, adv, mask, ref, log_z, beta, clip):
  """float64 FlowRL per row: (L_b, δ_b, w_b)."""
  lp64, old64, adv64, ref64 = _clean64(mask, lp, old, adv, ref)
  n = np.maximum(mask.sum(-1), 1)
  delta = log_z + lp64.sum(-1) / n - beta * adv64.sum(-1) / n - ref64.sum(-1) / n
  w = np.exp(np.clip(np.clip(lp64 - old64, -20, 20).sum(-1), -20, 20))
  if clip is not None:
    w = np.clip(w, 1 - clip, 1 + clip)
  return w * delta**2, delta, w


@pytest.mark.parametrize("beta, clip", [(15.0, None), (2.0, 0.2)])
def test_flowrl_matches_reference_and_gradients(beta, clip):
  lp, old, adv, mask, ref, log_z = _inputs(1)
  kw = dict(ref_logprobs=ref, beta=beta, is_weight_clip=clip)
  loss, metrics = regression_losses.flowrl_loss(lp, old, adv, mask, log_z=log_z, **kw)
  want_b, delta_b, w_b = _ref_flowrl(lp, old, adv, mask, ref, log_z, beta, clip)
  _assert_close(loss, _per_row(want_b), mask)

  def objective(x, z):
    return _row_mean(regression_losses.flowrl_loss(x, old, adv, mask, log_z=z, **kw)[0], mask)

  g_lp, g_z = jax.grad(objective, argnums=(0, 1))(lp, log_z)
  n = np.maximum(mask.sum(-1), 1)
  # The IS weight is detached: ∂L/∂logπ_t = 2wδ/|y|, ∂L/∂log Z = 2wδ (0 for all-padding rows).
  _assert_close(g_lp, _per_row(2 * w_b * delta_b / n), mask)
  rows = np.asarray(LENGTHS) > 0
  np.testing.assert_allclose(g_z, np.where(rows, 2 * w_b * delta_b, 0.0), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(metrics["tb_residual_mean"], delta_b[rows].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["is_weight_mean"], w_b[rows].mean(), rtol=RTOL)
  np.testing.assert_allclose(metrics["log_z_mean"], log_z[rows].mean(), rtol=RTOL)
  if clip is not None:
    assert np.any(w_b[rows] == 1 + clip) or np.any(w_b[rows] == 1 - clip)


def test_flowrl_hand_worked():
  # logπ = [−1, −3] (mean −2), logπ_ref = [−1.5, −2.5] (mean −2), Â = 0.1, β = 15, log Z = 2:
  # δ = 2 + (−2) − 15·0.1 − (−2) = 0.5. Δ = [0.1, 0.1]: w = e^{0.2} = 1.221403 (token SUM).
  # L = 1.221403·0.25 = 0.305351; with is_weight_clip = 0.2: w = 1.2, L = 0.3.
  lp = np.array([[-1.0, -3.0]], np.float32)
  old = lp - 0.1
  ref = np.array([[-1.5, -2.5]], np.float32)
  adv = np.full((1, 2), 0.1, np.float32)
  mask = np.ones((1, 2), np.float32)
  log_z = np.array([2.0], np.float32)
  loss, _ = regression_losses.flowrl_loss(lp, old, adv, mask, log_z=log_z, ref_logprobs=ref)
  np.testing.assert_allclose(loss, [[0.305351, 0.305351]], rtol=1e-5)
  loss, _ = regression_losses.flowrl_loss(
    lp, old, adv, mask, log_z=log_z, ref_logprobs=ref, is_weight_clip=0.2
  )
  np.testing.assert_allclose(loss, [[0.3, 0.3]], rtol=1e-5)
  # is_weight_max = 1.1 (a verl port caps at 10; same rule): w = min(1.221403, 1.1), L = 0.275.
  loss, _ = regression_losses.flowrl_loss(
    lp, old, adv, mask, log_z=log_z, ref_logprobs=ref, is_weight_max=1.1
  )
  np.testing.assert_allclose(loss, [[0.275, 0.275]], rtol=1e-5)
  with pytest.raises(ValueError, match="is_weight_max"):
    regression_losses.flowrl_loss(
      lp, old, adv, mask, log_z=log_z, ref_logprobs=ref, is_weight_max=0
    )


def test_flowrl_recipe_log_reward_is_the_raw_reward():
  # log_reward="reward": the group's rewards [1, 0] enter δ as they are, not z-scored.
  config = objectives.default_config("flowrl")
  config.log_reward = "reward"
  raw = objectives.make(config, group_size=2)
  inputs = objectives.GroupInputs(mask=jnp.ones((2, 3), jnp.float32))
  adv, _ = raw.advantages(jnp.array([[1.0, 0.0]]), raw.init(), inputs)
  # Every token of a row carries its reward (z-scored it would be ±0.707).
  np.testing.assert_allclose(adv, [[1.0] * 3, [0.0] * 3])


# ---------------------------------------------------------------------------------------------
# Invariants.
# ---------------------------------------------------------------------------------------------


def _oapl(lp, old, adv, mask, ref, log_z):
  del ref, log_z
  return regression_losses.oapl_loss(lp, old, adv, mask, beta2=0.01)


def _flowrl(lp, old, adv, mask, ref, log_z):
  return regression_losses.flowrl_loss(lp, old, adv, mask, log_z=log_z, ref_logprobs=ref)


FNS = {"oapl_loss": _oapl, "flowrl_loss": _flowrl}


@pytest.mark.parametrize("name", sorted(FNS))
def test_jit_and_vmap_match_eager(name):
  fn = FNS[name]
  batches = [_inputs(10 + i) for i in range(3)]
  contract.assert_jit_and_vmap_match_eager(fn, batches)


@pytest.mark.parametrize("name", sorted(FNS))
def test_padding_is_zero_and_extreme_log_ratios_stay_finite(name):
  fn = FNS[name]
  lp, old, adv, mask, ref, log_z = _inputs(20)
  shift = np.where(np.arange(T) % 2 == 0, 50.0, -50.0)
  old = np.where(_valid(mask), lp + shift, old).astype(np.float32)
  ref = np.where(_valid(mask), lp - shift, ref).astype(np.float32)
  contract.assert_padding_is_zero_and_finite(fn, (lp, old, adv, mask, ref, log_z), _valid(mask))


@pytest.mark.parametrize(
  "name, kwargs, field",
  [
    ("oapl_loss", dict(beta2=0.0), "beta2"),
    ("oapl_loss", dict(beta2=-1.0), "beta2"),
    ("flowrl_loss", dict(beta=0.0), "beta"),
    ("flowrl_loss", dict(is_weight_clip=1.0), "is_weight_clip"),
    ("flowrl_loss", dict(is_weight_clip=-0.1), "is_weight_clip"),
  ],
)
def test_bad_hyper_parameters_raise(name, kwargs, field):
  lp, old, adv, mask, ref, log_z = _inputs(30)
  fn = getattr(regression_losses, name)
  if name == "flowrl_loss":
    fn = functools.partial(fn, log_z=log_z, ref_logprobs=ref)
  with pytest.raises(ValueError, match=field):
    fn(lp, old, adv, mask, **kwargs)
  with pytest.raises(ValueError, match=field):
    jax.jit(functools.partial(fn, **kwargs))(lp, old, adv, mask)


@pytest.mark.parametrize("name", sorted(FNS))
@pytest.mark.parametrize("field", ["old_logprobs", "advantages", "mask"])
def test_mismatched_shapes_raise(name, field):
  lp, old, adv, mask, ref, log_z = _inputs(31)
  args = dict(logprobs=lp, old_logprobs=old, advantages=adv, mask=mask)
  args[field] = args[field][:, :-1]
  fn = getattr(regression_losses, name)
  extra = dict(log_z=log_z, ref_logprobs=ref) if name == "flowrl_loss" else {}
  with pytest.raises(ValueError, match=field):
    fn(**args, **extra)


def test_flowrl_extra_shapes_are_checked():
  lp, old, adv, mask, ref, log_z = _inputs(32)
  with pytest.raises(ValueError, match="log_z"):
    regression_losses.flowrl_loss(lp, old, adv, mask, log_z=log_z[:, None], ref_logprobs=ref)
  with pytest.raises(ValueError, match="ref_logprobs"):
    regression_losses.flowrl_loss(lp, old, adv, mask, log_z=log_z, ref_logprobs=ref[:, :-1])
