"""The compile-only dry run: abstract policy, compiled step functions, memory and flops."""

import json
import os
import subprocess
import sys

import jax
import pytest
from flax import nnx

from configs import default
from grpojax import dry_run, models
from grpojax.rl import setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def local_report():
  return dry_run.compile_only(default.get_config("local"))


def test_compiles_every_executable_with_positive_sizes(local_report):
  for name in ("sampler", "score", "grad", "update"):
    rep = local_report[name]
    assert rep["argument_bytes"] > 0, name
    assert rep["output_bytes"] > 0, name
  for name in ("sampler", "score", "grad"):
    assert local_report[name]["temp_bytes"] > 0, name
  # A backward pass costs more than the forward alone.
  assert local_report["grad"]["flops"] > local_report["score"]["flops"] > 0


def test_shapes_follow_the_config(local_report):
  c = default.get_config("local")
  model = setup.build_model(c, setup.build_tokenizer(c))  # tiny: the real one, for reference
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  s = local_report["shapes"]
  assert s["sampler_rows"] == c.rollout.prompts_per_step * c.rollout.samples_per_prompt
  assert s["sampler_len"] == c.rollout.max_prompt_len + c.rollout.max_new_tokens
  assert s["micro_rows"] == c.train.microbatch_rows
  assert s["params"] == n_params
  # update's arguments: params + Adam's two moments (+ small counters), all float32.
  assert local_report["update"]["argument_bytes"] >= 3 * 4 * s["params"]


def test_checkpoint_config_alone_is_enough(tmp_path):
  """A checkpoint directory with only config.json (no weights) compiles."""
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32,
                           intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                           head_dim=16, attention_bias=True, tie_word_embeddings=True,
                           bos_token_id=1, eos_token_id=2)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(cfg.to_hf_dict(), f)
  c = default.get_config("local")
  c.model.checkpoint = str(tmp_path)
  c.warm_start.steps = 0
  rep = dry_run.compile_only(c)
  assert rep["shapes"]["vocab"] == 64
  assert rep["grad"]["temp_bytes"] > 0


def test_sharded_mesh_is_refused_not_ignored():
  with pytest.raises(NotImplementedError, match="grpojax.parallel"):
    dry_run.compile_only(default.get_config("local"), mesh_shape=(2, 4))


def test_table_lists_every_executable(local_report):
  table = dry_run.format_table(local_report)
  for name in ("sampler", "score", "grad", "update", "params"):
    assert name in table


def test_command_line():
  res = subprocess.run([sys.executable, "-m", "grpojax.dry_run",
                        "--config=configs/default.py:local"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "grad" in res.stdout and "temp MiB" in res.stdout
