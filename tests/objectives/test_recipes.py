"""Tests for grpojax/objectives/recipes.py and config.py: every recipe end to end through `make`.

References are float64 NumPy re-implementations of the papers' formulas (advantage, surrogate,
KL term, aggregation), compared with the float32 chain. Inputs are tiny ([B, T] = [6, 5], two
groups of three), hold garbage (±inf, NaN, 1e30) on padding, and include an all-padding row that
is an invalid sample of its group.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import grpojax.objectives as objectives
from grpojax.objectives import (
  advantages,
  aggregation,
  base,
  recipes,
  selective_surrogates,
  soft_surrogates,
  surrogates,
)
from grpojax.objectives import transforms as t

P, G, T = 2, 3, 5
B = P * G
LENGTHS = np.array([5, 3, 1, 4, 2, 0])  # Row 5 is all padding: an invalid sample.
MAX_LEN = 8
# Group 0 mean 13/30: rows 0, 2 negative, row 1 positive; group 1: row 3 positive, row 4
# negative; row 5's reward is garbage (NaN) and must never matter.
REWARDS_PG = np.array([[0.0, 1.0, 0.3], [1.0, 0.2, np.nan]])
RTOL, ATOL = 1e-5, 1e-6
# Recipes whose surrogate reports clip fractions.
CLIPPING = (
  "grpo",
  "dr_grpo",
  "dapo",
  "gspo",
  "gspo_token",
  "gmpo",
  "cispo",
  "clip_cov",
  "stapo",
  "progrpo",
  "reinforce_pp",
  "pass_at_k",
)


class Data(NamedTuple):
  """Float32 test inputs; `valid` arrays are clean copies for the references."""

  rewards_pg: np.ndarray
  valid_pg: np.ndarray
  mask: np.ndarray
  logprobs: np.ndarray
  old: np.ndarray
  sampler: np.ndarray
  ref: np.ndarray
  entropy: np.ndarray
  log_z: np.ndarray


def _mask():
  return (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float32)


def _data(seed=1, *, spread=0.4):
  """Random inputs; the default seed makes every PPO branch occur (the reference tests check)."""
  rng = np.random.default_rng(seed)
  logprobs = -np.abs(rng.normal(size=(B, T))) - 0.05
  old = logprobs + rng.normal(scale=spread, size=(B, T))
  return Data(
    rewards_pg=REWARDS_PG.astype(np.float32),
    valid_pg=(LENGTHS > 0).reshape(P, G),
    mask=_mask(),
    logprobs=logprobs.astype(np.float32),
    old=old.astype(np.float32),
    sampler=(old + rng.normal(scale=0.1, size=(B, T))).astype(np.float32),
    ref=(logprobs + rng.normal(scale=0.5, size=(B, T))).astype(np.float32),
    entropy=(np.abs(rng.normal(size=(B, T))) * 2 + 0.01).astype(np.float32),
    log_z=rng.normal(size=B).astype(np.float32),
  )


def _garbage(x, value):
  return np.where(_mask() > 0, x, value).astype(np.float32)


def _values(data):
  """Value-head outputs V_old (VAPO reads them): any finite numbers, garbage on padding."""
  return _garbage(0.5 * data.entropy - 0.3, np.nan)


def _group_inputs(data):
  return objectives.GroupInputs(
    valid_pg=jnp.asarray(data.valid_pg),
    mask=jnp.asarray(data.mask),
    old_logprobs=jnp.asarray(_garbage(data.old, 1e30)),
    values=jnp.asarray(_values(data)),
    sampler_logprobs=jnp.asarray(_garbage(data.sampler, 1e30)),
    prompt_logprobs=jnp.asarray(_prompt_logprobs()),
    prompt_mask=jnp.asarray(PROMPT_MASK),
  )


# Prompt-token log-probs (ProGRPO's c(q) reads them): 3 positions, the first never scored, and
# the same prompt on every row of a group.
PROMPT_MASK = np.tile([[0.0, 1.0, 1.0]], (B, 1))


def _prompt_logprobs():
  per_prompt = -np.abs(np.random.default_rng(7).normal(size=(P, 3))) - 0.1
  return np.where(PROMPT_MASK > 0, np.repeat(per_prompt, G, axis=0), 0.0).astype(np.float32)


def _advantages(objective, data, state=None):
  """Per-token advantages [B, T] (and the state) for `data`'s rewards."""
  state = objective.init() if state is None else state
  return objective.advantages(jnp.asarray(data.rewards_pg), state, _group_inputs(data))


def _inputs(data, adv_bt, *, rows=slice(None), key=None):
  """LossInputs with garbage on padding; `logprobs`, `entropy` and `log_z` are replaced by the
  differentiated arguments in `_loss_fn`."""
  full = objectives.LossInputs(
    logprobs=jnp.asarray(_garbage(data.logprobs, -np.inf)),
    mask=jnp.asarray(data.mask),
    old_logprobs=jnp.asarray(_garbage(data.old, 1e30)),
    sampler_logprobs=jnp.asarray(_garbage(data.sampler, np.nan)),
    ref_logprobs=jnp.asarray(_garbage(data.ref, np.inf)),
    advantages=jnp.asarray(_garbage(np.asarray(adv_bt), np.nan)),
    entropy=jnp.asarray(_garbage(data.entropy, np.nan)),
    values=jnp.asarray(_values(data)),
    # IntroLLM's temperature head and the log-densities of the sampled temperatures.
    temperature=jnp.asarray(_values(data)),
    temperature_logprobs=jnp.asarray(_garbage(data.old + 0.3, np.nan)),
    sampler_temperature_logprobs=jnp.asarray(_garbage(data.sampler + 0.3, np.inf)),
    log_z=jnp.asarray(np.where(LENGTHS > 0, data.log_z, np.nan).astype(np.float32)),
    rewards=jnp.asarray(data.rewards_pg.reshape(B)),
  )
  return dataclasses.replace(jax.tree.map(lambda x: x[rows], full), key=key)


def _loss_fn(objective):
  """(logprobs, log_z, entropy, inputs, state) -> ((loss, aux), (∂logprobs, ∂log_z))."""

  def total(logprobs, log_z, entropy, inputs, state):
    inputs = dataclasses.replace(inputs, logprobs=logprobs, log_z=log_z, entropy=entropy)
    loss_sum, denominator, metrics, new_state = objective.loss(state, inputs)
    return aggregation.finalize(loss_sum, denominator), (loss_sum, denominator, metrics, new_state)

  return jax.value_and_grad(total, argnums=(0, 1), has_aux=True)


def _run(config, data=None, *, key=None, state=None, objective=None):
  """Builds, computes advantages, runs the loss eagerly (jit is covered by `jitted_recipes`).

  Returns:
    (objective, loss, (∂logprobs, ∂log_z), (loss_sum, denominator, metrics, new_state), adv_bt).
  """
  data = _data() if data is None else data
  objective = objectives.make(config) if objective is None else objective
  state = objective.init() if state is None else state
  adv_bt, state = _advantages(objective, data, state)
  x = _inputs(data, adv_bt, key=key)
  (loss, aux), grads = _loss_fn(objective)(x.logprobs, x.log_z, x.entropy, x, state)
  return objective, loss, grads, aux, adv_bt


# ---------------------------------------------------------------------------------------------
# Float64 references.
# ---------------------------------------------------------------------------------------------


def _f64(x):
  return np.where(_mask() > 0, np.asarray(x, np.float64), 0.0)


def _np_group_advantages(*, std, eps=1e-6, ddof=1):
  """GRPO z-score (std=True) or Dr. GRPO centring over the valid samples of each group."""
  out = np.zeros((P, G))
  valid = (LENGTHS > 0).reshape(P, G)
  for p in range(P):
    r = REWARDS_PG[p, valid[p]].astype(np.float64)
    if len(r) >= 2 and r.max() > r.min():
      centred = r - r.mean()
      out[p, valid[p]] = centred / (r.std(ddof=ddof) + eps) if std else centred
  return out


def _tokens(adv_pg):
  return np.repeat(adv_pg.reshape(B, 1), T, axis=1) * (_mask() > 0)


def _np_ppo(lp, old, adv, *, eps_low, eps_high, dual_c=None):
  """PPO clip per token and its derivative in logπ (0 where a clip binds)."""
  ratio = np.exp(lp - old)
  unclipped = -adv * ratio
  clipped = -adv * np.clip(ratio, 1 - eps_low, 1 + eps_high)
  loss = np.maximum(unclipped, clipped)
  grad = np.where(unclipped >= clipped, -adv * ratio, 0.0)
  if dual_c is not None:
    dual = (adv < 0) & (loss > -dual_c * adv)
    loss = np.where(dual, -dual_c * adv, loss)
    grad = np.where(dual, 0.0, grad)
  return loss, grad


def _np_kl(lp, ref, kind):
  """(k, ∂k/∂logπ) with δ = logπ − logπ_ref."""
  delta = lp - ref
  if kind == "k1":
    return delta, np.ones_like(delta)
  if kind == "k2":
    return 0.5 * delta**2, delta
  return np.exp(-delta) + delta - 1.0, 1.0 - np.exp(-delta)


def _np_weights(mask, mode, max_len=MAX_LEN):
  """w_bt with loss = Σ w ℓ for token-local ℓ (and gradient w · ∂ℓ)."""
  mask = np.asarray(mask, np.float64)
  lengths = mask.sum(-1, keepdims=True)
  rows = (lengths > 0).sum()
  if mode == "token_mean":
    return mask / mask.sum()
  if mode == "seq_mean_token_mean":
    return mask / np.maximum(lengths, 1) / rows
  if mode == "seq_mean_token_sum":
    return mask / rows
  return mask / (rows * max_len)


def _assert_close(actual, expected, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def _masked_mean(x, mask):
  return (x * mask).sum() / mask.sum()


# ---------------------------------------------------------------------------------------------
# Every recipe: builds from its defaults, runs under jit + grad, reports the full metrics.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jitted_recipes():
  """Every recipe's loss and gradient from ONE jitted program (one XLA compile, not 20)."""
  data = _data()
  configs = {name: objectives.default_config(name) for name in recipes.RECIPES}
  configs["pass_at_k"].k = 2  # k <= G = 3 here.
  built = {name: objectives.make(c, group_size=G) for name, c in configs.items()}
  advs = {name: _advantages(o, data)[0] for name, o in built.items()}
  inputs = {name: _inputs(data, advs[name], key=jax.random.key(1)) for name in built}
  states = {name: o.init() for name, o in built.items()}

  @jax.jit
  def run_all(inputs, states):
    return {
      name: _loss_fn(o)(
        inputs[name].logprobs, inputs[name].log_z, inputs[name].entropy, inputs[name], states[name]
      )
      for name, o in built.items()
    }

  outputs = run_all(inputs, states)
  return {name: (built[name], outputs[name], advs[name]) for name in built}


@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_every_recipe_runs_under_jit_and_grad(recipe, jitted_recipes):
  objective, ((loss, aux), (grad_lp, grad_z)), adv_bt = jitted_recipes[recipe]
  defaults = objectives.default_config(recipe)
  loss_sum, denominator, metrics, new_state = aux
  assert np.isfinite(loss) and np.isfinite(loss_sum) and denominator > 0
  assert adv_bt.shape == (B, T) and np.all(np.isfinite(adv_bt))
  np.testing.assert_array_equal(np.asarray(adv_bt)[_mask() == 0], 0.0)
  assert np.all(np.isfinite(grad_lp)) and np.all(np.isfinite(grad_z))
  assert np.any(grad_lp != 0)
  np.testing.assert_array_equal(np.asarray(grad_lp)[_mask() == 0], 0.0)
  if recipe != "flowrl":
    np.testing.assert_array_equal(grad_z, 0.0)
  else:
    assert np.any(grad_z != 0) and grad_z[-1] == 0.0

  expected = set(base.BASE_METRICS) | {"entropy_mean", "reward_mean"}
  expected |= {"ratio_mean", "ratio_max", "ratio_min", "approx_kl"}
  if defaults.kl_coef > 0:
    expected |= {"kl_ref", "kl_coef"}
  if recipe in CLIPPING:
    expected |= {"clip_frac_low", "clip_frac_high"}
  if recipe == "stapo":
    expected |= {"stapo_masked_frac", "stapo_entropy_threshold"}
  assert expected <= set(metrics), expected - set(metrics)
  for name, value in metrics.items():
    assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value), name
  _assert_close(metrics["loss"], float(loss))

  assert jax.tree.structure(new_state) == jax.tree.structure(objective.init())
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new_state))


@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_default_config_is_the_recipes_signature(recipe):
  config = objectives.default_config(recipe)
  fields = config.to_dict()
  assert fields.pop("recipe") == recipe
  assert fields.pop("correction") == {"name": "none"}
  fn = recipes.RECIPES[recipe]
  assert fields == dict(fn.__kwdefaults__)
  assert None not in fields.values()
  with pytest.raises(AttributeError):  # Locked: a typo cannot add a field.
    config.epsilon_hihg = 0.3


def test_correction_config_is_its_signature():
  config = objectives.default_config("grpo", correction="tis")
  assert config.correction.to_dict() == {"name": "tis", **recipes.tis.__kwdefaults__}


# ---------------------------------------------------------------------------------------------
# End-to-end references.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_grpo_matches_numpy_reference(kind):
  # GRPO: z-score (ddof 1, eps 1e-6), clip 0.2, β = 0.04 k-estimator in the loss,
  # (1/N) Σ_i (1/|o_i|) Σ_t [ppo + β k].
  config = objectives.default_config("grpo")
  config.kl_kind = kind
  data = _data()
  _, loss, (grad, _), (_, _, metrics, _), adv_bt = _run(config, data)

  adv_ref = _np_group_advantages(std=True)
  _assert_close(adv_bt, _tokens(adv_ref))
  lp, old, ref, mask = _f64(data.logprobs), _f64(data.old), _f64(data.ref), _mask()
  adv = _tokens(adv_ref)
  ratio = np.exp(lp - old)
  clip_low, clip_high = (adv < 0) & (ratio < 0.8), (adv > 0) & (ratio > 1.2)
  assert clip_low.sum() > 0 and clip_high.sum() > 0  # Both clips bind somewhere.
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.2)
  k, d_k = _np_kl(lp, ref, kind)
  weights = _np_weights(mask, "seq_mean_token_mean")
  _assert_close(loss, np.sum(weights * (surrogate + 0.04 * k)))
  _assert_close(grad, weights * (d_surrogate + 0.04 * d_k))

  _assert_close(metrics["kl_ref"], _masked_mean(k, mask))
  _assert_close(metrics["kl_coef"], 0.04)
  _assert_close(metrics["clip_frac_low"], _masked_mean(clip_low, mask))
  _assert_close(metrics["clip_frac_high"], _masked_mean(clip_high, mask))
  _assert_close(metrics["ratio_mean"], _masked_mean(ratio, mask))
  _assert_close(metrics["ratio_max"], ratio[mask > 0].max())
  _assert_close(metrics["approx_kl"], _masked_mean(ratio - 1 - np.log(ratio), mask))
  valid_adv = adv[mask > 0]
  _assert_close(metrics["adv_mean"], valid_adv.mean())
  _assert_close(metrics["adv_std"], valid_adv.std())
  _assert_close(metrics["adv_min"], valid_adv.min())
  _assert_close(metrics["adv_max"], valid_adv.max())
  _assert_close(metrics["entropy_mean"], _masked_mean(_f64(data.entropy), mask))
  _assert_close(metrics["reward_mean"], np.nanmean(REWARDS_PG))
  _assert_close(metrics["masked_frac"], 0.0)


def test_dapo_matches_numpy_reference():
  # DAPO: z-score, clip-higher 0.2/0.28, dual clip c = 10, Σ_all ℓ / Σ_all m, no KL.
  data = _data()
  old = data.old.copy()
  old[0, 1] = data.logprobs[0, 1] - 3.0  # r = e^3 ≈ 20 > c on a negative-advantage row.
  data = data._replace(old=old)
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(objectives.default_config("dapo"), data)

  adv = _tokens(_np_group_advantages(std=True))
  assert adv[0, 1] < 0
  ratio = np.exp(_f64(data.logprobs) - _f64(data.old))
  # Clip-higher matters: tokens in (1.2, 1.28] are clipped by GRPO's 0.2 but not by DAPO's 0.28.
  assert np.sum((adv > 0) & (ratio > 1.2) & (ratio <= 1.28)) > 0
  assert np.sum((adv > 0) & (ratio > 1.28)) > 0 and np.sum((adv < 0) & (ratio < 0.8)) > 0
  surrogate, d_surrogate = _np_ppo(
    _f64(data.logprobs), _f64(data.old), adv, eps_low=0.2, eps_high=0.28, dual_c=10.0
  )
  weights = _np_weights(_mask(), "token_mean")
  _assert_close(loss, np.sum(weights * surrogate))
  _assert_close(grad, weights * d_surrogate)
  assert grad[0, 1] == 0.0
  _assert_close(metrics["dual_clip_frac"], 1 / _mask().sum())
  assert "kl_ref" not in metrics


def test_dr_grpo_matches_numpy_reference():
  # Dr. GRPO: A = r − mean_g r, clip 0.2, Σ_i Σ_t ℓ / (N · L_max), no KL; L_max = the padded
  # response length T (the generation budget of a rollout batch).
  data = _data()
  _, loss, (grad, _), (loss_sum, denominator, _, _), adv_bt = _run(
    objectives.default_config("dr_grpo"), data
  )
  adv_ref = _np_group_advantages(std=False)
  _assert_close(adv_bt, _tokens(adv_ref))
  surrogate, d_surrogate = _np_ppo(
    _f64(data.logprobs), _f64(data.old), _tokens(adv_ref), eps_low=0.2, eps_high=0.2
  )
  weights = _np_weights(_mask(), "seq_mean_token_sum_norm", max_len=T)
  _assert_close(loss, np.sum(weights * surrogate))
  _assert_close(grad, weights * d_surrogate)
  assert denominator == 5 * T  # Five valid rows; the all-padding row does not count.


def test_gspo_matches_numpy_reference():
  # GSPO: s_i = exp(mean_t Δ), L_i = max(−A s, −A clip(s, 1 − 3e-4, 1 + 4e-4)), mean_i L_i.
  data = _data()
  old = data.old.copy()
  # Row 0 has zero mean log-ratio (so s_0 = 1 sits inside the band and keeps its gradient),
  # with non-trivial token ratios.
  old[0] = data.logprobs[0] - np.array([0.1, -0.1, 0.05, -0.05, 0.0], np.float32)
  data = data._replace(old=old)
  _, loss, (grad, _), _, _ = _run(objectives.default_config("gspo"), data)

  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  adv_b = _np_group_advantages(std=True).reshape(B)
  lengths = mask.sum(-1)
  valid_rows = lengths > 0
  seq_ratio = np.exp(((lp - old) * mask).sum(-1) / np.maximum(lengths, 1))
  unclipped = -adv_b * seq_ratio
  clipped = -adv_b * np.clip(seq_ratio, 1 - 3e-4, 1 + 4e-4)
  seq_loss = np.maximum(unclipped, clipped)
  n_rows = valid_rows.sum()
  _assert_close(loss, seq_loss[valid_rows].sum() / n_rows)
  # ∂L_i/∂logπ_{i,t} = −A_i s_i / |y_i| inside the band, 0 where the clip binds.
  d_seq = np.where(unclipped >= clipped, -adv_b * seq_ratio / np.maximum(lengths, 1), 0.0)
  expected_grad = d_seq[:, None] * mask / n_rows
  assert np.any(expected_grad[0] != 0)
  _assert_close(grad, expected_grad)


def test_cispo_matches_numpy_reference():
  # CISPO: ℓ = −sg(min(r, 1 + 0.2)) Â logπ (no lower bound), token-mean.
  data = _data()
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(objectives.default_config("cispo"), data)
  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  adv = _tokens(_np_group_advantages(std=True))
  weight = np.minimum(np.exp(lp - old), 1.2)
  weights = _np_weights(mask, "token_mean")
  _assert_close(loss, np.sum(weights * -weight * adv * lp))
  _assert_close(grad, weights * -weight * adv)
  _assert_close(metrics["clip_frac_high"], _masked_mean(np.exp(lp - old) > 1.2, mask))
  _assert_close(metrics["clip_frac_low"], 0.0)


def test_stapo_matches_numpy_reference():
  # STAPO: drop tokens with Â > 0, π < 0.01, H < 5% entropy quantile; PPO clip 0.2 on the
  # rest; token-mean over the kept tokens.
  data = _data()
  logprobs, entropy = data.logprobs.copy(), data.entropy.copy()
  logprobs[1, 1] = np.log(1e-3)  # Row 1 has a positive advantage.
  entropy[1, 1] = 1e-3  # The lowest entropy of the batch.
  data = data._replace(logprobs=logprobs, entropy=entropy)
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(objectives.default_config("stapo"), data)

  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  adv = _tokens(_np_group_advantages(std=True))
  tau_h = np.quantile(_f64(data.entropy)[mask > 0], 0.05)
  spurious = (mask > 0) & (adv > 0) & (np.exp(lp) < 0.01) & (_f64(data.entropy) < tau_h)
  assert spurious.sum() >= 1 and spurious[1, 1]
  keep = mask * ~spurious
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.2)
  weights = _np_weights(keep, "token_mean")
  _assert_close(loss, np.sum(weights * surrogate))
  _assert_close(grad, weights * d_surrogate)
  _assert_close(metrics["masked_frac"], spurious.sum() / mask.sum())
  _assert_close(metrics["stapo_entropy_threshold"], tau_h)


def _with_correction(recipe, **correction):
  config = objectives.default_config(recipe)
  config.correction = ml_collections.ConfigDict(correction)
  return config


def test_mis_correction_reweights_and_renormalises_over_kept_tokens():
  # GRPO + token MIS with band [0.95, 1.05]: w = ρ · keep multiplies the surrogate; the KL term
  # and the seq-mean-token-mean denominators use the kept tokens only.
  config = _with_correction("grpo", name="mis", low=0.95, high=1.05)
  data = _data()
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(config, data)

  lp, old, ref, mask = _f64(data.logprobs), _f64(data.old), _f64(data.ref), _mask()
  rho = np.exp(old - _f64(data.sampler))
  keep = mask * ((rho >= 0.95) & (rho <= 1.05))
  assert 0 < keep.sum() < mask.sum()
  assert np.any((keep.sum(-1) == 0) & (mask.sum(-1) > 0))  # A whole row leaves the denominator.
  adv = _tokens(_np_group_advantages(std=True))
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.2)
  k, d_k = _np_kl(lp, ref, "k3")
  weights = _np_weights(keep, "seq_mean_token_mean")
  _assert_close(loss, np.sum(weights * (rho * surrogate + 0.04 * k)))
  _assert_close(grad, weights * (rho * d_surrogate + 0.04 * d_k))
  _assert_close(metrics["masked_frac"], 1 - keep.sum() / mask.sum())
  _assert_close(metrics["is_frac_masked"], 1 - keep.sum() / mask.sum())


def test_sequence_surrogate_sees_the_corrected_mask():
  # GSPO + token MIS: s_i is the geometric mean ratio over the KEPT tokens of row i, the MIS
  # weights ρ_t multiply the per-token copies of L_i, and the row means run over kept tokens:
  # loss = (1/N') Σ_i (1/n'_i) Σ_{t kept} ρ_t L_i.
  config = _with_correction("gspo", name="mis", low=0.95, high=1.05)
  data = _data()
  _, loss, (grad, _), _, _ = _run(config, data)

  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  rho = np.exp(old - _f64(data.sampler))
  keep = mask * ((rho >= 0.95) & (rho <= 1.05))
  kept = keep.sum(-1)
  rows = kept > 0
  assert np.any(kept[rows] < mask.sum(-1)[rows])  # Some kept rows lost tokens.
  adv_b = _np_group_advantages(std=True).reshape(B)
  seq_ratio = np.exp(((lp - old) * keep).sum(-1) / np.maximum(kept, 1))
  unclipped = -adv_b * seq_ratio
  clipped = -adv_b * np.clip(seq_ratio, 1 - 3e-4, 1 + 4e-4)
  seq_loss = np.maximum(unclipped, clipped)
  mean_rho = (rho * keep).sum(-1) / np.maximum(kept, 1)
  _assert_close(loss, np.sum((mean_rho * seq_loss)[rows]) / rows.sum())
  d_seq = np.where(unclipped >= clipped, -adv_b * seq_ratio / np.maximum(kept, 1), 0.0)
  _assert_close(grad, (mean_rho * d_seq)[:, None] * keep / rows.sum())


def test_tis_correction_truncates_weights():
  # DAPO + token TIS with cap 1.05: w = min(ρ, 1.05), mask unchanged.
  config = _with_correction("dapo", name="tis", high=1.05)
  data = _data()
  _, loss, (grad, _), _, _ = _run(config, data)
  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  weight = np.minimum(np.exp(old - _f64(data.sampler)), 1.05)
  adv = _tokens(_np_group_advantages(std=True))
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.28, dual_c=10.0)
  weights = _np_weights(mask, "token_mean")
  _assert_close(loss, np.sum(weights * weight * surrogate))
  _assert_close(grad, weights * weight * d_surrogate)


def test_two_corrections_in_a_row_multiply_weights_and_masks():
  # DAPO + TIS (cap 1.05) + MIS (band [0.95, 1.05]) written as a chain in a user's recipe:
  # w = min(ρ, 1.05) · ρ · keep, mask = m · keep. Both report `is_*` metrics, so they are
  # composed with `named_chain`, which prefixes them.
  dapo = objectives.make(objectives.default_config("dapo"))
  corrections = objectives.named_chain(
    ("tis", recipes.tis(high=1.05)), ("mis", recipes.mis(low=0.95, high=1.05))
  )
  both = objectives.with_terms(dapo, corrections)
  data = _data()
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(None, data, objective=both)
  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  rho = np.exp(old - _f64(data.sampler))
  keep = mask * ((rho >= 0.95) & (rho <= 1.05))
  weight = np.minimum(rho, 1.05) * rho * keep
  adv = _tokens(_np_group_advantages(std=True))
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.28, dual_c=10.0)
  weights = _np_weights(keep, "token_mean")
  _assert_close(loss, np.sum(weights * weight * surrogate))
  _assert_close(grad, weights * weight * d_surrogate)
  assert {"tis/is_frac_truncated", "mis/is_frac_masked", "tis/is_ratio_mean"} <= set(metrics)
  assert "is_ratio_mean" not in metrics


# ---------------------------------------------------------------------------------------------
# Composition properties.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "make_config",
  [
    lambda: objectives.default_config("grpo"),
    lambda: objectives.default_config("dr_grpo"),
    lambda: objectives.default_config("gspo"),
    lambda: objectives.default_config("rloo"),
    lambda: _with_correction("dapo", name="tis", high=1.05),
    lambda: _with_correction("grpo", name="mis", low=0.95, high=1.05),
  ],
  ids=["grpo", "dr_grpo", "gspo", "rloo", "dapo+tis", "grpo+mis"],
)
def test_micro_batches_sum_to_the_whole_batch(make_config):
  # Splitting the rows in two micro-batches and summing (sum, denominator) gives the
  # full-batch loss and gradient. (Equal halves: one extra shape to compile.)
  data = _data(seed=3)
  objective = objectives.make(make_config())
  adv_bt, state = _advantages(objective, data)
  x = _inputs(data, adv_bt)

  def whole(logprobs):
    out = objective.loss(state, dataclasses.replace(x, logprobs=logprobs))
    return aggregation.finalize(*out[:2])

  def split(logprobs):
    sums = denominators = 0.0
    for rows in (slice(0, B // 2), slice(B // 2, B)):
      sub = jax.tree.map(lambda a, r=rows: a[r], dataclasses.replace(x, logprobs=logprobs))
      loss_sum, denominator, _, _ = objective.loss(state, sub)
      sums, denominators = sums + loss_sum, denominators + denominator
    return aggregation.finalize(sums, denominators)

  value, grad = jax.value_and_grad(whole)(x.logprobs)
  split_value, split_grad = jax.value_and_grad(split)(x.logprobs)
  np.testing.assert_allclose(split_value, value, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(split_grad, grad, rtol=1e-6, atol=1e-8)
  assert np.any(np.asarray(grad) != 0)


ON_POLICY_SURROGATES = {
  "ppo_clip": surrogates.ppo_clip,
  "gspo": surrogates.gspo,
  "gspo_token": surrogates.gspo_token,
  "gmpo": surrogates.gmpo,
  "sapo": soft_surrogates.sapo,
  "cispo": soft_surrogates.cispo,
  "maspo": soft_surrogates.maspo,
  "vespo": soft_surrogates.vespo,
  "kl_cov": selective_surrogates.kl_cov,
}


@pytest.mark.parametrize("surrogate", ON_POLICY_SURROGATES)
def test_on_policy_gradient_equals_reinforce_with_group_advantages(surrogate):
  # On-policy (π_old = π_θ) every trust region / IS weight is 1, so with token-mean aggregation
  # the gradient is REINFORCE's: −(1/N) Σ Â ∇logπ. For GRPO (ppo_clip) this is the textbook
  # identity; the others share it (SAPO: 4σ(1−σ)r = 1 at r = 1; VESPO: φ(1) = 1; ...). Each
  # objective is composed here as a user would: z-score -> the surrogate -> token mean.
  data = _data()
  data = data._replace(old=data.logprobs, sampler=data.logprobs)
  objective = objectives.Objective(
    advantage=t.group_advantages(advantages.grpo_advantages),
    terms=objectives.chain(t.policy_loss(ON_POLICY_SURROGATES[surrogate])),
    aggregate=aggregation.token_mean,
  )
  _, _, (grad, _), _, _ = _run(None, data, objective=objective)
  _, _, (reinforce_grad, _), _, _ = _run(objectives.default_config("reinforce"), data)
  adv = _tokens(_np_group_advantages(std=True))
  _assert_close(reinforce_grad, -adv * _mask() / _mask().sum())
  np.testing.assert_allclose(grad, reinforce_grad, rtol=1e-5, atol=1e-7)


def test_adaptive_kl_coefficient_drives_the_loss_and_updates_once_per_step():
  config = objectives.default_config("grpo")
  config.kl_target = 0.05
  data = _data()
  objective, loss, _, (_, _, metrics, new_state), _ = _run(config, data)
  k, _ = _np_kl(_f64(data.logprobs), _f64(data.ref), "k3")
  kl_ref = _masked_mean(k, _mask())
  _assert_close(metrics["kl_ref"], kl_ref)
  _assert_close(metrics["kl_coef"], 0.04)
  kl_state = new_state.loss[1]
  _assert_close(kl_state.coef, 0.04)  # β moves only in `finalize`, once per step.
  _assert_close(kl_state.kl_sum / kl_state.count, kl_ref)
  # β' = 0.04 · (1 + 0.1 · clip(KL / 0.05 − 1, ±0.2)).
  expected = 0.04 * (1 + 0.1 * np.clip(kl_ref / 0.05 - 1, -0.2, 0.2))
  _assert_close(objective.finalize(new_state).loss[1].coef, expected)

  # The loss uses the β of the state it is given: L(β) = L_pg + β · K, K the aggregated k3.
  state = objective.init()
  state = state._replace(loss=(state.loss[0], state.loss[1]._replace(coef=jnp.float32(0.5))))
  _, loss_half, _, (_, _, metrics_half, _), _ = _run(config, data, state=state)
  big_k = np.sum(_np_weights(_mask(), "seq_mean_token_mean") * k)
  _assert_close(loss_half - loss, (0.5 - 0.04) * big_k)
  _assert_close(metrics_half["kl_coef"], 0.5)


def test_partial_config_fills_from_the_signature():
  # Only overrides: the rest comes from DAPO's defaults, so the loss equals the full config's.
  partial = ml_collections.ConfigDict({"recipe": "dapo", "epsilon_high": 0.3})
  full = objectives.default_config("dapo")
  full.epsilon_high = 0.3
  data = _data()
  _, loss_partial, (grad_partial, _), _, _ = _run(partial, data)
  _, loss_full, (grad_full, _), _, _ = _run(full, data)
  _, loss_default, _, _, _ = _run(objectives.default_config("dapo"), data)
  np.testing.assert_array_equal(loss_partial, loss_full)
  np.testing.assert_array_equal(grad_partial, grad_full)
  assert loss_partial != loss_default
  # None means "the signature's default".
  config = objectives.default_config("grpo")
  config.kl_coef = None
  _, loss_none, _, _, _ = _run(config, data)
  _, loss_grpo, _, _, _ = _run(objectives.default_config("grpo"), data)
  np.testing.assert_array_equal(loss_none, loss_grpo)


def test_recipe_by_import_path():
  config = ml_collections.ConfigDict({"recipe": "grpojax.objectives.recipes:dapo"})
  _, loss, _, _, _ = _run(config)
  _, expected, _, _, _ = _run(objectives.default_config("dapo"))
  np.testing.assert_array_equal(loss, expected)


# ---------------------------------------------------------------------------------------------
# Bad configs and inputs.
# ---------------------------------------------------------------------------------------------


def _edit(recipe, **fields):
  """A partial config: `recipe` plus the given fields."""
  return ml_collections.ConfigDict({"recipe": recipe, **fields})


BAD_CONFIGS = [
  (_edit("grpoo"), "objective.recipe"),
  (ml_collections.ConfigDict({"epsilon_low": 0.1}), "objective.recipe"),
  (_edit("no_such_module:grpo"), "objective.recipe"),
  (_edit("grpojax.objectives.recipes:nothing"), "objective.recipe"),
  (_edit("grpojax.objectives.recipes:INF"), "objective.recipe"),
  (_edit("grpojax.objectives.recipes:tis"), "objective.recipe"),
  (_edit("grpo", correction={"name": "is"}), "objective.correction.name"),
  (_edit("grpo", epsilon_lwo=0.1), "objective.epsilon_lwo"),
  (_edit("sapo", epsilon_low=0.1), "objective.epsilon_low"),
  (_edit("grpo", entropy=0.1), "objective.entropy"),
  (_edit("grpo", epsilon_low=-0.1), "objective.epsilon_low"),
  (_edit("dapo", epsilon_high=-0.1), "objective.epsilon_high"),
  (_edit("gspo", epsilon_low=-1e-4), "objective.epsilon_low"),
  (_edit("sapo", tau_pos=0.0), "objective.tau_pos"),
  (_edit("sapo", tau_neg=-1.0), "objective.tau_neg"),
  (_edit("cispo", epsilon_high=-0.2), "objective.epsilon_high"),
  (_edit("maspo", sigma_high=0.5), "objective.sigma_high"),
  (_edit("flowrl", beta=0.0), "objective.beta"),
  (_edit("oapl", beta1=0.0), "objective.beta1"),
  (_edit("grpo", eps=-1e-6), "objective.eps"),
  (_edit("grpo", ddof=2), "objective.ddof"),
  (_edit("grpo", ddof=1.5), "objective.ddof"),
  (_edit("progrpo", low_prob_fraction=0.0), "objective.low_prob_fraction"),
  (_edit("stapo", prob_threshold=0.0), "objective.prob_threshold"),
  (_edit("stapo", entropy_rule="fixed"), "objective.entropy_threshold"),
  (_edit("stapo", entropy_rule="mean"), "objective.entropy_rule"),
  (_edit("kl_cov", kl_cov_coef=-1.0), "objective.kl_cov_coef"),
  (_edit("grpo", correction={"name": "tis", "high": 0.0}), "objective.correction.high"),
  (_edit("grpo", correction={"name": "mis", "low": 6.0}), "objective.correction.low"),
  (_edit("grpo", correction={"name": "tis", "level": "seq"}), "objective.correction.level"),
  (_edit("grpo", correction={"name": "opsm", "delta": -1.0}), "objective.correction.delta"),
  (_edit("grpo", correction={"name": "opsm", "high": 2.0}), "objective.correction.high"),
  (_edit("grpo", correction={"high": 2.0}), "objective.correction.high"),
  (_edit("grpo", kl_coef=-0.04), "objective.kl_coef"),
  (_edit("grpo", kl_kind="k4"), "objective.kl_kind"),
  (_edit("grpo", kl_target=0.1, kl_coef=0.0), "objective.kl_coef"),  # β_0 = 0.
  (_edit("grpo", entropy_coef=-0.01), "objective.entropy_coef"),
  (_edit("grpo", entropy_coef="0.01"), "objective.entropy_coef"),
  (_edit("grpo", epsilon_low="0.2"), "objective.epsilon_low"),
  (_edit("grpo", correction="tis"), "objective.correction"),
]


@pytest.mark.parametrize("config,path", BAD_CONFIGS, ids=[p for _, p in BAD_CONFIGS])
def test_bad_config_raises_naming_the_field(config, path):
  with pytest.raises(ValueError) as error:
    objectives.make(config)
  assert str(error.value).startswith(path + ":"), str(error.value)


def test_another_recipes_fields_say_which_arguments_exist():
  config = objectives.default_config("dapo")
  config.recipe = "sapo"  # Leaves DAPO's clip fields behind.
  with pytest.raises(ValueError, match=r"^objective\.\w+: not an argument of recipe 'sapo'"):
    objectives.make(config)


def test_default_config_rejects_unknown_recipe():
  with pytest.raises(ValueError, match=r"^objective\.recipe: "):
    objectives.default_config("ppo")


def test_pass_at_k_checks_k_against_the_group_size():
  with pytest.raises(ValueError, match=r"^objective\.k: "):
    objectives.make(_edit("pass_at_k", k=4), group_size=3)
  objective = objectives.make(_edit("pass_at_k", k=4), group_size=4)
  mask = jnp.ones((8, 2))
  adv, _ = objective.advantages(
    jnp.zeros((2, 4)), objective.init(), objectives.GroupInputs(mask=mask)
  )
  assert adv.shape == (8, 2)


def _bad_input_cases():
  data = _data()
  grpo = objectives.make(objectives.default_config("grpo"))
  x = _inputs(data, _advantages(grpo, data)[0])
  r = dataclasses.replace
  return [
    ("grpo", r(x, mask=x.mask[:, :3]), "inputs.mask"),
    ("grpo", r(x, old_logprobs=x.old_logprobs[:4]), "inputs.old_logprobs"),
    ("grpo", r(x, ref_logprobs=None), "ref_logprobs"),
    ("grpo", r(x, logprobs=x.logprobs[0]), "inputs.logprobs"),
    ("grpo", r(x, entropy=x.entropy.T), "inputs.entropy"),
    ("grpo", r(x, advantages=None), "advantages"),
    ("flowrl", r(x, log_z=None), "log_z"),
    ("flowrl", r(x, log_z=x.log_z[:3]), "inputs.log_z"),
    ("stapo", r(x, entropy=None), "entropy"),
    ("grpo", r(x, rewards=x.rewards[:2]), "inputs.rewards"),
    ("clip_cov", x, "key"),
    ("oapl", r(x, sampler_logprobs=None), "sampler_logprobs"),
  ]


def test_bad_inputs_raise_naming_the_input():
  for recipe, x, name in _bad_input_cases():
    objective = objectives.make(objectives.default_config(recipe))
    with pytest.raises(ValueError, match=r"\b" + name):
      objective.loss(objective.init(), x)


def test_bad_advantage_inputs_raise():
  objective = objectives.make(objectives.default_config("grpo"))
  state, mask = objective.init(), jnp.ones((6, 2))
  with pytest.raises(ValueError, match="rewards_pg"):
    objective.advantages(jnp.zeros(6), state, objectives.GroupInputs(mask=mask))
  with pytest.raises(ValueError, match="valid_pg"):
    objective.advantages(
      jnp.zeros((2, 3)), state, objectives.GroupInputs(valid_pg=jnp.ones((3, 2)), mask=mask)
    )
  with pytest.raises(ValueError, match="mask"):
    objective.advantages(jnp.zeros((2, 3)), state, objectives.GroupInputs())
  progrpo = objectives.make(objectives.default_config("progrpo"))
  with pytest.raises(ValueError, match="old_logprobs"):
    progrpo.advantages(jnp.zeros((2, 3)), progrpo.init(), objectives.GroupInputs(mask=mask))
  assert progrpo.advantages_need_old_logprobs and not objective.advantages_need_old_logprobs


def test_an_infinite_bound_is_no_bound():
  # dual_clip_c = inf (GRPO) and 1e30 give the same loss: "inf" is "off", not an error.
  data = _data()
  far = objectives.default_config("grpo")
  far.dual_clip_c = 1e30
  _, loss_far, _, _, _ = _run(far, data)
  _, loss_inf, _, _, _ = _run(objectives.default_config("grpo"), data)
  assert math.isinf(objectives.default_config("grpo").dual_clip_c)
  np.testing.assert_allclose(loss_far, loss_inf, rtol=1e-7)
