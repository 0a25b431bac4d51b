"""Rollout pipelines: which policy version each step trains on, the ring's resume, the async
producer's staleness bound and shutdown, and the correction that stale rollouts get."""

import json
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives, train, types
from grpojax.rl import pipeline, setup, source, step

REPO = __file__.rsplit("/tests/", 1)[0]
ROWS, N = 4, 3


def _fake_batch(index: int, version: int) -> step.Batch:
  """A batch whose fields record which step it is for and which version sampled it."""
  tokens = jnp.full((ROWS, 2 + N), index, jnp.int32)
  return step.Batch(
    seqs=types.Sequences(tokens, jnp.ones_like(tokens), jnp.ones((ROWS, N), jnp.int32)),
    sampler_logprobs=jnp.full((ROWS, N), -float(version), jnp.float32),
    rewards=jnp.full((ROWS,), float(index), jnp.float32),
  )


class _Params:
  """Stands for the policy: only its version matters to the fake producer."""

  def __init__(self, version):
    self.version = version


def _fake_produce(calls):
  def produce(params, data, index):
    calls.append((index, params.version))
    data = data._replace(source=data.source + 1)  # one read per rollout
    return pipeline.Produced(_fake_batch(index, params.version), data, {"index": float(index)})

  return produce


def _state(version, data):
  return step.TrainState(
    step=None, params=_Params(version), opt_state=None, objective_state=None, ref_params=None,
    data=data,
  )  # fmt: skip


def _ring(k):
  like = jax.eval_shape(lambda: _fake_batch(0, 0))
  return jax.tree.map(lambda x: jnp.zeros((k, *x.shape), x.dtype), like)


def _shardings():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",))
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda _: rep, jax.eval_shape(lambda: _fake_batch(0, 0)))


def _run_stale(k, total, start=0, ring=None, extra=None, source_pos=0, stop=None):
  calls = []
  pipe = pipeline.Stale(_fake_produce(calls), k, total, _shardings())
  pipe.restore(extra or {})
  data = source.DataState(source=source_pos, pending=_ring(k) if ring is None else ring)
  trained = []
  for t in range(start, total if stop is None else stop):
    produced, state = pipe.rollout(_state(t, data), t)  # the policy after t updates
    data = state.data
    trained.append(
      (int(produced.batch.rewards[0]), -int(produced.batch.sampler_logprobs[0, 0]), produced)
    )
  return trained, calls, pipe, data


def test_stale_step_t_trains_on_the_rollout_of_version_t_minus_k():
  k, total = 3, 8
  trained, calls, _, data = _run_stale(k, total)
  assert [(i, v) for i, v, _ in trained] == [(t, max(t - k, 0)) for t in range(total)]
  assert [p.version for _, _, p in trained] == [max(t - k, 0) for t in range(total)]
  assert [p.metrics["index"] for _, _, p in trained] == list(range(total))
  # Each step's rollout sampled once, in order, and no rollout beyond the run.
  assert [i for i, _ in calls] == list(range(total))
  assert data.source == total


def test_stale_ring_resumes_to_the_same_rollouts():
  k, total, cut = 2, 7, 4
  straight, _, _, _ = _run_stale(k, total)
  first, _, pipe, data = _run_stale(k, total, stop=cut)
  extra = pipe.checkpoint_extra()  # what the checkpoint at the end of step cut - 1 holds
  ring = jax.tree.map(np.asarray, data.pending)  # written to disk and read back
  second, calls, _, _ = _run_stale(
    k, total, start=cut, ring=jax.tree.map(jnp.asarray, ring), extra=extra,
    source_pos=data.source,
  )  # fmt: skip
  got = [(i, v) for i, v, _ in first + second]
  assert got == [(i, v) for i, v, _ in straight]
  assert [i for i, _ in calls] == list(range(cut + k, total))  # nothing sampled twice
  with pytest.raises(ValueError, match="staleness"):
    pipeline.Stale(_fake_produce([]), k + 1, total, _shardings()).restore(extra)


class _Clock:
  """Drives an async pipeline by hand: rollout n takes `produce_s` seconds to sample."""

  def __init__(self, produce_s):
    self.produce_s, self.calls = produce_s, []

  def __call__(self, params, data, index):
    time.sleep(self.produce_s)
    self.calls.append(index)
    return pipeline.Produced(_fake_batch(index, 0), data + 1, {"index": float(index)})


def _run_async(on_stale, k, steps, produce_s, learn_s):
  produce = _Clock(produce_s)
  pipe = pipeline.Async(produce, max_staleness=k, on_stale=on_stale, copy=lambda x: x)
  state = _state(0, 0)
  seen = []
  try:
    for t in range(steps):
      produced, state = pipe.rollout(state, t)
      seen.append((t, produced.version, int(produced.batch.rewards[0])))
      time.sleep(learn_s)  # the update
      state = state._replace(params=_Params(t + 1))
      pipe.published(state, t + 1)
  finally:
    pipe.close()
  return seen, pipe, produce


@pytest.mark.parametrize("on_stale", ["drop", "wait"])
def test_async_never_trains_on_a_rollout_older_than_the_bound(on_stale):
  k = 1
  # A fast producer runs ahead of a slow trainer: its queued rollouts age.
  seen, pipe, produce = _run_async(on_stale, k, steps=6, produce_s=0.002, learn_s=0.03)
  assert all(t - version <= k for t, version, _ in seen)
  indices = [i for _, _, i in seen]
  assert indices == sorted(indices)  # rollouts train in the order they were sampled
  assert sum(pipe.histogram.values()) == 6
  if on_stale == "wait":  # nothing sampled is wasted
    assert pipe.dropped == 0 and indices == list(range(6))
  else:  # the rollouts that aged past the bound were dropped, not trained
    assert pipe.dropped > 0 and len(set(indices)) == 6
  assert not any(th.name == "rollout-producer" for th in threading.enumerate())


def test_async_producer_error_reaches_the_trainer_and_the_thread_stops():
  def failing(params, data, index):
    if index == 2:
      raise ValueError("environment exploded on row 3")
    return pipeline.Produced(_fake_batch(index, 0), data, {})

  pipe = pipeline.Async(failing, max_staleness=4, on_stale="drop", copy=lambda x: x)
  state = _state(0, 0)
  with pytest.raises(RuntimeError, match="rollout producer failed.*environment exploded"):
    try:
      for t in range(5):
        _, state = pipe.rollout(state, t)
        pipe.published(state, t + 1)
    finally:
      pipe.close()
  assert not any(th.name == "rollout-producer" for th in threading.enumerate())


def test_close_while_the_producer_is_blocked_on_a_full_queue():
  seen, pipe, produce = _run_async("drop", 0, steps=1, produce_s=0.0, learn_s=0.05)
  assert seen == [(0, 0, 0)]
  assert not any(th.name == "rollout-producer" for th in threading.enumerate())


def _config():
  sys.path.insert(0, REPO)
  from configs import default

  return default.get_config("local")


def test_stale_rollouts_get_the_configured_correction_unless_turned_off():
  config = _config()
  sync_objective = setup.validate_config(config)
  assert "sampler_logprobs" not in sync_objective.requires  # plain GRPO: no correction
  config.rollout.pipeline.mode = "stale"
  config.rollout.pipeline.staleness = 2
  assert "sampler_logprobs" in setup.validate_config(config).requires  # TIS chained
  config.rollout.pipeline.correction = "none"  # the explicit opt-out
  assert "sampler_logprobs" not in setup.validate_config(config).requires
  # OAPL reads the sampler's (lagged) log-probs itself: nothing is chained in front.
  config.rollout.pipeline.correction = "tis"
  config.objective = objectives.default_config("oapl")
  lone = objectives.make(objectives.default_config("oapl"))
  assert setup.validate_config(config).terms.requires == lone.terms.requires


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("mode", "later", "must be one of"),
    ("staleness", -1, "must be >= 0"),
    ("on_stale", "panic", "must be one of"),
    ("correction", "magic", "must be one of"),
  ],
)
def test_bad_pipeline_fields_are_named(field, value, message):
  config = _config()
  config.rollout.pipeline.mode = "stale"
  config.rollout.pipeline[field] = value
  with pytest.raises(setup.ConfigError, match=rf"config\.rollout\.pipeline\.{field}: {message}"):
    setup.validate_config(config)


def test_staleness_outside_stale_mode_is_refused():
  config = _config()
  config.rollout.pipeline.staleness = 4  # mode is still "sync"
  with pytest.raises(setup.ConfigError, match="pipeline.staleness: is read only by mode 'stale'"):
    setup.validate_config(config)


def test_stale_training_sees_older_behaviour_log_probs_and_resumes_exactly(tmp_path, monkeypatch):
  """The trainer end to end at staleness 2: the update's mismatch metrics show rollouts from an
  older policy (zero when sync), and a run killed mid-way resumes to identical parameters."""
  from tests import test_train

  config = _config()
  config.objective.entropy_coef = 0.1  # the policy moves every step, rewarded or not
  config.optim.learning_rate = 1e-2
  config.optim.warmup_steps = 0  # the first update moves the policy too
  config.train.steps = 4
  config.checkpoint.every = 1
  config.rollout.pipeline.mode = "stale"
  config.rollout.pipeline.staleness = 2
  config.metrics.writers = ("jsonl",)
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  train.train_and_evaluate(config, straight)
  with open(os.path.join(straight, "metrics.jsonl")) as f:
    rl_rows = [r for r in map(json.loads, f) if "rollout/staleness" in r]
  assert [r["rollout/staleness"] for r in rl_rows] == [0, 1, 2, 2]
  # Sampled by the current policy: no mismatch; by an older one: the behaviour log-probs differ.
  assert rl_rows[0]["mismatch/abs_logprob"] < 1e-5
  assert all(r["mismatch/abs_logprob"] > 1e-3 for r in rl_rows[1:])
  real_step = train._rl_step
  calls = {"n": 0}

  def dying_step(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:  # after the checkpoints of RL steps 1 and 2
      raise KeyboardInterrupt("simulated kill")
    return real_step(*args, **kwargs)

  monkeypatch.setattr(train, "_rl_step", dying_step)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, killed)
  monkeypatch.setattr(train, "_rl_step", real_step)
  train.train_and_evaluate(config, killed)
  step_a, leaves_a = test_train._final_params(straight)
  step_b, leaves_b = test_train._final_params(killed)
  assert step_a == step_b == 6
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
