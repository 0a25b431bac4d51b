"""Tests for grpojax/objectives/vcpo.py: VCPO's ESS ratio, learning-rate scale and off-policy
optimal baseline (arXiv 2602.17616) on hand-worked examples, and the `vcpo` recipe's wiring."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives
from grpojax.objectives import vcpo

# Sequence weights w = exp(Σ_t (logπ_θ − logπ_samp)) of 1, 2 and 4 (log 2 split over two
# tokens in row 1), and a fourth row that is all padding (it must not count).
LOG2 = math.log(2.0)
LOGP = np.array([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-5.0, -5.0]])
SAMP = LOGP - np.array([[0.0, 0.0], [LOG2 / 2, LOG2 / 2], [2 * LOG2, 0.0], [9.0, 9.0]])
MASK = np.array([[1, 1], [1, 1], [1, 0], [0, 0]])
# Row 2's second token is padding: its (zero) difference is not summed either way.


def _stats(rows=slice(None)):
  return vcpo.ess_stats(
    jnp.asarray(LOGP[rows], jnp.float32),
    jnp.asarray(SAMP[rows], jnp.float32),
    jnp.asarray(MASK[rows]),
  )


def test_ess_ratio_hand_worked():
  """w = (1, 2, 4): Σw = 7, Σw² = 21, B = 3 valid rows, ρ = 49 / 63 = 7/9."""
  stats = _stats()
  np.testing.assert_allclose([stats.sum_w, stats.sum_w2, stats.count], [7.0, 21.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(float(vcpo.ess_ratio(stats)), 7 / 9, rtol=1e-6)
  # Equal weights give 1; an empty batch gives 1 too (no scaling).
  ones = vcpo.ESSStats(jnp.float32(4.0), jnp.float32(4.0), jnp.float32(4.0))
  assert float(vcpo.ess_ratio(ones)) == pytest.approx(1.0)
  empty = vcpo.ESSStats(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))
  assert float(vcpo.ess_ratio(empty)) == 1.0


def test_ess_sums_add_over_micro_batches():
  whole = _stats()
  parts = [_stats(slice(0, 2)), _stats(slice(2, 4))]
  for field in range(3):
    np.testing.assert_allclose(float(parts[0][field] + parts[1][field]), float(whole[field]))


def test_lr_scale_hand_worked():
  """sqrt(min(1, (7/9) / 1)) = 0.8819; linear: 7/9; ρ_base = 0.5: min(1, 14/9) = 1."""
  ess = 7 / 9
  assert float(vcpo.lr_scale(ess)) == pytest.approx(math.sqrt(7 / 9), rel=1e-6)
  assert float(vcpo.lr_scale(ess, rule="linear")) == pytest.approx(7 / 9, rel=1e-6)
  assert float(vcpo.lr_scale(ess, base_ess_ratio=0.5)) == 1.0
  scale, metrics = vcpo.ess_lr_scaling().scale(_stats())
  assert float(scale) == pytest.approx(math.sqrt(7 / 9), rel=1e-6)
  assert float(metrics["ess_ratio"]) == pytest.approx(7 / 9, rel=1e-6)
  with pytest.raises(ValueError, match="base_ess_ratio"):
    vcpo.ess_lr_scaling(base_ess_ratio=0.0)
  with pytest.raises(ValueError, match="ess_scaling_rule"):
    vcpo.ess_lr_scaling(rule="cubic")


def test_optimal_baseline_hand_worked():
  """R = (1, 0, 0, 1), w = (1, 1, 2, 1), ‖g‖² = (1, 4, 1, 2): c = w²‖g‖² = (1, 4, 4, 2),
  b* = (1·1 + 2·1) / 11 = 3/11 (the group mean would be 1/2). std(R, ddof 1) = sqrt(1/3)."""
  rewards = jnp.asarray([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
  weights = jnp.asarray([[1.0, 1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
  norms = jnp.asarray([[1.0, 4.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
  b = vcpo.optimal_baseline(rewards, weights, norms)
  np.testing.assert_allclose(np.asarray(b), [3 / 11, 0.5], rtol=1e-6)  # zero norms: the mean
  adv = vcpo.optimal_baseline_advantages(rewards, weights, norms, norm_by_std=True, eps=1e-6)
  std = math.sqrt(1 / 3)
  want0 = (np.array([1, 0, 0, 1]) - 3 / 11) / (std + 1e-6)
  np.testing.assert_allclose(np.asarray(adv)[0], want0, rtol=1e-6)
  raw = vcpo.optimal_baseline_advantages(rewards, weights, norms, norm_by_std=False)
  np.testing.assert_allclose(np.asarray(raw)[0], np.array([1, 0, 0, 1]) - 3 / 11, rtol=1e-6)


def test_vcpo_recipe_wiring():
  """The default recipe has the ESS scaling, sequence-level IS truncated at 8 and the GRPO
  z-score; `optimal_baseline` swaps in the baseline, which then needs per-row gradient norms."""
  objective = objectives.make(objectives.default_config("vcpo"))
  assert objective.lr_scaling is not None
  assert "grad_sq_norms" not in objective.advantage.requires
  config = objectives.default_config("vcpo")
  config.optimal_baseline = True
  with_baseline = objectives.make(config)
  assert {"grad_sq_norms", "old_logprobs", "sampler_logprobs"} <= with_baseline.advantage.requires
  # Truncated sequence IS on the loss: a row whose π_old/π_samp is e^3 ≈ 20 is weighted by 8.
  old = jnp.zeros((2, 2))
  samp = jnp.asarray([[-1.5, -1.5], [0.0, 0.0]])
  w = vcpo.truncated_sequence_weights(old, samp, jnp.ones((2, 2)), cap=8.0)
  np.testing.assert_allclose(np.asarray(w), [8.0, 1.0], rtol=1e-6)
