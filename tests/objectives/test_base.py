"""Tests for grpojax/objectives/base.py: chains of transforms and the Objective contract."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grpojax.objectives as objectives
from grpojax.objectives import aggregation, base, config
from grpojax.objectives import transforms as t


def _terms(b=2, n=3):
  return base.Terms(
    loss=jnp.zeros((b, n)), weights=jnp.ones((b, n)), mask=jnp.ones((b, n)), metrics={}
  )


def _scale_weights(factor, name="w"):
  """A toy transform: weights *= factor; reports `name`; counts its calls in its state."""

  def update(terms, state, x):
    new = terms._replace(
      weights=terms.weights * factor,
      metrics=base.merge_metrics(terms.metrics, {name: jnp.float32(factor)}),
    )
    return new, state + 1

  return base.LossTransform(init=lambda: jnp.int32(0), update=update)


def _drop_column(j):
  """A toy filter: drops token column j from the mask."""
  return base.stateless(lambda terms, x: terms._replace(mask=terms.mask.at[:, j].set(0.0)))


def test_chain_applies_in_order_and_keeps_a_tuple_of_states():
  chained = objectives.chain(_scale_weights(2.0, "a"), _scale_weights(3.0, "b"))
  state = chained.init()
  assert state == (0, 0)
  terms, state = chained.update(_terms(), state, None)
  np.testing.assert_array_equal(terms.weights, 6.0)
  assert state == (1, 1) and set(terms.metrics) == {"a", "b"}


def test_chain_of_chains_equals_the_flat_chain():
  parts = [_scale_weights(2.0, "a"), _drop_column(0), _scale_weights(5.0, "b"), _drop_column(2)]
  flat = objectives.chain(*parts)
  nested = objectives.chain(objectives.chain(parts[0], parts[1]), objectives.chain(*parts[2:]))
  out_flat, _ = flat.update(_terms(), flat.init(), None)
  out_nested, state = nested.update(_terms(), nested.init(), None)
  np.testing.assert_array_equal(out_nested.weights, out_flat.weights)
  np.testing.assert_array_equal(out_nested.mask, [[0, 1, 0], [0, 1, 0]])
  np.testing.assert_array_equal(out_nested.mask, out_flat.mask)
  assert state == ((1, ()), (1, ()))


def test_two_filters_in_a_row_multiply_their_masks():
  chained = objectives.chain(_drop_column(0), _drop_column(1))
  terms, _ = chained.update(_terms(), chained.init(), None)
  np.testing.assert_array_equal(terms.mask, [[0, 0, 1], [0, 0, 1]])


def test_a_metric_reported_twice_needs_named_chain():
  chained = objectives.chain(_scale_weights(2.0), _scale_weights(3.0))
  with pytest.raises(ValueError, match="reported twice.*named_chain"):
    chained.update(_terms(), chained.init(), None)
  named = objectives.named_chain(("first", _scale_weights(2.0)), ("second", _scale_weights(3.0)))
  terms, state = named.update(_terms(), named.init(), None)
  assert state == {"first": 1, "second": 1}
  assert terms.metrics == {"first/w": 2.0, "second/w": 3.0}
  np.testing.assert_array_equal(terms.weights, 6.0)


def test_named_chain_rejects_repeated_names_and_chains_one_kind():
  with pytest.raises(ValueError, match="unique"):
    objectives.named_chain(("a", _drop_column(0)), ("a", _drop_column(1)))
  group = t.group_advantages(lambda r, v: r)
  with pytest.raises(TypeError, match="one kind"):
    objectives.chain(_drop_column(0), group)
  with pytest.raises(ValueError, match="no transforms"):
    objectives.chain()


def test_group_chain_pipes_advantages():
  # A chain of group transforms: the first sees rewards, the next the first's output.
  chained = objectives.chain(
    t.group_advantages(lambda r, v: r - jnp.mean(r, axis=1, keepdims=True)),
    t.group_advantages(lambda a, v: 2.0 * a),
  )
  out, _ = chained.update(jnp.array([[1.0, 3.0]]), chained.init(), base.GroupInputs())
  np.testing.assert_array_equal(out, [[-2.0, 2.0]])


def test_requires_is_the_union_over_the_chain():
  chained = objectives.chain(
    t.kl_penalty(kl_coef=0.1), t.entropy_bonus(entropy_coef=0.01), _drop_column(0)
  )
  assert chained.requires == {"ref_logprobs", "entropy"}
  flowrl = objectives.make(objectives.default_config("flowrl"))
  assert {"log_z", "ref_logprobs", "old_logprobs"} <= flowrl.requires


def test_loss_inputs_is_a_pytree_whose_none_fields_hold_no_leaves():
  x = objectives.LossInputs(logprobs=jnp.zeros((2, 3)), mask=jnp.ones((2, 3)))
  assert len(jax.tree.leaves(x)) == 2
  half = jax.tree.map(lambda a: a[:1], x)
  assert half.mask.shape == (1, 3) and half.entropy is None
  assert set(base.INPUTS) == {f.name for f in dataclasses.fields(objectives.LossInputs)}


def test_objective_loss_is_jittable_and_vmappable_on_its_own():
  # One jittable function of the policy's outputs and the batch: jit and vmap over stacked
  # micro-batches give the eager values.
  objective = objectives.make(objectives.default_config("grpo"))
  k, b, n = 3, 4, 5

  def inputs(i):
    r = np.random.default_rng(i)
    lp = -np.abs(r.normal(size=(b, n))).astype(np.float32)
    return objectives.LossInputs(
      logprobs=jnp.asarray(lp),
      mask=jnp.asarray((r.random((b, n)) > 0.2).astype(np.float32)),
      old_logprobs=jnp.asarray(lp + 0.1 * r.normal(size=(b, n)).astype(np.float32)),
      ref_logprobs=jnp.asarray(lp + 0.3 * r.normal(size=(b, n)).astype(np.float32)),
      advantages=jnp.asarray(r.normal(size=(b, n)).astype(np.float32)),
    )

  state = objective.init()
  eager = [objective.loss(state, inputs(i)) for i in range(k)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[inputs(i) for i in range(k)])
  vmapped = jax.jit(jax.vmap(objective.loss, in_axes=(None, 0)))(state, stacked)
  for i, (loss_sum, denominator, metrics, _) in enumerate(eager):
    jitted = jax.jit(objective.loss)(state, inputs(i))
    np.testing.assert_allclose(jitted[0], loss_sum, rtol=1e-6)
    np.testing.assert_allclose(vmapped[0][i], loss_sum, rtol=1e-6)
    np.testing.assert_allclose(vmapped[1][i], denominator, rtol=1e-6)
    for name, value in metrics.items():
      np.testing.assert_allclose(vmapped[2][name][i], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_field_path_names_the_first_argument_the_message_mentions():
  fields = ("high", "low", "level")
  error = ValueError("low must be smaller than high, got low=3 >= high=2.")
  assert config._field_path("objective.correction", error, fields) == "objective.correction.low"
  # Word boundaries: 'low' is not in 'epsilon_low'; no field mentioned -> the section alone.
  assert config._field_path("objective", ValueError("bad epsilon_low"), ("low",)) == "objective"


def test_user_objective_with_a_new_piece_needs_no_registry():
  # A new surrogate with the contract joins a chain with one call.
  def halved_reinforce(logprobs, old_logprobs, advantages, mask):
    return 0.5 * jnp.where(mask > 0, -advantages * logprobs, 0.0), {}

  objective = objectives.Objective(
    advantage=t.group_advantages(lambda r, v: r),
    terms=objectives.chain(t.policy_loss(halved_reinforce)),
    aggregate=aggregation.token_mean,
  )
  x = objectives.LossInputs(
    logprobs=jnp.full((1, 2), -1.0),
    mask=jnp.ones((1, 2)),
    old_logprobs=jnp.full((1, 2), -1.0),
    advantages=jnp.full((1, 2), 2.0),
  )
  loss_sum, denominator, _, _ = objective.loss(objective.init(), x)
  # Σ 0.5 · (−2 · −1) over 2 tokens = 2; token mean 1.
  assert float(loss_sum) == 2.0 and float(denominator) == 2.0
