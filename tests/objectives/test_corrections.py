"""Tests for grpojax/objectives/corrections.py."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import corrections

B, T = 5, 6
LN = math.log


def _reference(old, samp, mask, *, level, mode, high, low, seq_ratio):
  """TIS / MIS weights, mask and metrics in float64, from the published formulas."""
  old, samp, mask = (np.asarray(a, np.float64) for a in (old, samp, mask))
  valid = mask > 0
  delta = np.where(valid, old - samp, 0.0)
  token_log_ratio = np.clip(delta, -20, 20)
  if level == "token":
    log_ratio = token_log_ratio
    units_ratio, units_valid = np.exp(log_ratio), valid
  else:
    lengths = mask.sum(-1)
    seq = delta.sum(-1)
    if seq_ratio == "geometric":
      seq = seq / np.maximum(lengths, 1)
    seq = np.clip(seq, -20, 20)
    log_ratio = np.broadcast_to(seq[:, None], delta.shape)
    units_ratio, units_valid = np.exp(seq), lengths > 0
  ratio = np.exp(log_ratio)
  lo = 0.0 if low is None else low
  outside = (ratio > high) | (ratio < lo)
  if mode == "truncate":
    weights = np.minimum(ratio, high) if low is None else np.clip(ratio, low, high)
    new_mask = mask
  else:
    weights = np.where(outside, 0.0, ratio)
    new_mask = np.where(outside, 0.0, mask)
  weights = np.where(valid, weights, 0.0)
  units_outside = (units_ratio > high) | (units_ratio < lo)
  metrics = {
    "is_ratio_mean": units_ratio[units_valid].mean(),
    "is_ratio_max": units_ratio[units_valid].max(),
    f"is_frac_{'truncated' if mode == 'truncate' else 'masked'}": units_outside[units_valid].mean(),
  }
  return weights, new_mask, metrics


def _random_inputs(seed, scale=0.3):
  rng = np.random.default_rng(seed)
  samp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
  old = samp + scale * rng.normal(size=(B, T))
  lengths = np.array([T, 0, 4, 1, 3])  # Row 1 is all padding.
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  # Padding logprobs are garbage and must not leak anywhere.
  old = np.where(mask > 0, old, np.inf).astype(np.float32)
  samp = np.where(mask > 0, samp, -np.inf).astype(np.float32)
  return old, samp, mask


@functools.partial(jax.jit, static_argnames=("level", "mode", "high", "low", "seq_ratio"))
def _correction_jit(old, samp, mask, **kwargs):
  return corrections.mismatch_correction(old, samp, mask, **kwargs)


@functools.partial(jax.jit, static_argnames=("delta",))
def _opsm_jit(logp, samp, adv, mask, *, delta):
  return corrections.off_policy_sequence_mask(logp, samp, adv, mask, delta=delta)


CONFIGS = [
  dict(level=level, mode=mode, high=high, low=low, seq_ratio=seq_ratio)
  for level, mode, (low, high), seq_ratio in itertools.product(
    ("token", "sequence"),
    ("truncate", "mask"),
    ((None, 1.2), (0.8, 1.25), (0.5, 2.0)),
    ("product", "geometric"),
  )
  if not (level == "token" and seq_ratio == "geometric")  # seq_ratio is unused at token level.
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_matches_float64_reference(config):
  old, samp, mask = _random_inputs(0)
  weights, new_mask, metrics = _correction_jit(old, samp, mask, **config)
  want_w, want_m, want_metrics = _reference(old, samp, mask, **config)
  np.testing.assert_allclose(weights, want_w, rtol=2e-6, atol=1e-7)
  np.testing.assert_array_equal(new_mask, want_m)
  assert metrics.keys() == want_metrics.keys()
  for key, want in want_metrics.items():
    np.testing.assert_allclose(metrics[key], want, rtol=2e-6, atol=1e-7, err_msg=key)


def test_hand_worked_token_level():
  # δ = log ρ = [ln 3, ln 0.5, 0] → ρ = [3, 0.5, 1].
  samp = jnp.zeros((1, 3))
  old = jnp.array([[LN(3.0), LN(0.5), 0.0]])
  mask = jnp.ones((1, 3))
  # One-sided TIS, C = 2: w = [min(3,2), 0.5, 1] = [2, 0.5, 1]; 1 of 3 truncated.
  w, m, metrics = _correction_jit(old, samp, mask, level="token", mode="truncate", high=2.0)
  np.testing.assert_allclose(w, [[2.0, 0.5, 1.0]], rtol=1e-6)
  np.testing.assert_array_equal(m, mask)
  np.testing.assert_allclose(metrics["is_frac_truncated"], 1 / 3)
  # mean ρ = (3 + 0.5 + 1)/3 = 1.5; max 3.
  np.testing.assert_allclose(metrics["is_ratio_mean"], 1.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["is_ratio_max"], 3.0, rtol=1e-6)
  # Two-sided TIS [0.8, 2]: w = [2, 0.8, 1]; 2 of 3 truncated.
  w, _, metrics = _correction_jit(
    old, samp, mask, level="token", mode="truncate", high=2.0, low=0.8
  )
  np.testing.assert_allclose(w, [[2.0, 0.8, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(metrics["is_frac_truncated"], 2 / 3)
  # IcePop [0.8, 2]: keep = [0, 0, 1] → w = [0, 0, 1], mask = [0, 0, 1].
  w, m, metrics = _correction_jit(old, samp, mask, level="token", mode="mask", high=2.0, low=0.8)
  np.testing.assert_allclose(w, [[0.0, 0.0, 1.0]], rtol=1e-6)
  np.testing.assert_array_equal(m, [[0.0, 0.0, 1.0]])
  np.testing.assert_allclose(metrics["is_frac_masked"], 2 / 3)


def test_hand_worked_sequence_level():
  # Row 0: δ = [ln 2, ln 2, ln 0.5, pad] → Σ = ln 2 → product ρ = 2;
  #        geometric ρ = exp(ln 2 / 3) = 2^(1/3) = 1.259921.
  # Row 1: δ = [ln 1.1, pad, pad, pad] → ρ = 1.1 for both.
  samp = jnp.zeros((2, 4))
  old = jnp.array([[LN(2.0), LN(2.0), LN(0.5), 7.0], [LN(1.1), 7.0, 7.0, 7.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
  kw = dict(level="sequence", mode="truncate", high=1.5)
  w, _, metrics = _correction_jit(old, samp, mask, seq_ratio="product", **kw)
  # Product: row 0 truncated to 1.5 on every valid token; row 1 keeps 1.1.
  np.testing.assert_allclose(w, [[1.5, 1.5, 1.5, 0.0], [1.1, 0.0, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(metrics["is_frac_truncated"], 0.5)  # 1 of 2 sequences.
  np.testing.assert_allclose(metrics["is_ratio_mean"], (2.0 + 1.1) / 2, rtol=1e-6)
  w, _, metrics = _correction_jit(old, samp, mask, seq_ratio="geometric", **kw)
  g = 2.0 ** (1 / 3)
  np.testing.assert_allclose(w, [[g, g, g, 0.0], [1.1, 0.0, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(metrics["is_frac_truncated"], 0.0)
  # Seq-MIS with band [0.9, 1.5] (product): row 0 (ρ = 2) is dropped entirely.
  w, m, metrics = _correction_jit(old, samp, mask, level="sequence", mode="mask", high=1.5, low=0.9)
  np.testing.assert_array_equal(m, [[0, 0, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(w, [[0, 0, 0, 0], [1.1, 0, 0, 0]], rtol=1e-6)
  np.testing.assert_allclose(metrics["is_frac_masked"], 0.5)


def test_weights_are_stop_gradient():
  old, samp, mask = _random_inputs(1)

  def total(o, s):
    w, _, metrics = corrections.mismatch_correction(
      o, s, mask, level="token", mode="truncate", high=1.2
    )
    return jnp.sum(w) + metrics["is_ratio_mean"]

  grads = jax.grad(total, argnums=(0, 1))(jnp.asarray(old), jnp.asarray(samp))
  for g in grads:
    np.testing.assert_array_equal(g, np.zeros_like(g))


@pytest.mark.parametrize("config", CONFIGS[::3], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_vmap_matches_per_slice(config):
  slices = [_random_inputs(s) for s in range(3)]
  old, samp, mask = (np.stack(x) for x in zip(*slices, strict=True))
  fn = jax.jit(jax.vmap(lambda o, s, m: corrections.mismatch_correction(o, s, m, **config)))
  weights, new_mask, metrics = fn(old, samp, mask)
  for i in range(3):
    want_w, want_m, want_metrics = _reference(old[i], samp[i], mask[i], **config)
    np.testing.assert_allclose(weights[i], want_w, rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(new_mask[i], want_m)
    for key, want in want_metrics.items():
      np.testing.assert_allclose(metrics[key][i], want, rtol=2e-6, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_extreme_log_ratios_and_all_padding_stay_finite(config):
  # Log-ratios of ±50 (clamped to ±20 before exp) and a fully padded batch.
  old = jnp.array([[50.0, -50.0, 50.0, 0.0], [-50.0, -50.0, 0.0, 0.0]])
  samp = jnp.zeros((2, 4))
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
  for m in (mask, jnp.zeros_like(mask)):
    weights, new_mask, metrics = _correction_jit(old, samp, m, **config)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(new_mask))
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert np.all(np.asarray(weights) <= config["high"] * (1 + 1e-6))
  weights, new_mask, metrics = _correction_jit(old, samp, jnp.zeros_like(mask), **config)
  np.testing.assert_array_equal(weights, np.zeros((2, 4)))
  assert all(v == 0.0 for v in metrics.values())


def test_extreme_ratio_values():
  # Token ρ = exp(±20) after the clamp; two-sided TIS [0.5, 2] gives w = [2, 0.5].
  old = jnp.array([[50.0, -50.0]])
  w, _, metrics = corrections.mismatch_correction(
    old, jnp.zeros((1, 2)), jnp.ones((1, 2)), level="token", mode="truncate", high=2.0, low=0.5
  )
  np.testing.assert_allclose(w, [[2.0, 0.5]])
  np.testing.assert_allclose(metrics["is_ratio_max"], math.exp(20.0), rtol=1e-6)


def _reference_opsm(logp, samp, adv, mask, delta):
  logp, samp, mask = (np.asarray(a, np.float64) for a in (logp, samp, mask))
  valid = mask > 0
  lengths = mask.sum(-1)
  seq_kl = np.where(valid, samp - logp, 0.0).sum(-1) / np.maximum(lengths, 1)
  adv = np.asarray(adv, np.float64)
  adv = adv if adv.ndim == 2 else adv[:, None]
  keep = (adv >= 0) | (seq_kl[:, None] <= delta)
  keep = np.broadcast_to(keep, mask.shape)
  metrics = {
    "opsm_frac_masked": (~keep)[valid].mean(),
    "opsm_seq_kl_mean": seq_kl[lengths > 0].mean(),
    "opsm_seq_kl_max": seq_kl[lengths > 0].max(),
  }
  return np.where(keep, mask, 0.0), metrics


@pytest.mark.parametrize("per_token_adv", [False, True])
def test_opsm_matches_float64_reference(per_token_adv):
  rng = np.random.default_rng(11)
  samp, logp, mask = _random_inputs(11, scale=0.4)
  adv = rng.normal(size=(B, T) if per_token_adv else (B,)).astype(np.float32)
  got_mask, metrics = _opsm_jit(logp, samp, adv, mask, delta=0.05)
  want_mask, want_metrics = _reference_opsm(logp, samp, adv, mask, 0.05)
  assert 0 < want_metrics["opsm_frac_masked"] < 1  # The case is not degenerate.
  np.testing.assert_array_equal(got_mask, want_mask)
  for key, want in want_metrics.items():
    np.testing.assert_allclose(metrics[key], want, rtol=2e-6, atol=1e-7, err_msg=key)


def test_opsm_hand_worked():
  # Row 0: A < 0, mean(samp − logp) = (0.3 + 0.1)/2 = 0.2 > δ = 0.1 → dropped.
  # Row 1: A < 0, mean = (0.05 + 0.05)/2 = 0.05 ≤ 0.1 → kept.
  # Row 2: A > 0, mean = 0.5 > 0.1 but positive advantage → kept.
  # Row 3: all padding → mask stays 0.
  samp = jnp.array([[0.3, 0.1], [0.05, 0.05], [0.5, 0.5], [9.0, 9.0]])
  logp = jnp.zeros((4, 2))
  adv = jnp.array([-1.0, -1.0, 1.0, -1.0])
  mask = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
  new_mask, metrics = _opsm_jit(logp, samp, adv, mask, delta=0.1)
  np.testing.assert_array_equal(new_mask, [[0, 0], [1, 1], [1, 1], [0, 0]])
  np.testing.assert_allclose(metrics["opsm_frac_masked"], 2 / 6)  # 2 of 6 valid tokens.
  np.testing.assert_allclose(metrics["opsm_seq_kl_mean"], (0.2 + 0.05 + 0.5) / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["opsm_seq_kl_max"], 0.5, rtol=1e-6)


def test_opsm_vmap_and_extremes():
  samp, logp, mask = _random_inputs(6)
  samp = np.where(mask > 0, 50.0 * np.sign(samp - logp), samp).astype(np.float32)
  adv = -np.ones((B,), np.float32)
  fn = jax.jit(
    jax.vmap(lambda a, b, c, d: corrections.off_policy_sequence_mask(a, b, c, d, delta=0.1))
  )
  stacked = [np.stack([x, x]) for x in (logp, samp, adv, mask)]
  stacked[3][1] = 0.0  # Second slice: all padding.
  new_mask, metrics = fn(*stacked)
  assert np.all(np.isfinite(new_mask)) and all(np.all(np.isfinite(v)) for v in metrics.values())
  want_mask, _ = _reference_opsm(logp, samp, adv, mask, 0.1)
  np.testing.assert_array_equal(new_mask[0], want_mask)
  np.testing.assert_array_equal(new_mask[1], np.zeros((B, T)))


@pytest.mark.parametrize(
  "kwargs, field",
  [
    (dict(level="tok", mode="truncate", high=2.0), "level"),
    (dict(level="token", mode="clip", high=2.0), "mode"),
    (dict(level="sequence", mode="mask", high=2.0, seq_ratio="mean"), "seq_ratio"),
    (dict(level="token", mode="truncate", high=0.0), "high"),
    (dict(level="token", mode="truncate", high=math.inf), "high"),
    (dict(level="token", mode="mask", high=2.0, low=-0.1), "low"),
    (dict(level="token", mode="mask", high=0.5, low=2.0), "low must be smaller than high"),
    (dict(level="token", mode="truncate", high=2.0, low=2.0), "low must be smaller than high"),
    (dict(level="token", mode="truncate", high=2.0, log_ratio_clip=0.0), "log_ratio_clip"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, field):
  old, samp, mask = _random_inputs(0)
  with pytest.raises(ValueError, match=field):
    corrections.mismatch_correction(old, samp, mask, **kwargs)


@pytest.mark.parametrize("delta", [-0.1, None, True])
def test_opsm_bad_delta_raises(delta):
  old, samp, mask = _random_inputs(0)
  with pytest.raises((ValueError, TypeError), match="delta"):
    corrections.off_policy_sequence_mask(old, samp, jnp.zeros((B,)), mask, delta=delta)


def test_opsm_boundaries_keep():
  # DeepSeek-V3.2 drops only Â < 0 with KL > δ, so both boundaries keep the row.
  # Row 0: Â = 0 (not negative), mean KL = 0.5 > δ = 0.25 → kept.
  # Row 1: Â < 0, mean KL = (0.25 + 0.25)/2 = 0.25 = δ (exact in binary) → kept.
  # Row 2: Â < 0, mean KL = 0.5 > 0.25 → dropped (the case is not vacuous).
  samp = jnp.array([[0.5, 0.5], [0.25, 0.25], [0.5, 0.5]])
  logp = jnp.zeros((3, 2))
  adv = jnp.array([0.0, -1.0, -1.0])
  new_mask, _ = _opsm_jit(logp, samp, adv, jnp.ones((3, 2)), delta=0.25)
  np.testing.assert_array_equal(new_mask, [[1, 1], [1, 1], [0, 0]])
