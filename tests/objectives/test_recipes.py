"""Tests for grpojax/objectives/recipes.py: every recipe end to end through `make`.

References are float64 NumPy re-implementations of the papers' formulas (advantage, surrogate,
KL term, aggregation), compared with the float32 chain. Inputs are tiny ([B, T] = [6, 5], two
groups of three), hold garbage (±inf, NaN, 1e30) on padding, and include an all-padding row that
is an invalid sample of its group.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import grpojax.objectives as objectives
from grpojax.objectives import aggregation, compose, recipes

P, G, T = 2, 3, 5
B = P * G
LENGTHS = np.array([5, 3, 1, 4, 2, 0])  # Row 5 is all padding: an invalid sample.
MAX_LEN = 8
# Group 0 mean 13/30: rows 0, 2 negative, row 1 positive; group 1: row 3 positive, row 4
# negative; row 5's reward is garbage (NaN) and must never matter.
REWARDS_PG = np.array([[0.0, 1.0, 0.3], [1.0, 0.2, np.nan]])
RTOL, ATOL = 1e-5, 1e-6
CLIPPING = ("ppo_clip", "gspo", "gspo_token", "gmpo", "cispo", "clip_cov")


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


def _policy(data):
  return objectives.PolicyOutputs(
    logprobs=jnp.asarray(_garbage(data.logprobs, -np.inf)),
    entropy=jnp.asarray(_garbage(data.entropy, np.nan)),
    log_z=jnp.asarray(np.where(LENGTHS > 0, data.log_z, np.nan).astype(np.float32)),
  )


def _advantages_pg(objective, data):
  return objective.advantages(
    jnp.asarray(data.rewards_pg),
    jnp.asarray(data.valid_pg),
    logprobs_bt=jnp.asarray(_garbage(data.old, 1e30)),
    mask_bt=jnp.asarray(data.mask),
  )


def _batch(data, adv_pg, *, rows=slice(None)):
  adv_bt = np.repeat(np.asarray(adv_pg, np.float32).reshape(B, 1), T, axis=1)
  full = objectives.LossBatch(
    old_logprobs=jnp.asarray(_garbage(data.old, 1e30)),
    sampler_logprobs=jnp.asarray(_garbage(data.sampler, np.nan)),
    advantages=jnp.asarray(_garbage(adv_bt, np.nan)),
    mask=jnp.asarray(data.mask),
    ref_logprobs=jnp.asarray(_garbage(data.ref, np.inf)),
    rewards=jnp.asarray(data.rewards_pg.reshape(B)),
    max_len=MAX_LEN,
  )
  return jax.tree.map(lambda x: x[rows], full)


def _loss_fn(objective):
  """(logprobs, log_z, entropy, batch, state, key) -> ((loss, aux), (∂logprobs, ∂log_z))."""

  def total(logprobs, log_z, entropy, batch, state, key):
    policy = objectives.PolicyOutputs(logprobs=logprobs, entropy=entropy, log_z=log_z)
    loss_sum, denominator, metrics, new_state = objective.loss(policy, batch, state, key)
    return aggregation.finalize(loss_sum, denominator), (loss_sum, denominator, metrics, new_state)

  return jax.value_and_grad(total, argnums=(0, 1), has_aux=True)


def _run(config, data=None, *, policy=None, key=None, state=None):
  """Builds, computes advantages, runs the loss eagerly (jit is covered by `jitted_recipes`).

  Returns:
    (objective, loss, (∂logprobs, ∂log_z), (loss_sum, denominator, metrics, new_state), adv_pg).
  """
  data = _data() if data is None else data
  objective = objectives.make(config)
  adv_pg = _advantages_pg(objective, data)
  policy = _policy(data) if policy is None else policy
  state = objective.init() if state is None else state
  (loss, aux), grads = _loss_fn(objective)(
    policy.logprobs, policy.log_z, policy.entropy, _batch(data, adv_pg), state, key
  )
  return objective, loss, grads, aux, adv_pg


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
  """Every recipe's loss and gradient from ONE jitted program (one XLA compile, not 18)."""
  data = _data()
  built = {name: objectives.make(recipes.default_config(name)) for name in recipes.RECIPES}
  adv_pgs = {name: _advantages_pg(o, data) for name, o in built.items()}
  batches = {name: _batch(data, adv_pgs[name]) for name in built}
  states = {name: o.init() for name, o in built.items()}
  policy = _policy(data)

  @jax.jit
  def run_all(logprobs, log_z, entropy, batches, states, key):
    return {
      name: _loss_fn(o)(logprobs, log_z, entropy, batches[name], states[name], key)
      for name, o in built.items()
    }

  outputs = run_all(
    policy.logprobs, policy.log_z, policy.entropy, batches, states, jax.random.key(1)
  )
  return {name: (built[name], outputs[name], adv_pgs[name]) for name in built}


@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_every_recipe_runs_under_jit_and_grad(recipe, jitted_recipes):
  objective, ((loss, aux), (grad_lp, grad_z)), adv_pg = jitted_recipes[recipe]
  config = objective.config
  loss_sum, denominator, metrics, new_state = aux
  assert np.isfinite(loss) and np.isfinite(loss_sum) and denominator > 0
  assert adv_pg.shape == (P, G) and np.all(np.isfinite(adv_pg))
  assert np.all(np.isfinite(grad_lp)) and np.all(np.isfinite(grad_z))
  assert np.any(grad_lp != 0)
  np.testing.assert_array_equal(np.asarray(grad_lp)[_mask() == 0], 0.0)
  if config.surrogate.name != "flowrl":
    np.testing.assert_array_equal(grad_z, 0.0)
  else:
    assert np.any(grad_z != 0) and grad_z[-1] == 0.0

  expected = set(compose.BASE_METRICS) | {"entropy_mean", "reward_mean"}
  if compose.kl_enabled(config.kl):
    expected |= {"kl_ref", "kl_coef"}
  if config.surrogate.name in CLIPPING:
    expected |= {"clip_frac_low", "clip_frac_high"}
  if config.token_filter.name == "stapo":
    expected |= {"stapo_masked_frac", "stapo_entropy_threshold"}
  assert expected <= set(metrics), expected - set(metrics)
  for name, value in metrics.items():
    assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value), name
  _assert_close(metrics["loss"], float(loss))

  assert jax.tree.structure(new_state) == jax.tree.structure(objective.init())
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new_state))


@pytest.mark.parametrize("recipe", recipes.RECIPES)
def test_default_config_is_explicit_and_resolves_to_itself(recipe):
  config = recipes.default_config(recipe)
  flat = config.to_dict()

  def leaves(d):
    for value in d.values():
      yield from leaves(value) if isinstance(value, dict) else [value]

  assert None not in list(leaves(flat))
  assert recipes.resolve(config).to_dict() == flat
  with pytest.raises(AttributeError):  # Locked: a typo cannot add a field.
    config.surrogate.epsilon_hihg = 0.3


def test_dapo_carries_sampler_and_data_settings_for_the_trainer():
  config = objectives.make(recipes.default_config("dapo")).config
  assert config.dynamic_sampling.enabled and config.overlong.enabled
  assert (config.overlong.max_len, config.overlong.cache) == (20480, 4096)
  assert config.dynamic_sampling.oversample_factor == 3.0
  grpo = objectives.make(recipes.default_config("grpo")).config
  assert not grpo.dynamic_sampling.enabled and not grpo.overlong.enabled


# ---------------------------------------------------------------------------------------------
# End-to-end references.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_grpo_matches_numpy_reference(kind):
  # GRPO: z-score (ddof 1, eps 1e-6), clip 0.2, β = 0.04 k-estimator in the loss,
  # (1/N) Σ_i (1/|o_i|) Σ_t [ppo + β k].
  config = recipes.default_config("grpo")
  config.kl.kind = kind
  data = _data()
  _, loss, (grad, _), (_, _, metrics, _), adv_pg = _run(config, data)

  adv_ref = _np_group_advantages(std=True)
  _assert_close(adv_pg, adv_ref)
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
  log_rho = old - _f64(data.sampler)
  _assert_close(metrics["mismatch_k3_kl"], _masked_mean(np.exp(log_rho) - 1 - log_rho, mask))
  _assert_close(metrics["entropy_mean"], _masked_mean(_f64(data.entropy), mask))
  _assert_close(metrics["reward_mean"], np.nanmean(REWARDS_PG))
  _assert_close(metrics["masked_frac"], 0.0)


def test_dapo_matches_numpy_reference():
  # DAPO: z-score, clip-higher 0.2/0.28, dual clip c = 10, Σ_all ℓ / Σ_all m, no KL.
  data = _data()
  old = data.old.copy()
  old[0, 1] = data.logprobs[0, 1] - 3.0  # r = e^3 ≈ 20 > c on a negative-advantage row.
  data = data._replace(old=old)
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(recipes.default_config("dapo"), data)

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
  # Dr. GRPO: A = r − mean_g r, clip 0.2, Σ_i Σ_t ℓ / (N · L_max), no KL.
  data = _data()
  _, loss, (grad, _), (loss_sum, denominator, _, _), adv_pg = _run(
    recipes.default_config("dr_grpo"), data
  )
  adv_ref = _np_group_advantages(std=False)
  _assert_close(adv_pg, adv_ref)
  surrogate, d_surrogate = _np_ppo(
    _f64(data.logprobs), _f64(data.old), _tokens(adv_ref), eps_low=0.2, eps_high=0.2
  )
  weights = _np_weights(_mask(), "seq_mean_token_sum_norm")
  _assert_close(loss, np.sum(weights * surrogate))
  _assert_close(grad, weights * d_surrogate)
  assert denominator == 5 * MAX_LEN  # Five valid rows; the all-padding row does not count.


def test_gspo_matches_numpy_reference():
  # GSPO: s_i = exp(mean_t Δ), L_i = max(−A s, −A clip(s, 1 − 3e-4, 1 + 4e-4)), mean_i L_i.
  data = _data()
  old = data.old.copy()
  # Row 0 has zero mean log-ratio (so s_0 = 1 sits inside the band and keeps its gradient),
  # with non-trivial token ratios.
  old[0] = data.logprobs[0] - np.array([0.1, -0.1, 0.05, -0.05, 0.0], np.float32)
  data = data._replace(old=old)
  _, loss, (grad, _), _, _ = _run(recipes.default_config("gspo"), data)

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
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(recipes.default_config("cispo"), data)
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
  _, loss, (grad, _), (_, _, metrics, _), _ = _run(recipes.default_config("stapo"), data)

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


def test_mis_correction_reweights_and_renormalises_over_kept_tokens():
  # GRPO + token MIS with band [0.95, 1.05]: w = ρ · keep multiplies the surrogate; the KL term
  # and the seq-mean-token-mean denominators use the kept tokens only.
  config = recipes.default_config("grpo")
  config.correction = ml_collections.ConfigDict({"name": "mis", "low": 0.95, "high": 1.05})
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
  config = recipes.default_config("gspo")
  config.correction = ml_collections.ConfigDict({"name": "mis", "low": 0.95, "high": 1.05})
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
  config = recipes.default_config("dapo")
  config.correction = ml_collections.ConfigDict({"name": "tis", "high": 1.05})
  data = _data()
  _, loss, (grad, _), _, _ = _run(config, data)
  lp, old, mask = _f64(data.logprobs), _f64(data.old), _mask()
  weight = np.minimum(np.exp(old - _f64(data.sampler)), 1.05)
  adv = _tokens(_np_group_advantages(std=True))
  surrogate, d_surrogate = _np_ppo(lp, old, adv, eps_low=0.2, eps_high=0.28, dual_c=10.0)
  weights = _np_weights(mask, "token_mean")
  _assert_close(loss, np.sum(weights * weight * surrogate))
  _assert_close(grad, weights * weight * d_surrogate)


# ---------------------------------------------------------------------------------------------
# Composition properties.
# ---------------------------------------------------------------------------------------------


def _mis_grpo():
  config = recipes.default_config("grpo")
  config.correction = ml_collections.ConfigDict({"name": "mis", "low": 0.95, "high": 1.05})
  return config


def _tis_dapo():
  config = recipes.default_config("dapo")
  config.correction = ml_collections.ConfigDict({"name": "tis", "high": 1.05})
  return config


@pytest.mark.parametrize(
  "make_config",
  [
    lambda: recipes.default_config("grpo"),
    lambda: recipes.default_config("dr_grpo"),
    lambda: recipes.default_config("gspo"),
    lambda: recipes.default_config("rloo"),
    _tis_dapo,
    _mis_grpo,
  ],
  ids=["grpo", "dr_grpo", "gspo", "rloo", "dapo+tis", "grpo+mis"],
)
def test_micro_batches_sum_to_the_whole_batch(make_config):
  # Splitting the rows in two micro-batches and summing (sum, denominator) gives the
  # full-batch loss and gradient. (Equal halves: one extra shape to compile.)
  data = _data(seed=3)
  objective = objectives.make(make_config())
  adv_pg = _advantages_pg(objective, data)
  policy = _policy(data)
  state = objective.init()

  def whole(logprobs):
    out = objective.loss(policy._replace(logprobs=logprobs), _batch(data, adv_pg), state)
    return aggregation.finalize(*out[:2])

  def split(logprobs):
    sums = denominators = 0.0
    for rows in (slice(0, B // 2), slice(B // 2, B)):
      sub_policy = jax.tree.map(lambda x, r=rows: x[r], policy._replace(logprobs=logprobs))
      loss_sum, denominator, _, _ = objective.loss(
        sub_policy, _batch(data, adv_pg, rows=rows), state
      )
      sums, denominators = sums + loss_sum, denominators + denominator
    return aggregation.finalize(sums, denominators)

  value, grad = jax.value_and_grad(whole)(policy.logprobs)
  split_value, split_grad = jax.value_and_grad(split)(policy.logprobs)
  np.testing.assert_allclose(split_value, value, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(split_grad, grad, rtol=1e-6, atol=1e-8)
  assert np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize(
  "surrogate",
  ["ppo_clip", "gspo", "gspo_token", "gmpo", "sapo", "cispo", "maspo", "vespo", "kl_cov"],
)
def test_on_policy_gradient_equals_reinforce_with_group_advantages(surrogate):
  # On-policy (π_old = π_θ) every trust region / IS weight is 1, so with token-mean aggregation
  # the gradient is REINFORCE's: −(1/N) Σ Â ∇logπ. For GRPO (ppo_clip) this is the textbook
  # identity; the others share it (SAPO: 4σ(1−σ)r = 1 at r = 1; VESPO: φ(1) = 1; ...).
  data = _data()
  data = data._replace(old=data.logprobs, sampler=data.logprobs)
  config = recipes.default_config("grpo")
  config.surrogate = ml_collections.ConfigDict({"name": surrogate})
  config.kl.coef = 0.0
  config.aggregation = "token_mean"
  _, _, (grad, _), _, _ = _run(config, data)
  _, _, (reinforce_grad, _), _, _ = _run(recipes.default_config("reinforce"), data)
  adv = _tokens(_np_group_advantages(std=True))
  _assert_close(reinforce_grad, -adv * _mask() / _mask().sum())
  np.testing.assert_allclose(grad, reinforce_grad, rtol=1e-5, atol=1e-7)


def test_adaptive_kl_coefficient_drives_the_loss_and_updates():
  config = recipes.default_config("grpo")
  config.kl.controller = "adaptive"
  config.kl.target = 0.05
  data = _data()
  objective, loss, _, (_, _, metrics, new_state), _ = _run(config, data)
  k, _ = _np_kl(_f64(data.logprobs), _f64(data.ref), "k3")
  kl_ref = _masked_mean(k, _mask())
  _assert_close(metrics["kl_ref"], kl_ref)
  _assert_close(metrics["kl_coef"], 0.04)
  # β' = 0.04 · (1 + 0.1 · clip(KL / 0.05 − 1, ±0.2)).
  expected = 0.04 * (1 + 0.1 * np.clip(kl_ref / 0.05 - 1, -0.2, 0.2))
  _assert_close(new_state.kl.coef, expected)

  # The loss uses the β of the state it is given: L(β) = L_pg + β · K, K the aggregated k3.
  state = compose.ObjectiveState(kl=compose.KLControllerState(coef=jnp.float32(0.5)))
  _, loss_half, _, (_, _, metrics_half, _), _ = _run(config, data, state=state)
  big_k = np.sum(_np_weights(_mask(), "seq_mean_token_mean") * k)
  _assert_close(loss_half - loss, (0.5 - 0.04) * big_k)
  _assert_close(metrics_half["kl_coef"], 0.5)


def test_partial_config_fills_from_recipe_and_piece_defaults():
  # Only overrides: the rest comes from DAPO.
  config = ml_collections.ConfigDict({"recipe": "dapo", "surrogate": {"epsilon_high": 0.3}})
  resolved = objectives.resolve(config)
  assert resolved.surrogate.to_dict() == {
    "name": "ppo_clip",
    "epsilon_low": 0.2,
    "epsilon_high": 0.3,
    "dual_clip_c": 10.0,
  }
  assert resolved.aggregation == "token_mean" and resolved.overlong.enabled
  # Another piece: its own defaults, not DAPO's clip values.
  config = ml_collections.ConfigDict({"recipe": "dapo", "surrogate": {"name": "sapo"}})
  assert objectives.resolve(config).surrogate.to_dict() == {
    "name": "sapo",
    "tau_pos": 1.0,
    "tau_neg": 1.05,
  }
  # None means "the recipe's default".
  config = recipes.default_config("grpo")
  config.kl.coef = None
  config.aggregation = None
  resolved = objectives.resolve(config)
  assert resolved.kl.coef == 0.04 and resolved.aggregation == "seq_mean_token_mean"


# ---------------------------------------------------------------------------------------------
# Bad configs and inputs.
# ---------------------------------------------------------------------------------------------


def _edit(recipe, **stages):
  """A partial config: `recipe` plus the given sub-configs / values."""
  return ml_collections.ConfigDict({"recipe": recipe, **stages})


BAD_CONFIGS = [
  (_edit("grpoo"), "objective.recipe"),
  (ml_collections.ConfigDict({"surrogate": {"name": "sapo"}}), "objective.recipe"),
  (_edit("grpo", surrogate={"name": "ppo_clipp"}), "objective.surrogate.name"),
  (_edit("grpo", advantage={"name": "zscore"}), "objective.advantage.name"),
  (_edit("grpo", correction={"name": "is"}), "objective.correction.name"),
  (_edit("grpo", token_filter={"name": "s2t"}), "objective.token_filter.name"),
  (_edit("grpo", surrogate={"epsilon_lwo": 0.1}), "objective.surrogate.epsilon_lwo"),
  (_edit("grpo", kl={"cof": 0.1}), "objective.kl.cof"),
  (_edit("grpo", overlong={"max_length": 10}), "objective.overlong.max_length"),
  (_edit("grpo", entropy=0.1), "objective.entropy"),
  (_edit("grpo", surrogate={"epsilon_low": -0.1}), "objective.surrogate.epsilon_low"),
  (_edit("dapo", surrogate={"epsilon_high": -0.1}), "objective.surrogate.epsilon_high"),
  (_edit("gspo", surrogate={"epsilon_low": -1e-4}), "objective.surrogate.epsilon_low"),
  (_edit("sapo", surrogate={"tau_pos": 0.0}), "objective.surrogate.tau_pos"),
  (_edit("sapo", surrogate={"tau_neg": -1.0}), "objective.surrogate.tau_neg"),
  (_edit("cispo", surrogate={"epsilon_high": -0.2}), "objective.surrogate.epsilon_high"),
  (_edit("maspo", surrogate={"sigma_high": 0.5}), "objective.surrogate.sigma_high"),
  (_edit("flowrl", surrogate={"beta": 0.0}), "objective.surrogate.beta"),
  (_edit("oapl", advantage={"beta1": 0.0}), "objective.advantage.beta1"),
  (_edit("grpo", advantage={"eps": -1e-6}), "objective.advantage.eps"),
  (_edit("grpo", advantage={"ddof": 2}), "objective.advantage.ddof"),
  (_edit("grpo", advantage={"ddof": 1.5}), "objective.advantage.ddof"),
  (_edit("progrpo", advantage={"low_prob_fraction": 0.0}), "objective.advantage.low_prob_fraction"),
  (_edit("stapo", token_filter={"prob_threshold": 0.0}), "objective.token_filter.prob_threshold"),
  (
    _edit("stapo", token_filter={"entropy_rule": "fixed"}),
    "objective.token_filter.entropy_threshold",
  ),
  (_edit("grpo", correction={"name": "tis", "high": 0.0}), "objective.correction.high"),
  (_edit("grpo", correction={"name": "mis", "low": 6.0}), "objective.correction.low"),
  (_edit("grpo", correction={"name": "tis", "level": "seq"}), "objective.correction.level"),
  (_edit("grpo", correction={"name": "opsm", "delta": -1.0}), "objective.correction.delta"),
  (_edit("grpo", kl={"coef": -0.04}), "objective.kl.coef"),
  (_edit("grpo", kl={"kind": "k4"}), "objective.kl.kind"),
  (_edit("grpo", kl={"controller": "pid"}), "objective.kl.controller"),
  (_edit("grpo", kl={"controller": "adaptive", "target": 0.0}), "objective.kl.target"),
  (_edit("dapo", kl={"controller": "adaptive"}), "objective.kl.coef"),  # β_0 = 0.
  (_edit("grpo", aggregation="mean"), "objective.aggregation"),
  (_edit("grpo", entropy_coef=-0.01), "objective.entropy_coef"),
  (_edit("grpo", entropy_coef="0.01"), "objective.entropy_coef"),
  (_edit("dapo", overlong={"cache": 30000}), "objective.overlong.cache"),
  (_edit("grpo", surrogate="ppo_clip"), "objective.surrogate"),
]


@pytest.mark.parametrize("config,path", BAD_CONFIGS, ids=[p for _, p in BAD_CONFIGS])
def test_bad_config_raises_naming_the_field(config, path):
  with pytest.raises(ValueError) as error:
    objectives.make(config)
  assert str(error.value).startswith(path + ":"), str(error.value)


def test_switching_piece_in_a_default_config_says_how():
  config = recipes.default_config("dapo")
  config.surrogate.name = "sapo"  # Leaves ppo_clip's fields behind.
  with pytest.raises(ValueError, match=r"objective\.surrogate\.\w+: .*replace the whole"):
    objectives.make(config)


def test_default_config_rejects_unknown_recipe():
  with pytest.raises(ValueError, match=r"^objective\.recipe: "):
    recipes.default_config("ppo")


def test_pass_at_k_checks_k_against_the_group_size_at_call_time():
  objective = objectives.make(_edit("grpo", advantage={"name": "pass_at_k", "k": 4}))
  with pytest.raises(ValueError, match=r"^objective\.advantage\.k: "):
    objective.advantages(jnp.zeros((2, 3)))
  assert objective.advantages(jnp.zeros((2, 4))).shape == (2, 4)


def _bad_input_cases():
  data = _data()
  grpo = objectives.make(recipes.default_config("grpo"))
  adv_pg = _advantages_pg(grpo, data)
  batch, policy = _batch(data, adv_pg), _policy(data)
  mask_bad = dataclasses.replace(batch, mask=batch.mask[:, :3])
  return [
    ("grpo", policy, mask_bad, "batch.mask"),
    ("grpo", policy, dataclasses.replace(batch, old_logprobs=batch.old_logprobs[:4]), "batch.old"),
    ("grpo", policy, dataclasses.replace(batch, ref_logprobs=None), "batch.ref_logprobs"),
    ("grpo", policy._replace(logprobs=policy.logprobs[0]), batch, "policy.logprobs"),
    ("grpo", policy._replace(entropy=policy.entropy.T), batch, "policy.entropy"),
    ("flowrl", policy._replace(log_z=None), batch, "policy.log_z"),
    ("flowrl", policy._replace(log_z=policy.log_z[:3]), batch, "policy.log_z"),
    ("stapo", policy._replace(entropy=None), batch, "policy.entropy"),
    ("dr_grpo", policy, dataclasses.replace(batch, max_len=None), "batch.max_len"),
    ("grpo", policy, dataclasses.replace(batch, rewards=batch.rewards[:2]), "batch.rewards"),
    ("clip_cov", policy, batch, "key"),
  ]


def test_bad_inputs_raise_naming_the_input():
  for recipe, policy, batch, name in _bad_input_cases():
    objective = objectives.make(recipes.default_config(recipe))
    with pytest.raises(ValueError, match=r"\b" + name):
      objective.loss(policy, batch, objective.init(), None)


def test_bad_advantage_inputs_raise():
  objective = objectives.make(recipes.default_config("grpo"))
  with pytest.raises(ValueError, match="rewards_pg"):
    objective.advantages(jnp.zeros(6))
  with pytest.raises(ValueError, match="valid_pg"):
    objective.advantages(jnp.zeros((2, 3)), jnp.ones((3, 2)))
  progrpo = objectives.make(recipes.default_config("progrpo"))
  with pytest.raises(ValueError, match="logprobs_bt"):
    progrpo.advantages(jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="logprobs_bt"):
    progrpo.advantages(jnp.zeros((2, 3)), logprobs_bt=jnp.zeros((5, 4)), mask_bt=jnp.ones((5, 4)))
