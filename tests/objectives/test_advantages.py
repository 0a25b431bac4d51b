"""Tests for grpojax/objectives/advantages.py.

Every estimator is checked against a float64 NumPy reference written here from its formula
(loops, no vectorised tricks shared with the implementation), on random inputs with validity
masks whose invalid entries hold NaN garbage, plus hand-worked cases with the arithmetic in a
comment and the invariants the module docstring promises.
"""

import fractions
import functools
import math

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

from grpojax.objectives import advantages, gae

# The implementation runs in float32, the references in float64.
ATOL = 1e-5
RTOL = 1e-5


def _close(actual, expected, atol=ATOL, rtol=RTOL):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------
# Random inputs.


def _group_batch(seed, *, binary=False, num_prompts=7, group_size=5):
  """Rewards [P, G] (float32 values, NaN where invalid) and a mask covering every edge case.

  Row 0: all valid. Row 1: one valid sample. Row 2: no valid sample. Row 3: constant valid
  rewards. Other rows: random masks with at least two valid samples.
  """
  rng = np.random.default_rng(seed)
  if binary:
    rewards = rng.integers(0, 2, size=(num_prompts, group_size)).astype(np.float64)
  else:
    rewards = rng.normal(size=(num_prompts, group_size))
  valid = rng.random((num_prompts, group_size)) < 0.7
  valid[0] = True
  valid[1] = False
  valid[1, 2] = True
  valid[2] = False
  valid[3] = True
  rewards[3] = 0.7 if not binary else 1.0
  for p in range(4, num_prompts):
    valid[p, :2] = True
  rewards = rewards.astype(np.float32).astype(np.float64)  # what the float32 code sees
  rewards[~valid] = np.nan
  return rewards, valid


def _jax_inputs(rewards, valid):
  return jnp.asarray(rewards, jnp.float32), jnp.asarray(valid)


# ---------------------------------------------------------------------------------------------
# float64 references, written from the formulas.


def ref_grpo(r, v, eps, ddof):
  out = np.zeros_like(r)
  for p in range(r.shape[0]):
    idx = np.flatnonzero(v[p])
    vals = r[p, idx]
    if len(vals) < 2 or np.ptp(vals) == 0:
      continue
    out[p, idx] = (vals - vals.mean()) / (vals.std(ddof=ddof) + eps)
  return out


def ref_dr_grpo(r, v):
  out = np.zeros_like(r)
  for p in range(r.shape[0]):
    idx = np.flatnonzero(v[p])
    if len(idx) >= 2:
      out[p, idx] = r[p, idx] - r[p, idx].mean()
  return out


def ref_rloo(r, v):
  out = np.zeros_like(r)
  for p in range(r.shape[0]):
    idx = list(np.flatnonzero(v[p]))
    if len(idx) < 2:
      continue
    for i in idx:
      others = [r[p, j] for j in idx if j != i]
      out[p, i] = r[p, i] - sum(others) / len(others)
  return out


def ref_reinforce_pp(r, v, eps, ddof):
  vals = r[v]
  out = np.zeros_like(r)
  if len(vals) >= 2 and np.ptp(vals) > 0:
    out[v] = (vals - vals.mean()) / (vals.std(ddof=ddof) + eps)
  return out


def ref_reinforce_pp_baseline(r, v, eps, ddof):
  centred = ref_dr_grpo(r, v)
  vals = centred[v]
  std = vals.std(ddof=ddof) if len(vals) > ddof else 0.0
  if std + eps == 0:
    return np.zeros_like(r)
  return np.where(v, centred / (std + eps), 0.0)


def ref_seeupo(r, v, clip, eps, ddof):
  return np.clip(ref_reinforce_pp_baseline(r, v, eps, ddof), -clip, clip)


def ref_pass_at_k(r, v, k, eps, threshold=0.5):
  out = np.zeros_like(r)
  for p in range(r.shape[0]):
    idx = np.flatnonzero(v[p])
    n = len(idx)
    c = int(sum(r[p, i] > threshold for i in idx))
    if c == 0 or c == n:
      continue
    ke = min(k, n)
    rho = 1 - math.comb(n - c, ke) / math.comb(n, ke)
    sigma = math.sqrt(rho * (1 - rho))
    pos = (1 - rho) / (sigma + eps)
    neg = (1 - rho - math.comb(n - c - 1, ke - 1) / math.comb(n - 1, ke - 1)) / (sigma + eps)
    for i in idx:
      out[p, i] = pos if r[p, i] > threshold else neg
  return out


def ref_oapl_value(r, v, beta1):
  out = np.zeros(r.shape[0])
  for p in range(r.shape[0]):
    vals = r[p, v[p]]
    if len(vals):
      out[p] = beta1 * np.log(np.mean(np.exp(vals / beta1)))
  return out


def ref_oapl_advantages(r, v, beta1):
  value = ref_oapl_value(r, v, beta1)
  out = np.where(v, r - value[:, None], 0.0)
  out[np.sum(v, axis=1) < 2] = 0.0
  return out


def ref_low_prob_confidence(logprobs, mask, fraction):
  out = np.zeros(logprobs.shape[0])
  for b in range(logprobs.shape[0]):
    vals = sorted(logprobs[b, t] for t in range(logprobs.shape[1]) if mask[b, t])
    if vals:
      keep = max(1, math.ceil(fractions.Fraction(str(fraction)) * len(vals)))
      out[b] = np.mean(vals[:keep])
  return out


def ref_progrpo(
  r, logprobs, mask, v, prompt_lp, prompt_mask, alpha, fraction, eps, ddof, correct_only
):
  num_prompts, group_size = r.shape
  base = ref_grpo(r, v, eps, ddof)
  answer = ref_low_prob_confidence(logprobs, mask, fraction).reshape(num_prompts, group_size)
  out = base.copy()
  for p in range(num_prompts):
    idx = np.flatnonzero(v[p])
    if len(idx) < 2 or not any(r[p, i] > 0.5 for i in idx):
      continue
    if prompt_lp is None:
      prompt_conf = np.mean(answer[p, idx])
    else:
      rows = slice(p, p + 1)
      prompt_conf = ref_low_prob_confidence(prompt_lp[rows], prompt_mask[rows], fraction)[0]
    for i in idx:
      if correct_only and not r[p, i] > 0.5:
        continue
      out[p, i] += alpha * (prompt_conf - answer[p, i])
  return out


# ---------------------------------------------------------------------------------------------
# Reference comparisons on random masked inputs.


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.1])
def test_grpo_matches_reference(seed, ddof, eps):
  r, v = _group_batch(seed)
  got = advantages.grpo_advantages(*_jax_inputs(r, v), eps=eps, ddof=ddof)
  _close(got, ref_grpo(r, v, eps, ddof))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dr_grpo_and_rloo_match_reference(seed):
  r, v = _group_batch(seed)
  _close(advantages.dr_grpo_advantages(*_jax_inputs(r, v)), ref_dr_grpo(r, v))
  _close(advantages.rloo_advantages(*_jax_inputs(r, v)), ref_rloo(r, v))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ddof", [0, 1])
def test_batch_normalised_estimators_match_reference(seed, ddof):
  r, v = _group_batch(seed)
  jr, jv = _jax_inputs(r, v)
  _close(
    advantages.reinforce_pp_advantages(jr, jv, eps=1e-6, ddof=ddof),
    ref_reinforce_pp(r, v, 1e-6, ddof),
  )
  _close(
    advantages.reinforce_pp_baseline_advantages(jr, jv, eps=1e-6, ddof=ddof),
    ref_reinforce_pp_baseline(r, v, 1e-6, ddof),
  )
  for clip in (0.5, 3.0):
    _close(
      advantages.seeupo_advantages(jr, jv, clip=clip, eps=1e-6, ddof=ddof),
      ref_seeupo(r, v, clip, 1e-6, ddof),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_pass_at_k_matches_reference(seed, k):
  r, v = _group_batch(seed, binary=True)
  got = advantages.pass_at_k_advantages(*_jax_inputs(r, v), k=k, eps=1e-6)
  _close(got, ref_pass_at_k(r, v, k, 1e-6))


def test_pass_at_k_with_pm_one_rewards_matches_reference():
  r, v = _group_batch(3, binary=True)
  r = 2.0 * r - 1.0  # rewards in {-1, +1}; NaN stays NaN
  got = advantages.pass_at_k_advantages(*_jax_inputs(r, v), k=2, eps=1e-6)
  _close(got, ref_pass_at_k(r, v, 2, 1e-6))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta1", [0.5, 1.0, 3.0])
def test_oapl_matches_reference(seed, beta1):
  r, v = _group_batch(seed)
  jr, jv = _jax_inputs(r, v)
  _close(advantages.oapl_value(jr, jv, beta1=beta1), ref_oapl_value(r, v, beta1))
  _close(advantages.oapl_advantages(jr, jv, beta1=beta1), ref_oapl_advantages(r, v, beta1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("with_prompt", [False, True])
@pytest.mark.parametrize("correct_only", [False, True])
def test_progrpo_matches_reference(seed, fraction, with_prompt, correct_only):
  rng = np.random.default_rng(100 + seed)
  r, v = _group_batch(seed, binary=True, num_prompts=6, group_size=4)
  r[5, v[5]] = 0.0  # a group with no correct sample keeps its GRPO advantage
  num_rows, length, prompt_len = r.size, 7, 5
  logprobs = rng.uniform(-5.0, 0.0, size=(num_rows, length))
  mask = rng.random((num_rows, length)) < 0.8
  mask[:, 0] = True
  logprobs = logprobs.astype(np.float32).astype(np.float64)
  logprobs[~mask] = -100.0  # padding garbage must never enter T_low
  prompt_lp = prompt_mask = None
  if with_prompt:
    prompt_lp = rng.uniform(-5.0, 0.0, size=(r.shape[0], prompt_len))
    prompt_lp = prompt_lp.astype(np.float32).astype(np.float64)
    prompt_mask = rng.random((r.shape[0], prompt_len)) < 0.8
    prompt_mask[:, 0] = True
  got = advantages.progrpo_arm_advantages(
    *_jax_inputs(r, v)[:1],
    jnp.asarray(logprobs, jnp.float32),
    jnp.asarray(mask),
    jnp.asarray(v),
    None if prompt_lp is None else jnp.asarray(prompt_lp, jnp.float32),
    None if prompt_mask is None else jnp.asarray(prompt_mask),
    alpha=0.7,
    low_prob_fraction=fraction,
    correct_only=correct_only,
    eps=1e-6,
    ddof=1,
  )
  want = ref_progrpo(
    r, logprobs, mask, v, prompt_lp, prompt_mask, 0.7, fraction, 1e-6, 1, correct_only
  )
  _close(got, want)


# ---------------------------------------------------------------------------------------------
# Hand-worked cases.


def test_grpo_hand_worked():
  # r = [1, 0, 0, 1]: mean 0.5, squared deviations 4 * 0.25 = 1.
  # ddof=1: std = sqrt(1/3) = 0.57735 -> A = +-0.5 / 0.57735 = +-0.866025.
  # ddof=0: std = sqrt(1/4) = 0.5 -> A = +-1.
  r = jnp.array([[1.0, 0.0, 0.0, 1.0]])
  _close(
    advantages.grpo_advantages(r, eps=0.0, ddof=1), [[0.866025, -0.866025, -0.866025, 0.866025]]
  )
  _close(advantages.grpo_advantages(r, eps=0.0, ddof=0), [[1.0, -1.0, -1.0, 1.0]])


def test_dr_grpo_rloo_hand_worked():
  # r = [1, 0, 0, 1], mean 0.5 -> Dr. GRPO = [0.5, -0.5, -0.5, 0.5].
  # RLOO: a 1 sees others {0, 0, 1}, mean 1/3 -> 2/3; a 0 sees {1, 0, 1}, mean 2/3 -> -2/3.
  r = jnp.array([[1.0, 0.0, 0.0, 1.0]])
  _close(advantages.dr_grpo_advantages(r), [[0.5, -0.5, -0.5, 0.5]])
  _close(advantages.rloo_advantages(r), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])


def test_pass_at_k_hand_worked():
  # n = 4, c = 1, k = 2: rho = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5; sigma = sqrt(0.25) = 0.5.
  # A_pos = (1 - 0.5)/0.5 = 1.  A_neg = (1 - 0.5 - C(2,1)/C(3,1))/0.5 = (0.5 - 2/3)/0.5 = -1/3.
  r = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  _close(advantages.pass_at_k_advantages(r, k=2, eps=0.0), [[1.0, -1 / 3, -1 / 3, -1 / 3]])


def test_pass_at_k_short_group_uses_k_eff():
  # k = 3 but only n = 2 valid samples (1 correct): k_eff = 2, rho = 1 - C(1,2)/C(2,2) = 1,
  # sigma = 0: every 2-subset passes, so there is nothing to compare -> all 0.
  # n = 3 valid, c = 1, k_eff = 3: rho = 1 - C(2,3)/C(3,3) = 1 -> 0 again.
  r = jnp.array([[1.0, 0.0, 9.0, 9.0], [1.0, 0.0, 0.0, 9.0]])
  v = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0]])
  np.testing.assert_array_equal(advantages.pass_at_k_advantages(r, v, k=3), np.zeros((2, 4)))


def test_oapl_hand_worked():
  # r = [0, ln 3], beta1 = 1: V* = log((e^0 + e^{ln 3}) / 2) = log(4/2) = ln 2.
  # A = [0 - ln 2, ln 3 - ln 2] = [-0.693147, 0.405465].
  r = jnp.array([[0.0, math.log(3.0)]])
  _close(advantages.oapl_value(r, beta1=1.0), [math.log(2.0)])
  _close(advantages.oapl_advantages(r, beta1=1.0), [[-math.log(2.0), math.log(1.5)]])


def test_oapl_value_stable_for_tiny_beta1():
  # beta1 = 1e-3: exp(1/beta1) overflows float32 (and exp(1000) float64), the stable form does
  # not. V* = 1 + 1e-3 * log((1 + e^-500 + e^-1000)/3) = 1 - 1e-3 * ln 3 = 0.998901.
  r = jnp.array([[0.0, 1.0, 0.5]])
  _close(advantages.oapl_value(r, beta1=1e-3), [1.0 - 1e-3 * math.log(3.0)])


def test_seeupo_hand_worked_clamp():
  # 19 one-sample groups (advantage 0) plus one group [1, 0] -> centred [0.5, -0.5].
  # 19 + 2 = 21 valid samples, batch mean 0, sum of squares 0.5:
  # std (ddof=1) = sqrt(0.5/20) = 0.158114; 0.5 / 0.158114 = 3.16228 -> clamped to 3.
  r = np.zeros((20, 2), np.float32)
  v = np.zeros((20, 2), bool)
  v[:, 0] = True
  r[0] = [1.0, 0.0]
  v[0] = True
  got = advantages.seeupo_advantages(jnp.asarray(r), jnp.asarray(v), clip=3.0, eps=0.0)
  assert got[0, 0] == pytest.approx(3.0)
  assert got[0, 1] == pytest.approx(-3.0)
  base = advantages.reinforce_pp_baseline_advantages(jnp.asarray(r), jnp.asarray(v), eps=0.0)
  assert base[0, 0] == pytest.approx(0.5 / math.sqrt(0.5 / 20), rel=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[1:], 0.0)


def test_progrpo_hand_worked():
  # One group, r = [1, 0]; GRPO (ddof=1, eps=0): mean 0.5, std sqrt(0.5)
  # -> A = [0.707107, -0.707107].
  # f = 0.4. Row 0: 5 tokens -> ceil(2.0) = 2 lowest {-2.0, -1.0} -> c0 = -1.5.
  # Row 1: 3 valid tokens -> ceil(1.2) = 2 lowest {-3.0, -0.4} -> c1 = -1.7 (pads at -100 ignored).
  # Fallback c(q) = mean(c0, c1) = -1.6; alpha = 1: terms = [-1.6 + 1.5, -1.6 + 1.7] = [-0.1, 0.1].
  # -> A~ = [0.607107, -0.607107]; correct_only -> [0.607107, -0.707107].
  # Prompt [-1.0, -0.2, -4.0] -> 2 lowest {-4.0, -1.0} -> c(q) = -2.5; terms = [-1.0, -0.8]
  # -> A~ = [-0.292893, -1.507107].
  r = jnp.array([[1.0, 0.0]])
  lp = jnp.array([[-0.1, -2.0, -0.5, -1.0, -0.2], [-0.3, -0.4, -3.0, -100.0, -100.0]])
  mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
  kw = dict(alpha=1.0, low_prob_fraction=0.4, eps=0.0, ddof=1)
  _close(advantages.progrpo_arm_advantages(r, lp, mask, **kw), [[0.607107, -0.607107]])
  _close(
    advantages.progrpo_arm_advantages(r, lp, mask, correct_only=True, **kw),
    [[0.607107, -0.707107]],
  )
  prompt = jnp.array([[-1.0, -0.2, -4.0, 7.0]])
  prompt_mask = jnp.array([[1, 1, 1, 0]])
  _close(
    advantages.progrpo_arm_advantages(r, lp, mask, None, prompt, prompt_mask, **kw),
    [[-0.292893, -1.507107]],
  )
  # No correct sample in the group: ARM leaves A (= 0 here, zero variance) unchanged.
  zero = advantages.progrpo_arm_advantages(jnp.zeros((1, 2)), lp, mask, **kw)
  np.testing.assert_array_equal(zero, 0.0)


def test_low_prob_token_mask_hand_worked():
  # f = 0.2 of 5 valid tokens -> ceil(1.0) = 1 token, the lowest (-3.0 at position 2).
  # f = 0.2 of 2 valid tokens -> ceil(0.4) = 1 token (-0.5); an empty row keeps nothing.
  lp = jnp.array([[-0.1, -1.0, -3.0, -0.2, -0.3], [-0.5, -0.1, -9.0, -9.0, -9.0], [0.0] * 5])
  mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0] * 5])
  got = advantages.low_prob_token_mask(lp, mask, low_prob_fraction=0.2)
  want = [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
  np.testing.assert_array_equal(got, np.array(want, bool))


# ---------------------------------------------------------------------------------------------
# Invariants shared by the group estimators.

GROUP_ESTIMATORS = {
  "grpo": functools.partial(advantages.grpo_advantages, eps=1e-6),
  "grpo_eps0": functools.partial(advantages.grpo_advantages, eps=0.0),
  "dr_grpo": advantages.dr_grpo_advantages,
  "rloo": advantages.rloo_advantages,
  "reinforce_pp_baseline": functools.partial(advantages.reinforce_pp_baseline_advantages, eps=0.0),
  "seeupo": functools.partial(advantages.seeupo_advantages, eps=0.0),
  "pass_at_2": functools.partial(advantages.pass_at_k_advantages, k=2, eps=0.0),
  "oapl": functools.partial(advantages.oapl_advantages, beta1=0.5),
}


@pytest.mark.parametrize("name", sorted(GROUP_ESTIMATORS))
def test_one_sample_zero_variance_and_invalid_give_exact_zero(name):
  fn = GROUP_ESTIMATORS[name]
  # Row 0: one valid sample. Row 1: zero variance (0.1 is inexact in binary: ties must still be
  # caught). Row 2: all-correct binary group. Row 3: nothing valid. Invalid entries hold NaN.
  nan = np.nan
  r = jnp.array(
    [[0.3, nan, nan, nan], [0.1, 0.1, 0.1, nan], [1.0, 1.0, 1.0, 1.0], [nan, nan, nan, nan]]
  )
  v = jnp.array([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
  got = np.asarray(fn(r, v))
  assert np.all(np.isfinite(got))
  np.testing.assert_array_equal(got, np.zeros((4, 4)))


@pytest.mark.parametrize("name", sorted(GROUP_ESTIMATORS))
def test_invalid_samples_do_not_change_valid_ones(name):
  fn = GROUP_ESTIMATORS[name]
  r, v = _group_batch(5, binary=(name == "pass_at_2"))
  jr, jv = _jax_inputs(r, v)
  garbage = jnp.where(jv, jr, 123.0)
  a, b = np.asarray(fn(jr, jv)), np.asarray(fn(garbage, jv))
  assert np.all(np.isfinite(a))
  np.testing.assert_array_equal(a[~v], 0.0)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_reinforce_pp_whole_batch_constant_is_zero():
  r = jnp.full((3, 4), 0.1)
  np.testing.assert_array_equal(advantages.reinforce_pp_advantages(r, eps=0.0), 0.0)
  single = jnp.array([[0.4, 0.0], [0.0, 0.0]])
  v = jnp.array([[1, 0], [0, 0]])
  np.testing.assert_array_equal(advantages.reinforce_pp_advantages(single, v), 0.0)


def test_rloo_is_rescaled_dr_grpo():
  r, v = _group_batch(7)
  jr, jv = _jax_inputs(r, v)
  n = v.sum(axis=1, keepdims=True)
  scale = np.where(n > 1, n / np.maximum(n - 1, 1), 0.0)
  _close(
    advantages.rloo_advantages(jr, jv), scale * np.asarray(advantages.dr_grpo_advantages(jr, jv))
  )


def test_progrpo_outputs_carry_no_gradient():
  rewards = jnp.array([[1.0, 0.0]])
  mask = jnp.ones((2, 3))

  def arm(lp):
    return jnp.sum(advantages.progrpo_arm_advantages(rewards, lp, mask, alpha=1.0))

  np.testing.assert_array_equal(jax.grad(arm)(-jnp.ones((2, 3))), 0.0)


# ---------------------------------------------------------------------------------------------
# jit and vmap.

ALL_GROUP_FUNCTIONS = {
  **GROUP_ESTIMATORS,
  "reinforce_pp": functools.partial(advantages.reinforce_pp_advantages, eps=1e-6),
  "oapl_value": functools.partial(advantages.oapl_value, beta1=1.0),
}


@pytest.mark.parametrize("name", sorted(ALL_GROUP_FUNCTIONS))
def test_group_functions_jit_and_vmap(name):
  fn = ALL_GROUP_FUNCTIONS[name]
  batches = [_group_batch(s, binary=(name == "pass_at_2")) for s in range(3)]
  rs = jnp.stack([jnp.asarray(r, jnp.float32) for r, _ in batches])
  vs = jnp.stack([jnp.asarray(v) for _, v in batches])
  eager = np.stack([np.asarray(fn(r, v)) for r, v in zip(rs, vs, strict=True)])
  np.testing.assert_allclose(
    np.stack([jax.jit(fn)(r, v) for r, v in zip(rs, vs, strict=True)]), eager, atol=1e-6
  )
  np.testing.assert_allclose(jax.vmap(fn)(rs, vs), eager, atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(rs, vs), eager, atol=1e-6)


def test_progrpo_and_lambda_jit_and_vmap():
  rng = np.random.default_rng(0)
  rewards = jnp.asarray(rng.integers(0, 2, size=(3, 2, 3)), jnp.float32)
  lp = jnp.asarray(rng.uniform(-4, 0, size=(3, 6, 5)), jnp.float32)
  mask = jnp.asarray(rng.random((3, 6, 5)) < 0.8)
  fn = functools.partial(advantages.progrpo_arm_advantages, alpha=0.5, low_prob_fraction=0.4)
  eager = np.stack([fn(r, x, m) for r, x, m in zip(rewards, lp, mask, strict=True)])
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(rewards, lp, mask), eager, atol=1e-6)
  lengths = jnp.array([[5, 30, 100], [0, 1, 21]])
  lam_fn = functools.partial(gae.vapo_length_adaptive_lambda, alpha=0.05)
  np.testing.assert_allclose(
    jax.jit(jax.vmap(lam_fn))(lengths), np.stack([lam_fn(n) for n in lengths]), atol=0
  )


# ---------------------------------------------------------------------------------------------
# Hyper-parameter validation.

_R = jnp.zeros((2, 3))
_LP = jnp.zeros((6, 4))
_M = jnp.ones((6, 4))
_T = jnp.zeros((2, 4))

BAD_CALLS = [
  ("eps", lambda: advantages.grpo_advantages(_R, eps=-1e-3)),
  ("eps", lambda: advantages.grpo_advantages(_R, eps=float("nan"))),
  ("ddof", lambda: advantages.grpo_advantages(_R, ddof=2)),
  ("eps", lambda: advantages.reinforce_pp_advantages(_R, eps=-1.0)),
  ("ddof", lambda: advantages.reinforce_pp_baseline_advantages(_R, ddof=-1)),
  ("clip", lambda: advantages.seeupo_advantages(_R, clip=0.0)),
  ("eps", lambda: advantages.seeupo_advantages(_R, eps=-1.0)),
  ("k", lambda: advantages.pass_at_k_advantages(_R, k=0)),
  ("k", lambda: advantages.pass_at_k_advantages(_R, k=4)),
  ("k", lambda: advantages.pass_at_k_advantages(_R, k=1.5)),
  ("eps", lambda: advantages.pass_at_k_advantages(_R, k=2, eps=-1.0)),
  ("beta1", lambda: advantages.oapl_value(_R, beta1=0.0)),
  ("beta1", lambda: advantages.oapl_advantages(_R, beta1=-1.0)),
  ("alpha", lambda: advantages.progrpo_arm_advantages(_R, _LP, _M, alpha=float("inf"))),
  (
    "low_prob_fraction",
    lambda: advantages.progrpo_arm_advantages(_R, _LP, _M, alpha=1.0, low_prob_fraction=0.0),
  ),
  ("low_prob_fraction", lambda: advantages.low_prob_token_mask(_LP, _M, low_prob_fraction=1.5)),
  ("logprobs_bt", lambda: advantages.progrpo_arm_advantages(_R, _LP[:5], _M[:5], alpha=1.0)),
  ("mask_bt", lambda: advantages.progrpo_arm_advantages(_R, _LP, _M[:, :3], alpha=1.0)),
  (
    "prompt_logprobs_ps",
    lambda: advantages.progrpo_arm_advantages(_R, _LP, _M, None, _LP, alpha=1.0),
  ),
  ("gamma", lambda: gae.gae(_T, _T, _T, gamma=1.5)),
  ("lambda_policy", lambda: gae.gae(_T, _T, _T, lambda_policy=-0.1)),
  ("lambda_policy", lambda: gae.gae(_T, _T, _T, lambda_policy=np.array([0.5, 1.2]))),
  ("lambda_critic", lambda: gae.gae(_T, _T, _T, lambda_critic=1.01)),
  ("rewards_bt", lambda: gae.gae(_T, _T[:1], _T)),
  ("alpha", lambda: gae.vapo_length_adaptive_lambda(jnp.ones(3), alpha=0.0)),
  ("rewards_pg", lambda: advantages.grpo_advantages(jnp.zeros(4))),
  ("valid_pg", lambda: advantages.dr_grpo_advantages(_R, jnp.ones((2, 2)))),
]


@pytest.mark.parametrize(
  "field,call", BAD_CALLS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CALLS)]
)
def test_bad_hyper_parameters_raise_naming_the_field(field, call):
  with pytest.raises(ValueError, match=rf"^{field}\b"):
    call()


# ---------------------------------------------------------------------------------------------
# Property tests (hypothesis). Shapes are fixed at [3, 4] so each jitted function compiles once.

_P, _G = 3, 4
_JIT_DR = jax.jit(advantages.dr_grpo_advantages)
_JIT_GRPO = jax.jit(functools.partial(advantages.grpo_advantages, eps=1e-6, ddof=1))
_JIT_GRPO_DDOF0 = jax.jit(functools.partial(advantages.grpo_advantages, eps=1e-6, ddof=0))
_JIT_PASS1 = jax.jit(functools.partial(advantages.pass_at_k_advantages, k=1, eps=1e-6))
_JIT_OAPL_V = jax.jit(functools.partial(advantages.oapl_value, beta1=0.7))

_half_integer_rewards = st.lists(st.integers(-4, 4), min_size=_P * _G, max_size=_P * _G).map(
  lambda xs: np.array(xs, np.float64).reshape(_P, _G) / 2.0
)
_binary_rewards = st.lists(st.integers(0, 1), min_size=_P * _G, max_size=_P * _G).map(
  lambda xs: np.array(xs, np.float64).reshape(_P, _G)
)
_masks = st.lists(st.booleans(), min_size=_P * _G, max_size=_P * _G).map(
  lambda xs: np.array(xs, bool).reshape(_P, _G)
)
_SETTINGS = hypothesis.settings(max_examples=60, deadline=None, derandomize=True)


@_SETTINGS
@hypothesis.given(r=_half_integer_rewards, v=_masks)
def test_property_dr_grpo_sums_to_zero_per_group(r, v):
  got = np.asarray(_JIT_DR(jnp.asarray(r, jnp.float32), jnp.asarray(v)))
  np.testing.assert_allclose(np.where(v, got, 0.0).sum(axis=1), 0.0, atol=1e-5)
  np.testing.assert_array_equal(got[~v], 0.0)
  _close(got, ref_dr_grpo(r, v))


@_SETTINGS
@hypothesis.given(r=_half_integer_rewards, v=_masks)
def test_property_grpo_matches_reference_and_is_finite(r, v):
  got = np.asarray(_JIT_GRPO(jnp.asarray(r, jnp.float32), jnp.asarray(v)))
  assert np.all(np.isfinite(got))
  _close(got, ref_grpo(r, v, 1e-6, 1))


@_SETTINGS
@hypothesis.given(r=_binary_rewards, v=_masks)
def test_property_pass_at_1_is_grpo_with_population_std(r, v):
  rj, vj = jnp.asarray(r, jnp.float32), jnp.asarray(v)
  _close(_JIT_PASS1(rj, vj), np.asarray(_JIT_GRPO_DDOF0(rj, vj), np.float64))


@_SETTINGS
@hypothesis.given(r=_half_integer_rewards, v=_masks)
def test_property_oapl_value_between_mean_and_max(r, v):
  got = np.asarray(_JIT_OAPL_V(jnp.asarray(r, jnp.float32), jnp.asarray(v)))
  for p in range(_P):
    vals = r[p, v[p]]
    if len(vals) == 0:
      assert got[p] == 0.0
      continue
    assert vals.mean() - 1e-5 <= got[p] <= vals.max() + 1e-5
