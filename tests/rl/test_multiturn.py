"""Multi-turn rollouts: token in, token out, masks and turns, per-episode failures, the configs."""

import dataclasses
import logging
import os
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from grpojax import train
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import multiturn, rollout, setup, source
from grpojax.tasks import environments
from grpojax.tasks import example as example_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from configs import calculator, guess  # noqa: E402

ONE_DEVICE = layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))
REPLY = "ok\n"
TURN_REWARD = 0.25


class Echo:
  """Replies REPLY to every turn with reward TURN_REWARD, logs what it was given; examples whose
  answer is "raise" or "hang" make it raise or sleep."""

  def __init__(self, log):
    self.log, self.example = log, None

  def reset(self, example):
    self.example = example
    return ""

  def step(self, text):
    if self.example.answer == "raise":
      raise RuntimeError("boom")
    if self.example.answer == "hang":
      time.sleep(5)
    self.log.append((self, text))
    return REPLY, TURN_REWARD, False


def _echo_task(log, answers=("1", "2")):
  examples = [
    example_lib.Example(prompt=f"{i}+{i}=", answer=a, solution="") for i, a in enumerate(answers)
  ]
  return environments.MultiTurnTask(
    name="echo",
    train=lambda i: examples[i % len(examples)],
    heldout=examples,
    reward_fn=lambda text, ex: 0.0,
    make_env=lambda: Echo(log),
    max_turns=4,
    transcript=lambda ex: (("a\n", REPLY), ("b", "")),
  )


def _setup(task, *, max_turns=4, timeout_s=10.0, prompts=2, samples=8):
  config = calculator.get_config("local")
  config.env.max_turns, config.env.timeout_s = max_turns, timeout_s
  config.rollout.prompts_per_step, config.rollout.samples_per_prompt = prompts, samples
  config.rollout.max_new_tokens = 40
  config.rollout.temperature = 0.7  # scored at the same temperature
  run = dataclasses.replace(setup.build_run(config), task=task)
  graphdef, params = nnx.split(run.model)
  sampler = rollout.make_sampler(graphdef, config, run.tokenizer)
  return config, run, sampler, params


def _sample(config, run, sampler, params, key=0):
  src = source.sequential()
  data = source.DataState(source=src.init(), pivots=None)
  return multiturn.sample_groups(
    run, ONE_DEVICE, sampler, params, config, src, data, jax.random.key(key), None
  )


@pytest.fixture(scope="module")
def echo_rollout():
  log = []
  config, run, sampler, params = _setup(_echo_task(log))
  ro = _sample(config, run, sampler, params)
  return config, run, sampler, params, ro, log


def test_trainer_rows_are_exactly_the_sampled_and_appended_tokens(echo_rollout):
  config, run, _, _, ro, log = echo_rollout
  tok, n = run.tokenizer, config.rollout.max_new_tokens
  b = ro.batch
  tokens = np.asarray(b.seqs.tokens)
  tp = config.rollout.max_prompt_len
  comp, loss = tokens[:, tp:], np.asarray(b.seqs.completion_mask)
  attn, turns = np.asarray(b.seqs.attn_mask)[:, tp:], np.asarray(b.turns)
  marker, eos, reply = multiturn.turn_end_id(tok), tok.eos_ids[0], tok.encode(REPLY)
  by_env = {}
  for env, text in log:
    by_env.setdefault(env, []).append(text)
  assert len(by_env) == len(comp)  # every row's environment was stepped
  multi = 0
  # Rebuild each row from what its environment saw: turn k = the policy's tokens (they decode to
  # the text the environment got) + the stop token, then the reply, all tagged k.
  for (env, texts), row in zip(by_env.items(), range(len(comp)), strict=True):
    del env
    expect_loss, expect_turn, pos = np.zeros(n, int), np.zeros(n, int), 0
    for k, text in enumerate(texts, start=1):
      start = pos
      while pos < n and comp[row, pos] not in (marker, eos) and attn[row, pos]:
        pos += 1
      assert tok.decode(comp[row, start:pos].tolist()) == text
      if pos < n and attn[row, pos]:
        pos += 1  # the stop token
      expect_loss[start:pos] = 1
      expect_turn[start:pos] = k
      if k < len(texts):  # the episode went on: the reply follows, unmasked
        assert comp[row, pos : pos + len(reply)].tolist() == reply
        expect_turn[pos : pos + len(reply)] = k
        pos += len(reply)
      elif pos < n and attn[row, pos]:  # a last reply that was appended
        expect_turn[pos : pos + len(reply)] = k
        pos += len(reply)
    multi += len(texts) > 1
    np.testing.assert_array_equal(loss[row], expect_loss)
    np.testing.assert_array_equal(turns[row], expect_turn)
    assert attn[row].sum() == pos
    # The episode's reward is the sum of its turns' rewards.
    assert float(np.asarray(b.rewards)[row]) == pytest.approx(TURN_REWARD * len(texts))
  assert multi >= 2, "the sample should hold episodes of several turns"
  sampled = np.asarray(b.sampler_logprobs)
  assert np.all(sampled[loss == 0] == 0)  # environment tokens and padding: no log-prob terms
  assert ro.metrics["env/turns"] > 1 and ro.metrics["env/errors"] == 0
  # Tokens generated: the policy's own, checked row by row above (replies are not counted).
  assert ro.metrics["rollout/generated_tokens"] == int(loss.sum())


def test_trainer_log_probs_equal_the_sampler_log_probs(echo_rollout):
  _, _, sampler, params, ro, _ = echo_rollout
  # models.split_and_score at the rollout temperature, on the trainer rows.
  scored = np.asarray(sampler.score(params, ro.batch.seqs))
  mask = np.asarray(ro.batch.seqs.completion_mask) > 0
  np.testing.assert_allclose(scored[mask], np.asarray(ro.batch.sampler_logprobs)[mask], atol=1e-5)


def test_evaluation_scores_episodes_by_their_rewards(echo_rollout):
  config, run, sampler, params, _, _ = echo_rollout
  config = config.copy_and_resolve_references()
  config.eval.update(dict(num_prompts=2, batch_prompts=2, samples=8, pass_k=8))
  key = jax.random.key(3)
  res = multiturn.evaluate(run, ONE_DEVICE, sampler, params, config, key)
  examples = list(run.task.heldout)
  greedy = multiturn.play(
    run, ONE_DEVICE, sampler, params, config, examples, key, num_samples=1, greedy=True
  )
  sampled = multiturn.play(
    run,
    ONE_DEVICE,
    sampler,
    params,
    config,
    examples,
    jax.random.fold_in(key, 0),
    num_samples=8,
    greedy=False,
  )
  # Echo pays 0.25 a turn: an episode is correct when it used all 4 turns.
  correct_pn = (sampled.num_turns == 4).reshape(2, 8)
  assert res.metrics["greedy_accuracy"] == np.mean(greedy.num_turns == 4)
  assert res.metrics["avg@8"] == pytest.approx(correct_pn.mean())
  assert res.metrics["pass@8"] == pytest.approx(correct_pn.any(axis=1).mean())
  assert [r["greedy"]["reward"] for r in res.records] == pytest.approx(greedy.rewards.tolist())


def test_failing_and_hanging_environments_end_only_their_episodes(caplog):
  log = []
  task = _echo_task(log, answers=("raise", "1", "hang", "2"))
  config, run, sampler, params = _setup(task, timeout_s=0.5, prompts=4, samples=2)
  with caplog.at_level(logging.WARNING):
    ro = _sample(config, run, sampler, params)
  rewards = np.asarray(ro.batch.rewards).reshape(4, 2)
  np.testing.assert_array_equal(rewards[[0, 2]], 0.0)
  assert np.all(rewards[[1, 3]] > 0)  # the other episodes went on and earned turn rewards
  assert ro.metrics["env/errors"] == 2 and ro.metrics["env/timeouts"] == 2
  messages = [r.getMessage() for r in caplog.records]
  assert sum("'echo'" in m and "'0+0='" in m and "RuntimeError: boom" in m for m in messages) == 2
  assert sum("'2+2='" in m and "env.timeout_s=0.5" in m for m in messages) == 2


def test_sft_rows_mask_the_environment_replies():
  config = calculator.get_config("local")
  run = setup.build_run(config)
  ex = run.task.train(0)  # 86*64=: calc:86*64\n 5504\n 5504<eos>
  seqs = multiturn.sft_sequences(run, ONE_DEVICE, config, np.asarray([0]))
  tok, tp = run.tokenizer, config.rollout.max_prompt_len
  row = np.asarray(seqs.tokens)[0, tp:]
  mask = np.asarray(seqs.completion_mask)[0]
  call, reply = tok.encode(f"calc:{ex.prompt[:-1]}\n"), tok.encode(f"{ex.answer}\n")
  answer = [*tok.encode(ex.answer), tok.eos_ids[0]]
  expect = call + reply + answer
  assert row[: len(expect)].tolist() == expect
  assert mask[: len(expect)].tolist() == [1] * len(call) + [0] * len(reply) + [1] * len(answer)
  assert mask[len(expect) :].sum() == 0
  assert np.asarray(seqs.attn_mask)[0, tp:].sum() == len(expect)


@pytest.mark.parametrize(
  "field, value",
  [
    ("env.name", "chess"),
    ("env.max_turns", 0),
    ("env.timeout_s", 0.0),
    ("env.max_obs_tokens", 0),
    ("rollout.refill.enabled", True),
    ("env.name", "no_such_module:make"),
  ],
)
def test_bad_env_values_name_the_field(field, value):
  config = calculator.get_config()
  node = config
  *parents, leaf = field.split(".")
  for name in parents:
    node = node[name]
  node[leaf] = value
  with pytest.raises(setup.ConfigError, match="config." + field.replace(".", r"\.")):
    setup.validate_config(config)


def make_not_a_task(**kwargs):
  del kwargs
  return object()


def test_a_plugin_must_return_a_multi_turn_task():
  config = calculator.get_config()
  config.env.name = "tests.rl.test_multiturn:make_not_a_task"
  with pytest.raises(setup.ConfigError, match=r"config\.env\.name: .* not a .*MultiTurnTask"):
    setup.build_run(config)


@pytest.mark.slow  # two whole runs: about 25 s each on an idle 2-core CPU
@pytest.mark.parametrize("module", [calculator, guess], ids=["calculator", "guess"])
def test_local_configs_run_end_to_end(module, tmp_path):
  config = module.get_config("local")
  config.metrics.writers = ("jsonl",)
  config.eval.update(dict(num_prompts=2, batch_prompts=2, samples=2, pass_k=2))
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert 0.0 <= final["greedy_accuracy"] <= 1.0
  assert os.path.exists(tmp_path / "run" / "policy")
