"""`python -m grpojax.evaluate` on a `:local` run's workdir: the trainer's final evaluation
reproduced from its checkpoint and from its exported policy, and both files written."""

import json
import os
import subprocess
import sys

import pytest

from grpojax import eval_run, preflight, train

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
