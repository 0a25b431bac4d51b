"""Rollout assembly: DAPO dynamic sampling refills uninformative groups, shapes stay fixed."""

import dataclasses
import os
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import rollout, setup, source
from grpojax.tasks import example as example_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(dynamic: bool):
  sys.path.insert(0, REPO)
  from configs import common

  config = common.finish(common.base("dapo"), "local")
  config.rollout.refill.enabled = dynamic
  config.rollout.refill.max_generation_batches = 4
  config.rollout.prompts_per_step = 4
  return config


def _task():
  """Even-indexed problems are 'decided' (every sample gets reward 1: no signal); odd ones
  reward completions by their first character, so their groups are informative."""

  def train(i):
    kind = "decided" if i % 2 == 0 else "open"
    return example_lib.Example(prompt=f"{i % 10}+1=", answer=kind, solution="1")

  def reward(text, ex):
    if ex.answer == "decided":
      return 1.0
    return float(len(text) > 0 and text[0] in "0123456789")

  return example_lib.Task(name="fake", train=train, heldout=[train(1)], reward_fn=reward)


ONE_DEVICE = layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))


def _sample(run, layout, config, key, params=None):
  """`rollout.sample_groups` from the start of the prompt stream; (rollout, position)."""
  graphdef, own = nnx.split(run.model)
  sampler = rollout.make_sampler(graphdef, config, run.tokenizer)
  src = source.sequential()
  ro = rollout.sample_groups(
    run,
    layout,
    sampler,
    own if params is None else params,
    config,
    src,
    source.DataState(source=src.init()),
    key,
    rollout.group_edit(config),
  )
  return ro, int(ro.data.source.position)


@pytest.fixture(scope="module")
def fake_run():
  config = _config(dynamic=True)
  run = setup.build_run(config)
  return dataclasses.replace(run, task=_task())


def test_dynamic_sampling_keeps_informative_groups_and_counts_data(fake_run):
  config = _config(dynamic=True)
  ro, position = _sample(fake_run, ONE_DEVICE, config, jax.random.key(0))
  p, g = 4, config.rollout.samples_per_prompt
  assert ro.batch.seqs.tokens.shape[0] == p * g  # shape never changes
  rewards_pg = np.asarray(ro.batch.rewards).reshape(p, g)
  spread = rewards_pg.max(axis=1) > rewards_pg.min(axis=1)
  np.testing.assert_array_equal(spread, ro.informative)
  # Informative groups come first; any filler group is uninformative and carries no loss.
  mask = np.asarray(ro.batch.seqs.completion_mask).reshape(p, g, -1)
  for i in range(p):
    assert (mask[i].sum() > 0) == bool(ro.informative[i])
  assert list(ro.informative) == sorted(ro.informative, reverse=True)
  batches = int(ro.metrics["rollout/generation_batches"])
  assert position == batches * p  # every generated prompt is consumed from the stream
  assert batches >= 2  # half the prompts are decided, so one batch cannot fill four groups
  # The discarded groups were sampled too: the step's token count is more than it trains on.
  assert ro.metrics["rollout/generated_tokens"] > mask.sum()


def test_without_dynamic_sampling_one_batch_in_order(fake_run):
  config = _config(dynamic=False)
  ro, position = _sample(fake_run, ONE_DEVICE, config, jax.random.key(0))
  assert position == 4 and ro.metrics["rollout/generation_batches"] == 1
  decided = np.asarray(ro.batch.rewards).reshape(4, -1)[[0, 2]]
  assert (decided == 1.0).all()  # prompts 0 and 2 kept in place, uninformative
  assert np.asarray(ro.batch.seqs.completion_mask).sum() > 0
  assert ro.metrics["rollout/generated_tokens"] == np.asarray(ro.batch.seqs.completion_mask).sum()


class _TimingOutReward:
  """A reward function under a time limit: every third call 'times out' (scores 0 and is
  counted), the others score 1."""

  def __init__(self):
    self.timeouts = 0
    self.calls = 0

  def __call__(self, text, ex):
    self.calls += 1
    if self.calls % 3 == 0:
      self.timeouts += 1
      return 0.0
    return 1.0


def test_reward_timeouts_are_reported_per_step_and_answers_scored_once(fake_run):
  config = _config(dynamic=False)
  reward = _TimingOutReward()
  run = dataclasses.replace(fake_run, task=dataclasses.replace(fake_run.task, reward_fn=reward))
  graphdef, own = nnx.split(run.model)
  sampler = rollout.make_sampler(graphdef, config, run.tokenizer)
  src = source.sequential()
  data = source.DataState(source=src.init())
  rows = config.rollout.prompts_per_step * config.rollout.samples_per_prompt  # 4 x 4
  for step in range(2):
    reward.timeouts += 5  # counted before this step: not this step's
    ro = rollout.sample_groups(
      run,
      ONE_DEVICE,
      sampler,
      own,
      config,
      src,
      data,
      jax.random.key(step),
      rollout.group_edit(config),
    )
    data = ro.data
    # Calls 16s+1 .. 16s+16 score the rows in order; every third one timed out.
    calls = np.arange(step * rows + 1, (step + 1) * rows + 1)
    np.testing.assert_array_equal(np.asarray(ro.batch.rewards), np.where(calls % 3 == 0, 0.0, 1.0))
    assert ro.metrics["reward/timeouts"] == np.sum(calls % 3 == 0)  # 5 in step 0, 6 in step 1
  assert reward.calls == 2 * rows  # each answer judged once, not again for its correctness


def test_no_timeout_metric_without_a_time_limit(fake_run):
  ro, _ = _sample(fake_run, ONE_DEVICE, _config(dynamic=False), jax.random.key(0))
  assert "reward/timeouts" not in ro.metrics


def test_too_long_prompt_is_named(fake_run):
  config = _config(dynamic=False)
  ex = example_lib.Example(prompt="1" * 40, answer="1", solution="1")
  with pytest.raises(ValueError, match="max_prompt_len"):
    rollout.encode_prompts(fake_run, [ex], config.rollout.max_prompt_len, 0)


@pytest.mark.parametrize("dynamic", [False, True])
def test_rollout_split_over_eight_devices_equals_one_device(fake_run, dynamic):
  """Rows split over 8 devices (each reading and verifying its own) give the same rollout."""
  config = _config(dynamic=dynamic)
  params = nnx.state(fake_run.model)
  eight = layout_lib.Layout(mesh_lib.make_mesh({"data": 4, "fsdp": 2}))
  one, pos1 = _sample(fake_run, ONE_DEVICE, config, jax.random.key(3))
  many, pos8 = _sample(
    fake_run,
    eight,
    config,
    jax.random.key(3),
    jax.device_put(params, eight.sample_shardings(params)),
  )
  assert pos1 == pos8
  assert many.batch.seqs.tokens.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(one.batch.rewards), np.asarray(many.batch.rewards))
  for a, b in zip(jax.tree.leaves(one.batch.seqs), jax.tree.leaves(many.batch.seqs), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(
    np.asarray(one.batch.sampler_logprobs), np.asarray(many.batch.sampler_logprobs), atol=1e-5
  )
  assert one.metrics == many.metrics
