"""Rewards from models: the reward model's batched scores, the weighted sum with the task's
reward, per-batch time limits and config checks that name the field."""

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models
from grpojax.models import build, sequence_classifier
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import model_rewards, rollout, setup, source
from grpojax.tasks import example as example_lib
from tests import hf_reference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _base_config():
  sys.path.insert(0, REPO)
  from configs import common

  return common.finish(common.base("grpo"), "local")


class _ByteTokenizer:
  """ids 3 + (byte % 90): never the pad id 0, so transformers and the mask agree."""

  pad_id = 0

  def encode(self, text, *, add_special_tokens=False):
    del add_special_tokens
    return [3 + b % 90 for b in text.encode()]


def test_time_limit_returns_raises_and_times_out():
  assert model_rewards.call_with_time_limit(lambda: 3, seconds=5, what="x") == 3
  with pytest.raises(KeyError, match="boom"):
    model_rewards.call_with_time_limit(lambda: {}["boom"], seconds=5, what="x")
  start = time.monotonic()
  with pytest.raises(TimeoutError, match=r"config.reward.judge scoring: no result within 0.2 s"):
    model_rewards.call_with_time_limit(
      lambda: time.sleep(30), seconds=0.2, what="config.reward.judge scoring"
    )
  assert time.monotonic() - start < 5  # the caller is not held by the stuck call


def test_reward_model_scores_match_transformers(tmp_path):
  torch = pytest.importorskip("torch", reason="parity tests need the `reference` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")

  torch.manual_seed(0)
  cfg = hf_reference.hf_config("qwen2_untied")
  cfg.num_labels = 1
  hf_model = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
  hf_model.save_pretrained(str(tmp_path))
  tok = _ByteTokenizer()
  scorer = model_rewards.RewardModel(
    sequence_classifier.load(str(tmp_path)),
    tok,
    max_len=12,
    batch_size=2,
    bucket=16,  # both batches pad to max_len=12: one compilation
    chat_template=False,
  )
  prompts, completions = ["1+1=", "what is 7*6? ", "x"], ["2", "42 because 6*7", "y"]
  got, metrics = scorer(prompts, completions, ["", "", ""])
  want = []
  for p, c in zip(prompts, completions, strict=True):
    ids = tok.encode(p + c)[-12:]  # the pair of 19 tokens keeps its last 12
    with torch.no_grad():
      want.append(hf_model(torch.tensor([ids])).logits[0, 0].item())
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  assert metrics == {"truncated": 1.0}


def _tiny_classifier():
  """A random 1-layer classifier with 2 labels; heads and MLP divide a tensor axis of 2."""
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    tie_word_embeddings=True,
  )
  # Random normal weights straight from NumPy (no initialiser to compile).
  graphdef, abstract = nnx.split(build.abstract_policy(cfg))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), abstract
  )
  score_dl = jnp.asarray(rng.standard_normal((32, 2)), jnp.float32)
  return sequence_classifier.SequenceClassifier(graphdef, params, score_dl, cfg, pad_id=0)


def test_reward_model_on_the_mesh_matches_one_device():
  classifier, tok = _tiny_classifier(), _ByteTokenizer()
  prompts = [f"question {i}: " * (1 + i % 3) for i in range(11)]
  completions = [f"answer {i * 7}" for i in range(11)]
  # Every call pads to 24 tokens: one compilation per layout.
  kw = dict(label=1, max_len=24, batch_size=6, bucket=24, chat_template=False)
  one = model_rewards.RewardModel(classifier, tok, **kw)
  layout = layout_lib.Layout(mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  sharded = model_rewards.RewardModel(classifier, tok, layout=layout, **kw)
  calls = []
  score_rows = sharded.score_rows

  def spy(params, score_dl, tokens, mask):
    out = score_rows(params, score_dl, tokens, mask)
    calls.append((tokens, out))
    return out

  sharded.score_rows = spy
  want, want_metrics = one(prompts, completions, [""] * 11)
  got, metrics = sharded(prompts, completions, [""] * 11)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # A prompt repeated twice or thrice (24+ bytes) with its answer exceeds 24: 7 of 11.
  assert metrics == want_metrics == {"truncated": 7.0}
  # 6 rows round up to 8 (the batch axes split 2 x 2 = 4 ways): 11 items in 2 calls, each
  # array's rows split 4 ways (2 rows per device) and the q kernel's heads over "tensor".
  assert sharded.batches.rows == 8 and len(calls) == 2
  for tokens, out in calls:
    for x in (tokens, out):
      assert len(x.sharding.device_set) == 8
      assert {s.data.shape[0] for s in x.addressable_shards} == {2}
  q_kernel = sharded.params["layers"][0]["self_attn"]["q_proj"]["kernel"]
  assert {s.data.shape for s in q_kernel[...].addressable_shards} == {(32, 16)}


def test_compute_dtype_is_the_sources_or_the_policys():
  config = _base_config()
  assert model_rewards.compute_dtype(config.reward.judge, "bfloat16") == jnp.bfloat16
  config.reward.judge.dtype = "float32"
  assert model_rewards.compute_dtype(config.reward.judge, "bfloat16") == jnp.float32


def _example(i):
  return example_lib.Example(prompt=f"p{i}", answer=f"a{i}", solution="")


def test_sources_are_weighted_and_logged():
  seen = {}

  def lengths(prompts, completions, references):
    seen["args"] = (prompts, completions, references)
    return np.asarray([len(c) for c in completions], np.float32), {"truncated": 0.0}

  def halves(prompts, completions, references):
    return np.full(len(completions), 0.5, np.float32), {"unparsed": 1.0}

  rewards = model_rewards.ModelRewards(
    (
      model_rewards.Source("model", 2.0, 10.0, lengths),
      model_rewards.Source("judge", -1.0, 10.0, halves),
    )
  )
  total, metrics = rewards(["ab", "abcd"], [_example(0), _example(1)])
  np.testing.assert_allclose(total, [2 * 2 - 0.5, 2 * 4 - 0.5])
  assert seen["args"] == (["p0", "p1"], ["ab", "abcd"], ["a0", "a1"])
  assert metrics == {
    "reward/model/mean": 3.0,
    "reward/model/truncated": 0.0,
    "reward/judge/mean": 0.5,
    "reward/judge/unparsed": 1.0,
  }


def test_a_stuck_source_stops_with_its_name():
  def stuck(prompts, completions, references):
    time.sleep(30)

  rewards = model_rewards.ModelRewards((model_rewards.Source("judge", 1.0, 0.2, stuck),))
  with pytest.raises(TimeoutError, match=r"config.reward.judge scoring a batch of 1"):
    rewards(["x"], [_example(0)])


def test_both_sources_are_off_by_default():
  config = _base_config()
  assert model_rewards.from_config(config.reward) is None
  setup.validate_config(config)


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("model.path", "/nonexistent/rm", r"config\.reward\.model\.path: .* holds no config\.json"),
    ("judge.max_score", 0, r"config\.reward\.judge\.max_score: must be > min_score=0"),
    ("judge.rubric", "Rate {answer}", r"config\.reward\.judge\.rubric: unknown field"),
    ("judge.time_limit_s", 0.0, r"config\.reward\.judge\.time_limit_s: must be > 0"),
    ("model.weight", float("nan"), r"config\.reward\.model\.weight: must be finite"),
    ("model.dtype", "float16", r"config\.reward\.model\.dtype: 'float16'; must be one of"),
    ("judge.on_too_long", "skip", r"config\.reward\.judge\.on_too_long: 'skip'; must be"),
  ],
)
def test_bad_settings_name_the_field(tmp_path, field, value, message):
  config = _base_config()
  (tmp_path / "config.json").write_text("{}")
  source_name, key = field.split(".")
  config.reward[source_name].path = str(tmp_path)  # switched on, with a directory that exists
  config.reward[source_name][key] = value
  with pytest.raises(setup.ConfigError, match=message):
    setup.validate_config(config)


def test_rollout_adds_model_rewards_and_keeps_correctness():
  config = _base_config()
  config.rollout.prompts_per_step = 2
  run = setup.build_run(config)
  seen = []

  def length_reward(prompts, completions, references):
    seen.extend(zip(completions, prompts, strict=True))
    return np.asarray([len(c) for c in completions], np.float32), {}

  extra = model_rewards.ModelRewards((model_rewards.Source("model", 0.5, 60.0, length_reward),))
  run = dataclasses.replace(run, reward_models=extra)
  layout = layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  graphdef, params = nnx.split(run.model)
  sampler = rollout.make_sampler(graphdef, config, run.tokenizer)
  src = source.sequential()
  ro = rollout.sample_groups(
    run,
    layout,
    sampler,
    params,
    config,
    src,
    source.DataState(source=src.init()),
    jax.random.key(0),
    rollout.group_edit(config),
  )
  g = config.rollout.samples_per_prompt
  examples = [run.task.train(i // g) for i in range(len(seen))]
  task = np.asarray([run.task.reward_fn(c, ex) for (c, _), ex in zip(seen, examples, strict=True)])
  lengths = np.asarray([len(c) for c, _ in seen], np.float32)
  assert [p for _, p in seen] == [ex.prompt for ex in examples]
  np.testing.assert_allclose(np.asarray(ro.batch.rewards), task + 0.5 * lengths, rtol=1e-6)
  np.testing.assert_array_equal(ro.correct, (task >= 1.0).astype(np.float32))
  assert ro.metrics["reward/model/mean"] == pytest.approx(lengths.mean())


@pytest.mark.slow  # two checkpoints and a judge compilation: about 15 s on CPU
def test_from_config_loads_a_reward_model_and_a_judge(tmp_path):
  """Both sources from checkpoint directories (weights, tokenizer, chat template), scoring
  through the run's `ModelRewards`: the reward model as `transformers` scores the rendered
  conversation, the random judge at its fallback."""
  torch = pytest.importorskip("torch", reason="needs the `reference` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  from grpojax.models import tokenizers
  from tests.models import tokenizer_files as files

  tok = files.train_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  ends = {"eos_token_id": tok.token_to_id("<|im_end|>")}
  torch.manual_seed(0)
  made = {}
  for name, auto in (
    ("rm", transformers.AutoModelForSequenceClassification),
    ("judge", transformers.AutoModelForCausalLM),
  ):
    cfg = hf_reference.hf_config("qwen2_untied")
    cfg.vocab_size, cfg.num_labels = 512, 1  # room for the 400-token vocabulary
    made[name] = auto.from_config(cfg).eval()
    made[name].save_pretrained(str(tmp_path / name))
    files.write_checkpoint(tmp_path / name, tok, files.QWEN_CONFIG, generation_config=ends)
  config = _base_config()
  config.reward.model.path = str(tmp_path / "rm")
  config.reward.model.weight = 2.0
  config.reward.judge.path = str(tmp_path / "judge")
  config.reward.judge.fallback = 0.25
  config.reward.judge.max_new_tokens = 4
  config.reward.judge.max_prompt_len = 512
  model_rewards.check_config(config.reward)
  sources = model_rewards.from_config(config.reward)
  assert [s.name for s in sources.sources] == ["model", "judge"]

  total, metrics = sources(["the sum is 5"], [_example(0)])
  ours = tokenizers.load_tokenizer(tmp_path / "rm")
  text = ours.apply_chat_template(
    [{"role": "user", "content": "p0"}, {"role": "assistant", "content": "the sum is 5"}],
    add_generation_prompt=False,
  )
  with torch.no_grad():
    want = made["rm"](torch.tensor([ours.encode(text)])).logits[0, 0].item()
  assert metrics["reward/model/mean"] == pytest.approx(want, abs=1e-4)
  assert metrics["reward/judge/unparsed"] == 1.0
  np.testing.assert_allclose(total, [2.0 * want + 0.25], atol=1e-4)
