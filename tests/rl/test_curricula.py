"""Tests for grpojax/rl/curricula.py: utilities, the teacher's update, selection, replay, resume,
and the Goldilocks and PACED-RL configs end to end."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import checkpoint as checkpoint_lib
from grpojax.rl import curricula

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _np_teacher(params, features):
  """float64 forward: standardise rows, tanh layer, sigmoid output; returns (p, x, h)."""
  w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in params)
  f = np.asarray(features, np.float64)
  x = (f - f.mean(-1, keepdims=True)) / np.sqrt(f.var(-1, keepdims=True) + 1e-5)
  h = np.tanh(x @ w1 + b1)
  p = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
  return p, x, h


def test_utilities_against_numpy():
  p = np.array([-0.2, 0.0, 0.1, 0.5, 0.75, 1.0, 1.3])
  pc = np.clip(p, 0, 1)
  np.testing.assert_allclose(
    curricula.goldilocks_utility(jnp.asarray(p, jnp.float32)), np.sqrt(pc * (1 - pc)), atol=1e-7
  )
  # √(p(1-p)) peaks at 1/2: √(.5·.5) = .5; at .1: √.09 = .3.
  assert float(curricula.goldilocks_utility(jnp.float32(0.5))) == 0.5
  np.testing.assert_allclose(
    curricula.paced_utility(jnp.asarray(p, jnp.float32), tau=0.4), -np.abs(p - 0.4), atol=1e-7
  )


def test_teacher_sgd_step_against_float64_backprop():
  rng = np.random.default_rng(0)
  f, h, k = 5, 3, 6
  params = curricula.teacher_init(jax.random.PRNGKey(1), f, h)
  features = rng.normal(size=(k, f)).astype(np.float32) * 3 + 1
  acc = rng.uniform(size=k).astype(np.float32)
  valid = np.array([1, 1, 1, 1, 0, 1], bool)
  lr = 0.7
  new, loss = curricula.teacher_sgd_step(
    params, jnp.asarray(features), jnp.asarray(acc), jnp.asarray(valid), learning_rate=lr
  )
  # Reference: L = Σ v (p − a)² / Σ v, p = σ(z), z = h·w2 + b2, h = tanh(x W1 + b1).
  p, x, hid = _np_teacher(params, features)
  v = valid.astype(np.float64)
  ref_loss = np.sum(v * (p - acc) ** 2) / v.sum()
  dz = v * 2 * (p - acc) / v.sum() * p * (1 - p)  # dL/dz [K]
  g_w2, g_b2 = hid.T @ dz, dz.sum()
  da = np.outer(dz, np.asarray(params.w2, np.float64)) * (1 - hid**2)  # dL/d(pre-tanh) [K, H]
  g_w1, g_b1 = x.T @ da, da.sum(0)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  for got, p0, g in zip(new, params, (g_w1, g_b1, g_w2, g_b2), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(p0, np.float64) - lr * g, atol=1e-6)
  # The prediction itself matches the float64 forward.
  np.testing.assert_allclose(
    curricula.teacher_predict(params, jnp.asarray(features)), p, rtol=1e-5, atol=1e-6
  )


def _paced(**kw):
  args = dict(
    estimator="paced",
    prompts_per_step=2,
    pool_size=6,
    beta=2.0,
    tau=0.5,
    replay_capacity=8,
    replay_fraction=0.0,
  )
  args.update(kw)
  return curricula.candidate_pool(**args)


def _log_z_scorer(p_of_id, beta=2.0):
  """A scorer whose log Z makes p̂(id) = p_of_id[id]."""

  def scorer(ids):
    ids = np.asarray(ids)
    log_z = beta * np.asarray([p_of_id[int(i)] for i in ids], np.float32)
    return curricula.PromptScores(jnp.zeros((len(ids), 0)), jnp.asarray(log_z))

  return scorer


P_OF_ID = {
  i: v for i, v in enumerate([0.1, 0.45, 0.9, 0.6, 0.5, 0.05, 0.3, 0.52, 0.0, 1.0, 0.2, 0.8])
}


def test_paced_takes_the_candidates_nearest_tau_then_replays_by_error():
  src = _paced()
  scorer = _log_z_scorer(P_OF_ID)
  # Pool 0..5: |p̂ − .5| = .4, .05, .4, .1, 0, .45 -> ids 4 then 1.
  ids, state = src.next(src.init(), 2, scorer)
  np.testing.assert_array_equal(ids, [4, 1])
  np.testing.assert_allclose(state.chosen_p_hat, [0.5, 0.45], rtol=1e-6)
  assert int(state.position) == 6
  # Observed accuracies .5 (exact) and 1.0: errors 0 and .55; correlation of (.5, .45) with
  # (.5, 1) is -1 (two points, opposite order).
  rewards = np.array([[1, 0, 1, 0], [1, 1, 1, 1]], np.float32)
  state = src.observe(state, ids, rewards)
  np.testing.assert_allclose(state.replay.priority[:2], [0.0, 0.55], rtol=1e-6)
  stats = curricula.metrics(state)
  np.testing.assert_allclose(stats["paced/p_hat_corr"], -1.0, rtol=1e-6)
  np.testing.assert_allclose(stats["paced/abs_error"], 0.275, rtol=1e-6)
  # With half of each batch replayed, the one prompt of positive priority (id 1) comes back
  # first, then the pool's best: pool 6..11, |p̂ − .5| = .2, .02, .5, .5, .3, .3 -> id 7.
  src2 = _paced(replay_fraction=0.5)
  ids2, state2 = src2.next(state, 2, scorer)
  np.testing.assert_array_equal(ids2, [1, 7])
  assert curricula.metrics(state2)["paced/replayed"] == 1.0
  assert float(state2.replay.priority[1]) == 0.0  # a replayed prompt leaves the buffer


def test_goldilocks_picks_the_highest_teacher_utility():
  rng = np.random.default_rng(3)
  k, n, f = 10, 3, 4
  feats = rng.normal(size=(k, f)).astype(np.float32)
  src = curricula.candidate_pool(
    estimator="goldilocks", prompts_per_step=n, pool_size=k, num_features=f, teacher_hidden=5
  )
  state = src.init()
  # A teacher whose p̂ spreads over (0, 1): scale the output layer up.
  state = state._replace(teacher=state.teacher._replace(w2=state.teacher.w2 * 8))
  scorer = lambda ids: curricula.PromptScores(jnp.asarray(feats[np.asarray(ids)]), jnp.zeros(k))
  ids, new = src.next(state, n, scorer)
  p, _, _ = _np_teacher(state.teacher, feats)
  expected = np.argsort(-np.sqrt(p * (1 - p)), kind="stable")[:n]
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_allclose(new.chosen_features, feats[expected])
  # Without a scorer (warm-start steps) the stream is read in order.
  ids, seq = src.next(state, 4)
  np.testing.assert_array_equal(ids, [0, 1, 2, 3])
  # observe stores (features, accuracy) and trains the teacher.
  after = src.observe(new, ids[:n], np.ones((n, 4), np.float32))
  assert int(after.replay.size) == n
  np.testing.assert_allclose(after.replay.items["accuracy"][:n], 1.0)
  assert not np.allclose(after.teacher.w2, new.teacher.w2)


def test_pool_state_survives_a_checkpoint_round_trip(tmp_path):
  """Save after two steps, restore, and continue: ids and states equal the uninterrupted run."""
  src = _paced(replay_fraction=0.5, pool_size=3)
  scorer = _log_z_scorer({i: (i * 0.37) % 1.0 for i in range(64)})
  rewards = np.array([[1, 0, 0, 0], [1, 1, 0, 1]], np.float32)

  def run(state, steps):
    out = []
    for _ in range(steps):
      ids, state = src.next(state, 2, scorer)
      state = src.observe(state, ids, rewards)
      out.append(np.asarray(ids))
    return state, out

  state, _ = run(src.init(), 2)
  with checkpoint_lib.Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(2, state, force=True)
    ckpt.wait()
    restored, _ = ckpt.restore(2, target=jax.eval_shape(lambda: state))
  end_a, ids_a = run(state, 3)
  end_b, ids_b = run(restored, 3)
  np.testing.assert_array_equal(np.stack(ids_a), np.stack(ids_b))
  for a, b in zip(jax.tree.leaves(end_a), jax.tree.leaves(end_b), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_values_name_the_field():
  with pytest.raises(ValueError, match=r"curriculum\.pool_size"):
    _paced(pool_size=1)
  with pytest.raises(ValueError, match=r"curriculum\.replay_fraction"):
    _paced(replay_fraction=1.0)
  with pytest.raises(ValueError, match=r"curriculum\.name"):
    _paced(estimator="oracle")
  config = _load("paced_rl").get_config("local")
  with pytest.raises(ValueError, match=r"curriculum\.name"):
    curricula.from_config(config, num_features=32, has_log_z=False)


def test_scorer_log_z_equals_the_trainers():
  """The pool's log Z is the one the FlowRL loss trains (same prompt, completion appended)."""
  from grpojax import models, types
  from grpojax.rl import rollout, setup

  config = _load("paced_rl").get_config("local")
  run = setup.build_run(config)
  from flax import nnx

  graphdef, params = nnx.split(run.model)
  score = curricula.make_scorer(run, graphdef, config)
  got = score(params, jnp.arange(3))
  examples = [run.task.train(i) for i in range(3)]
  tokens, mask = rollout.encode_prompts(
    run, examples, config.rollout.max_prompt_len, run.tokenizer.pad_id
  )
  comp = np.full((3, 4), 5, np.int32)
  seqs = types.Sequences(
    tokens=jnp.asarray(np.concatenate([tokens, comp], 1)),
    attn_mask=jnp.asarray(np.concatenate([mask, np.ones_like(comp)], 1)),
    completion_mask=jnp.ones((3, 4), jnp.int32),
  )
  want = models.split_and_score(graphdef, params, seqs).log_z
  np.testing.assert_allclose(got.log_z, want, rtol=1e-5, atol=1e-6)


def _load(name):
  sys.path.insert(0, REPO)
  import importlib

  return importlib.import_module(f"configs.{name}")


@pytest.mark.parametrize(
  "name, metric", [("goldilocks", "goldilocks/p_hat_corr"), ("paced_rl", "paced/p_hat_corr")]
)
def test_config_runs_two_steps(tmp_path, name, metric):
  from grpojax import train

  config = _load(name).get_config("local")
  final = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= final["greedy_accuracy"] <= 1.0
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if metric in r]
  assert len(rl) == 2  # both RL steps chose their prompts from a scored pool
  assert all(-1.0 <= r[metric] <= 1.0 for r in rl)


@pytest.mark.slow
def test_killed_paced_run_resumes_to_identical_parameters(tmp_path, monkeypatch):
  """The trainer's kill test with the PACED source: pool position, replay and key are in the
  checkpoint, so the resumed run picks the same prompts and ends with the same parameters."""
  from grpojax import train

  config = _load("paced_rl").get_config("local")
  with config.unlocked():
    config.train.steps = 3  # warm start 0-1, RL 2-4; checkpoints at 2, 4 and 5
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  train.train_and_evaluate(config, straight)
  real_step = train._rl_step
  calls = {"n": 0}

  def dying_step(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:
      raise KeyboardInterrupt("simulated kill")
    return real_step(*args, **kwargs)

  monkeypatch.setattr(train, "_rl_step", dying_step)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, killed)
  monkeypatch.setattr(train, "_rl_step", real_step)
  train.train_and_evaluate(config, killed)
  finals = []
  for workdir in (straight, killed):
    with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
      finals.append(jax.tree.leaves(ckpt._manager.restore(ckpt.latest_step())["state"]))
  for a, b in zip(*finals, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
