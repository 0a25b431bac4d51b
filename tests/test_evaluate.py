"""`python -m grpojax.evaluate` on a `:local` run's workdir: the trainer's final evaluation
reproduced from its checkpoint and from its exported policy, and both files written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from grpojax import eval_run, models, preflight, train
from grpojax.models import char_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _local_config():
  sys.path.insert(0, REPO)
  from configs import default

  return default.get_config("local")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  return workdir, train.train_and_evaluate(_local_config(), workdir)


def test_checkpoint_and_policy_reproduce_the_final_evaluation(finished_run, tmp_path):
  workdir, final = finished_run
  assert set(final) == {
    "greedy_accuracy",
    "avg@4",
    "pass@4",
    "maj@4",
    "greedy_length",
    "response_length",
  }
  from_ckpt = eval_run.run_evaluation(_local_config(), workdir, str(tmp_path / "a"))
  assert from_ckpt["step"] == 4 and from_ckpt["examples"] == 8
  assert from_ckpt["metrics"] == final
  from_policy = eval_run.run_evaluation(
    _local_config(), os.path.join(workdir, "policy"), str(tmp_path / "b")
  )
  assert from_policy["step"] is None
  assert from_policy["metrics"] == final
  with open(tmp_path / "a" / "examples.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 8 and all(len(r["samples"]) == 4 for r in records)
  greedy = sum(r["greedy"]["correct"] for r in records) / 8
  assert greedy == final["greedy_accuracy"]


def test_the_command_writes_both_files(finished_run, tmp_path):
  workdir, final = finished_run
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  out = tmp_path / "eval"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "grpojax.evaluate",
      "--config=configs/default.py:local",
      f"--checkpoint={workdir}",
      f"--out={out}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["metrics"] == pytest.approx(final, abs=0)
  assert summary["samples"] == 4 and summary["k"] == 4
  assert len((out / "examples.jsonl").read_text().splitlines()) == 8
  assert proc.stdout.strip().splitlines()[-1].startswith("wrote ")


def test_a_path_that_is_no_checkpoint_is_one_line(tmp_path):
  with pytest.raises(ValueError, match=r"^--checkpoint: .* is neither a grpojax run directory"):
    preflight.checkpoint_source(str(tmp_path))
  (tmp_path / "policy").mkdir()
  (tmp_path / "policy" / "config.json").write_text("{}")
  assert preflight.checkpoint_source(str(tmp_path)) == ("hf", str(tmp_path / "policy"))
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  assert preflight.checkpoint_source(str(tmp_path)) == ("run", str(tmp_path))


def test_a_data_file_becomes_the_whole_heldout_set():
  config = _local_config()
  config.task.data_path = "train.jsonl"
  evaluated = eval_run.with_data_file(config, "test.jsonl")
  assert evaluated.task.heldout_path == "test.jsonl" and evaluated.task.heldout_size is None
  assert evaluated.task.data_path == "train.jsonl"  # the training file stays
  assert config.task.heldout_path == ""  # the caller's config is not changed
  config.task.data_path = ""
  assert eval_run.with_data_file(config, "test.jsonl").task.data_path == "test.jsonl"


def even_length(completion, example):
  """A reward plug-in for the test below: 1 for a completion of an even number of characters."""
  del example
  return float(len(completion) % 2 == 0)


@pytest.mark.slow  # a subprocess that builds and evaluates a tiny policy: about 20 s on CPU
def test_the_command_evaluates_a_data_file(tmp_path):
  """`--data=FILE` on a tiny random exported policy: the examples are the file's rows, and the
  summary's metrics are those computed by hand from the written completions."""
  tok = char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET)
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=tok.vocab_size,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    attention_bias=True,  # as a Qwen2 checkpoint has
    tie_word_embeddings=True,
    bos_token_id=tok.bos_id,
    eos_token_id=tok.eos_ids[0],
  )
  policy = tmp_path / "policy"
  models.save_pretrained(
    models.Decoder(cfg, rngs=nnx.Rngs(3)), str(policy), extra_files=char_tokenizer.hf_files(tok)
  )
  rows = [{"q": f"{a}+{b}=", "a": str(a + b)} for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]
  data = tmp_path / "sums.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  out = tmp_path / "eval"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "grpojax.evaluate",
      "--config=configs/default.py:local",
      "--config.task.name=data",
      "--config.task.fields.prompt=q",
      "--config.task.fields.answer=a",
      "--config.reward.fns=('tests.test_evaluate:even_length',)",
      "--config.eval.num_prompts=3",
      f"--checkpoint={policy}",
      f"--out={out}",
      f"--data={data}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
  assert summary["data"] == str(data) and summary["step"] is None
  assert summary["examples"] == 3 and summary["samples"] == 4 and summary["k"] == 4
  # The first eval.num_prompts rows of the file, in order.
  assert [(r["prompt"], r["reference"]) for r in records] == [(r["q"], r["a"]) for r in rows[:3]]
  # By hand from the completions: correct = even length (the reward plug-in).
  greedy = np.asarray([len(r["greedy"]["completion"]) % 2 == 0 for r in records], float)
  correct = np.asarray(
    [[len(s["completion"]) % 2 == 0 for s in r["samples"]] for r in records], float
  )
  c = correct.sum(axis=1)
  # pass@4 of 4 samples: 1 when any is correct (1 - C(4 - c, 4) / C(4, 4)).
  want = {
    "greedy_accuracy": greedy.mean(),
    "avg@4": correct.mean(),
    "pass@4": float(np.mean(c > 0)),
    "maj@4": float(np.mean([r["maj@4"]["correct"] for r in records])),
    "greedy_length": np.mean([r["greedy"]["length"] for r in records]),
    "response_length": np.mean([[s["length"] for s in r["samples"]] for r in records]),
  }
  assert summary["metrics"] == pytest.approx(want, abs=1e-9)
  for r in records:  # the maj@4 winner: the most frequent extracted answer of the 4 samples
    answers = [s["answer"] for s in r["samples"]]
    assert answers.count(r["maj@4"]["answer"]) == max(answers.count(a) for a in answers)
