"""Length-bucketed updates equal the plain update (loss, parameters, metrics); the bucketing
helpers against hand-worked examples; bad `train.length_buckets` values are named."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import models, objectives, types
from grpojax.rl import length_buckets, step
from tests.rl import tiny_policy

P, G, TP, N = 4, 4, 3, 16
B = P * G
CFG = tiny_policy.CFG
HEADS = models.HeadsConfig(value=True, log_z=True, log_z_width=8, temperature=True)


def _batch(seed=0):
  """Completion lengths 1 .. N with early stops; row 3 has an appended (masked) token inside."""
  rs = np.random.RandomState(seed)
  lengths = rs.randint(1, N + 1, B)
  lengths[:2] = (1, N)
  attn_c = (np.arange(N)[None] < lengths[:, None]).astype(np.int32)
  comp_mask = attn_c.copy()
  comp_mask[3, 0] = 0  # an environment token: attended to, no loss
  prompt_mask = np.ones((B, TP), np.int32)
  prompt_mask[::3, 0] = 0  # left-padded prompts
  seqs = types.Sequences(
    tokens=jnp.asarray(rs.randint(3, 37, (B, TP + N)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([prompt_mask, attn_c], 1)),
    completion_mask=jnp.asarray(comp_mask),
  )
  return step.Batch(
    seqs=seqs,
    sampler_logprobs=jnp.asarray(-rs.rand(B, N) * attn_c, jnp.float32),
    rewards=jnp.asarray(rs.rand(B), jnp.float32),
  )


def _run(recipe, length_buckets_, **cfg):
  model = models.init_policy(CFG, seed=0, heads=HEADS)
  objective = objectives.make(objectives.default_config(recipe), group_size=G)
  opt = optax.sgd(0.1)
  graphdef, params = nnx.split(model)
  use_ref = "ref_logprobs" in objective.requires
  ucfg = step.UpdateConfig(
    group_size=G, temperature=0.8, seq_chunk=16, length_buckets=length_buckets_, **cfg
  )
  state = step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=opt.init(step.split_trainable(params)[0]),
    objective_state=objective.init(),
    ref_params=jax.tree.map(lambda x: x * 1.01, params) if use_ref else None,
    data=None,
  )
  update = jax.jit(step.build_update(graphdef, objective, opt, ucfg, use_reference=use_ref))
  return update(state, _batch(), jax.random.key(0))


def _assert_same_update(got, want):
  (s1, m1), (s0, m0) = got, want
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s0.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert set(m1) == set(m0)
  for name in m0:
    np.testing.assert_allclose(m1[name], m0[name], rtol=1e-5, atol=1e-6, err_msg=name)
  for a, b in zip(
    jax.tree.leaves(s1.objective_state), jax.tree.leaves(s0.objective_state), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


SLOW_RECIPES = ("dr_grpo", "gspo", "vcpo", "oapl", "flowrl")


@pytest.mark.parametrize(
  "recipe", ["grpo", *(pytest.param(r, marks=pytest.mark.slow) for r in SLOW_RECIPES)]
)
def test_bucketed_update_equals_the_plain_one(recipe):
  # Two minibatches (two optimiser steps, the old log-probs scored first, bucketed too) of two
  # micro-batches each; buckets of 8 and 16 tokens (4 buckets in the slow runs: 4, 8, 12, 16),
  # so the micro-batches of sorted rows take several.
  shape = dict(minibatches=2, microbatch_rows=4)
  num_buckets = 2 if recipe == "grpo" else 4
  _assert_same_update(_run(recipe, num_buckets, **shape), _run(recipe, 0, **shape))


def test_bucketed_update_with_fused_old_logprobs_and_several_micro_batches():
  # One optimiser step: the old log-probs come out of the bucketed forward pass itself.
  shape = dict(microbatch_rows=2)
  _assert_same_update(_run("dapo", 2, **shape), _run("dapo", 0, **shape))


def test_bucketing_is_off_where_the_grouping_or_every_token_matters():
  cfg = step.UpdateConfig(group_size=G, length_buckets=4)
  make = lambda recipe: objectives.make(objectives.default_config(recipe), group_size=G)
  assert step.buckets_lengths(make("grpo"), cfg, N) == (4, 8, 12, 16)
  assert step.buckets_lengths(make("grpo"), dataclasses.replace(cfg, length_buckets=0), N) is None
  # Clip-Cov and KL-Cov rank the micro-batch's tokens, STAPO takes their entropy quantile.
  for recipe in ("clip_cov", "kl_cov", "stapo"):
    assert make(recipe).micro_batch_statistics, recipe
    assert step.buckets_lengths(make(recipe), cfg, N) is None, recipe
  # A turn schedule (SeeUPO) runs the plain path.
  seeupo = make("grpo")._replace(turn_schedule=object())
  assert step.buckets_lengths(seeupo, cfg, N) is None


def test_bucket_lengths_and_index_hand_worked():
  # ⌈16·i/4⌉ = 4, 8, 12, 16; ⌈5·i/3⌉ = 2, 4, 5.
  assert length_buckets.bucket_lengths(16, 4) == (4, 8, 12, 16)
  assert length_buckets.bucket_lengths(5, 3) == (2, 4, 5)
  assert length_buckets.bucket_lengths(3, 3) == (1, 2, 3)
  index = lambda lengths: int(length_buckets.bucket_index(jnp.asarray(lengths), (4, 8, 12, 16)))
  assert [index([1, 4]), index([5, 2]), index([12]), index([13, 0]), index([0])] == [0, 1, 2, 3, 0]


def test_completion_lengths_count_attended_and_loss_tokens():
  # Row 0: completion attended up to position 2 (an appended token at 2 carries no loss) -> 3;
  # row 1: no completion -> 0; row 2: all 4 -> 4.
  attn = np.array([[1, 1, 1, 0, 1, 0], [0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  comp = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
  seqs = types.Sequences(
    tokens=jnp.zeros((3, 6), jnp.int32), attn_mask=jnp.asarray(attn), completion_mask=comp
  )
  np.testing.assert_array_equal(length_buckets.completion_lengths(seqs), [3, 0, 4])


def test_sort_within_keeps_rows_in_their_minibatch():
  lengths = jnp.asarray([5, 1, 3, 3, 2, 9, 0, 4])
  perm = length_buckets.sort_within(lengths, 2)
  # minibatch 0: lengths 5 1 3 3 -> rows 1, 2, 3, 0 (stable); minibatch 1: 2 9 0 4 -> 6, 4, 7, 5.
  np.testing.assert_array_equal(perm, [1, 2, 3, 0, 6, 4, 7, 5])
  inv = length_buckets.inverse_permutation(perm)
  np.testing.assert_array_equal(lengths[perm][inv], lengths)


def test_learn_cost_fraction_hand_worked():
  # Sorted lengths 1 2 | 5 16 in micro-batches of 2, buckets (4, 8, 12, 16): 4·2 + 16·2 = 40
  # of 4·16 = 64 positions.
  got = length_buckets.learn_cost_fraction(np.array([16, 2, 5, 1]), 2, (4, 8, 12, 16))
  assert got == pytest.approx(40 / 64)


@pytest.mark.parametrize("bad", [-1, 17, 2.5, True, "4"])
def test_bad_bucket_counts_name_the_field(bad):
  with pytest.raises(ValueError, match=r"train\.length_buckets"):
    length_buckets.check_num_buckets(bad, 16)


def test_dataclass_default_is_off():
  assert dataclasses.fields(step.UpdateConfig)[-1].name == "length_buckets"
  assert step.UpdateConfig(group_size=2).length_buckets == 0
