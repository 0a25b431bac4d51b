"""RePO's rephrase injection: the gate, which rows are replaced, the injected rows' prompt and
behaviour log-probs, the config checks, and the config's run."""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax.models import char_tokenizer, transformer
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import rephrase, rollout, setup, source
from grpojax.tasks import arithmetic
from grpojax.tasks import example as example_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_DEVICE = layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))


def _repo_config(arg="local"):
  sys.path.insert(0, REPO)
  from configs import repo

  return repo.get_config(arg)


def test_gate_counts_failed_rows_of_trained_groups():
  correct_pg = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
  trained = np.array([True, True, True, False])
  # Failure rates 1, 3/4, 1/2, 1; the last group only fills the batch.
  np.testing.assert_array_equal(
    rephrase.gated_groups(correct_pg, trained, failure_rate=1.0), [True, False, False, False]
  )
  np.testing.assert_array_equal(
    rephrase.gated_groups(correct_pg, trained, failure_rate=0.75), [True, True, False, False]
  )
  np.testing.assert_array_equal(
    rephrase.gated_groups(correct_pg, trained, failure_rate=0.5), [True, True, True, False]
  )


def test_replacement_plan_takes_the_worst_incorrect_rows():
  # P = 4 groups of G = 4, K = 2 candidates each (flat candidate id = 2·p + j).
  rewards = np.array(
    [
      [0.0, 0.2, -0.5, 0.0],  # all wrong: worst first = row 2 (-0.5), row 0 (0.0, before row 3)
      [1.0, 1.0, 0.0, 1.0],  # one wrong row (2): at most one replacement
      [0.0, 0.0, 0.0, 0.0],  # all wrong, only candidate j = 1 verified -> row 0 gets id 5
      [0.0, 0.0, 0.0, 0.0],  # not gated: untouched
    ]
  )
  correct = np.array([[0, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
  gated = np.array([True, True, True, False])
  verified = np.array([[True, True], [True, True], [False, True], [True, True]])
  plan = rephrase.replacement_plan(rewards, correct, gated, verified)
  expected = np.array(
    [
      [1, -1, 0, -1],  # candidate 0 -> row 2, candidate 1 -> row 0
      [-1, -1, 2, -1],  # candidate 2 -> the only wrong row; correct rows are never replaced
      [5, -1, -1, -1],
      [-1, -1, -1, -1],
    ]
  )
  np.testing.assert_array_equal(plan, expected)


def test_template_check_and_config_errors_name_the_field():
  rephrase.check_template("{prompt}{solution}\n{prompt}")
  with pytest.raises(ValueError, match="question"):
    rephrase.check_template("{question}")
  for field, value in [
    ("template", "{prompt}{hint}"),
    ("failure_rate", 0.0),
    ("num_replaced", 99),
    ("max_prompt_len", 0),
  ]:
    config = _repo_config(None)
    config.rollout.rephrase[field] = value
    with pytest.raises(ValueError, match=rf"rollout\.rephrase\.{field}"):
      setup.validate_config(config)


def test_default_template_fits_the_character_tokenizer():
  """The arithmetic task's rephrase prompts round-trip through the character tokenizer and fit
  `max_prompt_len` (with BOS)."""
  config = _repo_config(None)
  rp = config.rollout.rephrase
  tok = char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET)
  task = arithmetic.make_task(digits=config.task.difficulty, operators="+-", seed=0)
  for i in range(200):
    ex = task.train(i)
    text = rephrase.rephrase_prompt(rp.template, ex)
    assert text == f"{ex.prompt}{ex.solution}\n{ex.prompt}"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and 1 + len(ids) <= rp.max_prompt_len


def _fake_task():
  """Every answer is "7"; a completion earns 1 when it starts with it."""

  def train(i):
    return example_lib.Example(prompt=f"{i % 10}+1=", answer="7", solution="7")

  def reward(text, ex):
    return float(text.startswith(ex.answer))

  return example_lib.Task(name="fake", train=train, heldout=[train(1)], reward_fn=reward)


class _StubSampler:
  """The real sampler, except that restatement p·K + j is `"7"` + EOS for even p (verified)
  and `"5"` + EOS for odd p (rejected); records the prompts it was given."""

  def __init__(self, real, tok, k):
    self.real, self.tok, self.k = real, tok, k
    self.score = real.score
    self.prompts = []

  def sample(self, params, prompt_tokens, prompt_mask, key, *, num_samples, greedy=False):
    comp = self.real.sample(params, prompt_tokens, prompt_mask, key, num_samples=num_samples)
    self.prompts.append((np.asarray(prompt_tokens), np.asarray(prompt_mask)))
    b, n = comp.tokens.shape
    tokens = np.full((b, n), self.tok.pad_id, np.int32)
    mask = np.zeros((b, n), np.int32)
    for r in range(b):
      tokens[r, :2] = [self.tok.encode("7" if (r // self.k) % 2 == 0 else "5")[0], 2]
      mask[r, :2] = 1
    return comp._replace(tokens=jnp.asarray(tokens), mask=jnp.asarray(mask), token_mask=mask)


def _teacher_forced_logprobs(model, tokens, attn_mask, n, temperature):
  """float64 NumPy log-softmax of full-vocabulary logits at the completion tokens."""
  out = model(
    jnp.asarray(tokens),
    positions_bt=transformer.positions_from_mask(jnp.asarray(attn_mask)),
    attn_mask_bts=transformer.causal_padding_mask(jnp.asarray(attn_mask)),
  )
  logits = np.asarray(out.logits, np.float64)[:, -n - 1 : -1] / temperature
  logits -= logits.max(axis=-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
  return np.take_along_axis(logp, np.asarray(tokens)[:, -n:, None], axis=-1)[..., 0]


def test_inject_replaces_worst_rows_under_the_original_prompt():
  config = _repo_config("local")  # P = 2, G = 4, ρ = 0.5
  config.unlock()
  config.rollout.prompts_per_step = 4
  config.rollout.rephrase.num_replaced = 2
  config.rollout.temperature = 0.7
  config.lock()
  p, g, k = 4, config.rollout.samples_per_prompt, 2
  run = dataclasses.replace(setup.build_run(config), task=_fake_task())
  tok = run.tokenizer
  graphdef, params = nnx.split(run.model)
  real = rollout.make_sampler(graphdef, config, tok)
  src = source.sequential()
  ro = rollout.sample_groups(
    run,
    ONE_DEVICE,
    real,
    params,
    config,
    src,
    source.DataState(source=src.init()),
    jax.random.key(0),
    rollout.group_edit(config),
  )
  stub = _StubSampler(real, tok, k)
  new = rephrase.inject(run, ONE_DEVICE, stub, params, config, ro, jax.random.key(1))

  # The restatements were asked for with the template's prompt (after BOS), left-padded.
  ((prompt_tokens, prompt_mask),) = stub.prompts
  for i in range(p):
    ex = run.task.train(int(ro.example_ids[i]))
    ids = prompt_tokens[i][prompt_mask[i] > 0].tolist()
    assert ids == [tok.bos_id, *tok.encode(f"{ex.prompt}{ex.solution}\n{ex.prompt}")]

  old_tokens = np.asarray(ro.batch.seqs.tokens)
  new_tokens = np.asarray(new.batch.seqs.tokens)
  n = ro.batch.seqs.completion_mask.shape[1]
  tp = old_tokens.shape[1] - n
  # The rollout's bookkeeping: each group's example id and each row's correctness.
  attn = np.asarray(ro.batch.seqs.attn_mask)
  for r in range(p * g):
    prompt = tok.decode(old_tokens[r, :tp][attn[r, :tp] > 0].tolist())
    assert prompt == run.task.train(int(ro.example_ids[r // g])).prompt
  np.testing.assert_array_equal(ro.correct, np.asarray(ro.batch.rewards))  # 0/1 rewards here
  old_r = np.asarray(ro.batch.rewards).reshape(p, g)
  correct = ro.correct.reshape(p, g)
  expected_rows = []
  for i in range(p):
    wrong = [r for r in range(g) if not correct[i, r]]
    if len(wrong) < g / 2 or i % 2 == 1:  # not gated (ρ = 0.5), or its restatements rejected
      continue
    by_reward = sorted(wrong, key=lambda r: (old_r[i, r], r))  # worst first, ties by order
    expected_rows += [i * g + r for r in by_reward[:k]]
  changed = np.flatnonzero((old_tokens != new_tokens).any(axis=1))
  assert expected_rows, "the random policy should fail the fake task somewhere"
  np.testing.assert_array_equal(changed, sorted(expected_rows))
  assert new.metrics["rephrase/injected_rows"] == len(expected_rows)
  assert new.metrics["rephrase/injected_correct"] == 1.0
  # Every row keeps its original prompt; injected rows hold "7" + EOS as their completion.
  np.testing.assert_array_equal(new_tokens[:, :tp], old_tokens[:, :tp])
  seven = [tok.encode("7")[0], 2]
  for r in expected_rows:
    assert new_tokens[r, tp : tp + 2].tolist() == seven
    assert np.asarray(new.batch.seqs.completion_mask)[r].tolist() == [1, 1] + [0] * (n - 2)
    assert float(np.asarray(new.batch.rewards)[r]) == 1.0 and new.correct[r] == 1.0
  others = np.setdiff1d(np.arange(p * g), expected_rows)
  np.testing.assert_array_equal(
    np.asarray(new.batch.sampler_logprobs)[others], np.asarray(ro.batch.sampler_logprobs)[others]
  )
  # Behaviour log-probs of the injected rows: the policy on (original prompt, restatement).
  rows = np.asarray(expected_rows)
  ref = _teacher_forced_logprobs(
    run.model,
    new_tokens[rows],
    np.asarray(new.batch.seqs.attn_mask)[rows],
    n,
    config.rollout.temperature,
  )
  got = np.asarray(new.batch.sampler_logprobs)[rows]
  np.testing.assert_allclose(got[:, :2], ref[:, :2], atol=1e-5)
  assert (got[:, 2:] == 0).all()


def test_repo_config_runs_two_steps(tmp_path):
  from grpojax import train

  config = _repo_config("local")
  final = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= final["greedy_accuracy"] <= 1.0
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if "rephrase/gated_groups" in r]
  assert len(rl) == 2  # both RL steps ran the injection
  assert all(r["rephrase/injected_rows"] <= r["rephrase/gated_groups"] for r in rl)
