"""Tests for grpojax/objectives/transforms.py: stateful pieces are exact across micro-batches,
the KL controller follows its formula, regularisers and bad values."""

import dataclasses

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

import grpojax.objectives as objectives
from grpojax.objectives import recipes
from grpojax.objectives import transforms as t

B, T = 8, 4


def _inputs(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, T + 1, size=B)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
  lp = -np.abs(rng.normal(size=(B, T))).astype(np.float32) - 0.05
  return objectives.LossInputs(
    logprobs=jnp.asarray(lp),
    mask=jnp.asarray(mask),
    old_logprobs=jnp.asarray(lp + 0.2 * rng.normal(size=(B, T)).astype(np.float32)),
    sampler_logprobs=jnp.asarray(lp + 0.1 * rng.normal(size=(B, T)).astype(np.float32)),
    ref_logprobs=jnp.asarray(lp + 0.5 * rng.normal(size=(B, T)).astype(np.float32)),
    advantages=jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    entropy=jnp.asarray(np.abs(rng.normal(size=(B, T))).astype(np.float32)),
    values=jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    log_z=jnp.asarray(rng.normal(size=B).astype(np.float32)),
    temperature=jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    temperature_logprobs=jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    sampler_temperature_logprobs=jnp.asarray(rng.normal(size=(B, T)).astype(np.float32)),
    rewards=jnp.asarray(rng.random(B).astype(np.float32)),
    key=jax.random.key(seed),
  )


def _stateful_objectives():
  """Every objective with state: each recipe (stateless ones must stay so), the adaptive KL
  controller alone, and chained after a correction under names."""
  built = {name: objectives.make(objectives.default_config(name)) for name in recipes.RECIPES}
  adaptive = objectives.default_config("grpo")
  adaptive.kl_target = 0.05
  built["grpo_adaptive_kl"] = objectives.make(adaptive)
  grpo = built["grpo"]
  built["named_adaptive_after_tis"] = grpo._replace(
    terms=objectives.named_chain(
      ("tis", recipes.tis()),
      ("kl", t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.02)),
      ("kl2", t.adaptive_kl_penalty(kl_coef=0.3, kl_target=0.5, kl_kind="k2")),
    )
  )
  return built


STATEFUL = _stateful_objectives()


def _state_after(objective, x, cuts):
  """Updates over the micro-batches [cuts[i], cuts[i+1]) in order, then finalizes."""
  state = objective.init()
  for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
    rows = jax.tree.map(lambda a, r=slice(start, stop): a[r], dataclasses.replace(x, key=None))
    sub = dataclasses.replace(rows, key=x.key)
    state = objective.loss(state, sub)[3]
  return objective.finalize(state)


@pytest.mark.parametrize("name", STATEFUL)
@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), cuts=st.sets(st.integers(1, B - 1), max_size=4))
def test_state_after_a_step_is_the_same_for_any_micro_batch_split(name, seed, cuts):
  objective = STATEFUL[name]
  x = _inputs(seed)
  whole = _state_after(objective, x, [0, B])
  split = _state_after(objective, x, [0, *sorted(cuts), B])
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_adaptive_controller_follows_its_formula():
  # β_{k+1} = β_k (1 + rate · clip(KL/target − 1, ±max_error)), β_0 = 0.1, target 0.05, rate 0.1.
  kl = t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.05, kl_rate=0.1, kl_max_error=0.2)
  state = kl.init()
  assert state.coef.dtype == jnp.float32
  np.testing.assert_allclose(state.coef, 0.1)
  cases = [
    (0.055, 0.101),  # e = 0.055/0.05 − 1 = 0.1 -> 0.1 · (1 + 0.01) = 0.101
    (0.06, 0.102),  # e = 0.2 (the bound) -> 0.1 · 1.02
    (0.5, 0.102),  # e = 9 -> clipped to 0.2
    (0.04, 0.098),  # e = −0.2 -> 0.1 · 0.98
    (0.0, 0.098),  # e = −1 -> clipped to −0.2
  ]
  for observed, expected in cases:
    seen = state._replace(kl_sum=jnp.float32(observed * 10), count=jnp.float32(10))
    np.testing.assert_allclose(jax.jit(kl.finalize)(seen).coef, expected, rtol=1e-6)
  # No observation: β stays. Finalize clears the observations.
  np.testing.assert_allclose(kl.finalize(state).coef, 0.1)
  done = kl.finalize(state._replace(kl_sum=jnp.float32(0.55), count=jnp.float32(10)))
  assert float(done.kl_sum) == 0.0 and float(done.count) == 0.0
  # Two steps: 0.1 -> (e = 0.1) 0.101 -> (KL 0.045, e = −0.1) 0.101 · 0.99 = 0.09999.
  state = kl.finalize(state._replace(kl_sum=jnp.float32(0.055), count=jnp.float32(1)))
  state = kl.finalize(state._replace(kl_sum=jnp.float32(0.045), count=jnp.float32(1)))
  np.testing.assert_allclose(state.coef, 0.09999, rtol=1e-6)


def test_adaptive_controller_observes_the_token_mean_kl_without_gradient():
  kl = t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.05)
  x = _inputs(0)
  start = objectives.Terms(
    loss=jnp.zeros((B, T)), weights=jnp.ones((B, T)), mask=x.mask, metrics={}
  )
  _, state = kl.update(start, kl.init(), x)
  delta = np.asarray(x.logprobs - x.ref_logprobs, np.float64)
  k3 = np.exp(-delta) + delta - 1
  mask = np.asarray(x.mask) > 0
  np.testing.assert_allclose(state.kl_sum, k3[mask].sum(), rtol=1e-5)
  assert float(state.count) == mask.sum()
  grad = jax.grad(
    lambda lp: kl.update(start, kl.init(), dataclasses.replace(x, logprobs=lp))[1].kl_sum
  )(x.logprobs)
  np.testing.assert_array_equal(grad, 0.0)


def test_fixed_kl_and_entropy_bonus_add_their_terms():
  x = _inputs(1)
  start = objectives.Terms(
    loss=jnp.zeros((B, T)), weights=jnp.ones((B, T)), mask=x.mask, metrics={}
  )
  terms, _ = t.kl_penalty(kl_coef=0.5, kl_kind="k2").update(start, (), x)
  delta = np.asarray(x.logprobs - x.ref_logprobs, np.float64)
  mask = np.asarray(x.mask)
  np.testing.assert_allclose(terms.loss, 0.5 * 0.5 * delta**2 * mask, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(terms.metrics["kl_coef"], 0.5)
  terms, _ = t.entropy_bonus(entropy_coef=0.01).update(start, (), x)
  np.testing.assert_allclose(terms.loss, -0.01 * np.asarray(x.entropy) * mask, rtol=1e-6)


@pytest.mark.parametrize(
  "make,match",
  [
    (lambda: t.adaptive_kl_penalty(kl_coef=0.0, kl_target=0.1), "kl_coef"),
    (lambda: t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.0), "kl_target"),
    (lambda: t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.1, kl_rate=-1.0), "kl_rate"),
    (lambda: t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.1, kl_max_error=0.0), "kl_max_error"),
    (
      lambda: t.adaptive_kl_penalty(kl_coef=0.1, kl_target=0.1, kl_rate=5.0, kl_max_error=0.2),
      "kl_rate \\* kl_max_error",
    ),
    (lambda: t.kl_penalty(kl_coef=-0.1), "kl_coef"),
    (lambda: t.kl_penalty(kl_coef=0.1, kl_kind="k4"), "kl_kind"),
    (lambda: t.entropy_bonus(entropy_coef=-1.0), "entropy_coef"),
    (lambda: t.policy_loss(lambda *a: a, extras=("nothing",)), "unknown input"),
  ],
)
def test_bad_values_raise_naming_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()
