"""The compile-only dry run: abstract policy, compiled step functions, memory and flops.

Runs on the 8 fake CPU devices of `tests/conftest.py`; the single-device reports compile for a
one-device mesh over the first of them.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from configs import default
from grpojax import dry_run, models, train, types
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import setup, step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _local_config(data: int = -1, fsdp: int = 1, tensor: int = 1):
  """The `:local` smoke config with 8 prompts (32 rows, micro-batches of 8), so that every
  batch divides by 8 devices; hidden 32, MLP 64 and 4 x 32 heads divide by 8 too."""
  c = default.get_config("local")
  c.rollout.prompts_per_step = 8
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
  return c


def _one_device():
  return mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def local_report():
  return dry_run.compile_only(_local_config(), mesh=_one_device())


def test_compiles_every_executable_with_positive_sizes(local_report):
  for name in dry_run.EXECUTABLES:
    rep = local_report[name]
    assert rep["argument_bytes"] > 0, name
    assert rep["output_bytes"] > 0, name
    assert rep["temp_bytes"] > 0, name
  # The update (forward and backward of 32 rows) costs more than the prefill of 8 prompts.
  assert local_report["update"]["flops"] > local_report["prefill"]["flops"] > 0


def test_shapes_follow_the_config(local_report):
  c = _local_config()
  model = setup.build_model(c, setup.build_tokenizer(c), models.HeadsConfig())  # the real one
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  s = local_report["shapes"]
  assert s["sampler_rows"] == c.rollout.prompts_per_step * c.rollout.samples_per_prompt
  assert s["sampler_len"] == c.rollout.max_prompt_len + c.rollout.max_new_tokens
  assert s["micro_rows"] == c.train.microbatch_rows
  assert s["params"] == n_params
  # update's arguments: params + Adam's two moments + the reference (+ the batch), float32.
  assert local_report["update"]["argument_bytes"] >= 4 * 4 * s["params"]


def test_checkpoint_config_alone_is_enough(tmp_path):
  """A checkpoint directory with only config.json (no weights) compiles."""
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    attention_bias=True,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
  )
  with open(tmp_path / "config.json", "w") as f:
    json.dump(cfg.to_hf_dict(), f)
  c = _local_config()
  c.model.checkpoint = str(tmp_path)
  c.warm_start.steps = 0
  rep = dry_run.compile_only(c, mesh=_one_device())
  assert rep["shapes"]["vocab"] == 64
  assert rep["update"]["temp_bytes"] > 0 and "sft_update" not in rep


@pytest.fixture(scope="module")
def sharded_report():
  """(data, fsdp, tensor) -> compile_only's report on 8 devices, each mesh compiled once."""
  made = {}

  def get(axes):
    if axes not in made:
      made[axes] = dry_run.compile_only(_local_config(*axes))
    return made[axes]

  return get


@pytest.mark.parametrize("axes", [(8, 1, 1), (1, 8, 1), (2, 2, 2)])
def test_compiles_for_an_eight_device_mesh(axes, sharded_report, local_report):
  rep = sharded_report(axes)
  assert rep["mesh"] == dict(zip(("data", "fsdp", "tensor"), axes, strict=True))
  for name in dry_run.EXECUTABLES:
    assert rep[name]["argument_bytes"] > 0, name
    assert rep[name]["peak_bytes"] > 0, name
    assert rep[name]["transient_bytes"] >= 0, name
  # update's arguments are exactly the resident params, AdamW state and reference, the rollout
  # batch, and two int32 scalars (step, data position), so XLA's per-device count and the one
  # from the shardings agree. (GRPO draws nothing at random: jit drops the unused key.)
  res = rep["resident"]
  c = _local_config(*axes)
  rows, tp, n = 32, c.rollout.max_prompt_len, c.rollout.max_new_tokens
  shards = axes[0] * axes[1]
  batch = rows * (2 * (tp + n) + n + n + 1) * 4 // shards  # tokens, masks, logprobs, rewards
  state = res["params"] + res["opt_state"] + res["ref_params"]
  assert rep["update"]["argument_bytes"] == state + batch + 4 + 4
  # Parameters are split only when fsdp or tensor > 1; data parallelism copies them.
  if axes == (8, 1, 1):
    assert res["params"] == local_report["resident"]["params"]
    assert res["sampler_params"] == 0  # one layout serves training and sampling
  else:
    assert res["params"] < local_report["resident"]["params"]
    assert res["sampler_params"] > res["params"]  # the sampler keeps data/fsdp copies whole


def test_fsdp_shrinks_update_arguments_per_device(sharded_report, local_report):
  """memory_analysis() of a sharded executable is per device: fsdp=8 splits every kernel and
  the embedding 8 ways (only the small biases and norm scales stay whole)."""
  one = local_report["update"]["argument_bytes"]
  fsdp8 = sharded_report((1, 8, 1))["update"]["argument_bytes"]
  assert one / 8 <= fsdp8 <= one / 4, (fsdp8, one)


def test_mesh_that_does_not_divide_the_batch_is_refused():
  c = _local_config(data=8)
  c.rollout.prompts_per_step = 3  # 12 rows in micro-batches of 4: not multiples of 8
  c.train.microbatch_rows = 4
  with pytest.raises(ValueError, match=r"samples_per_prompt = 12, .*microbatch_rows = 4: .*8 ways"):
    dry_run.compile_only(c)


def test_table_lists_every_executable(local_report):
  table = dry_run.format_table(local_report)
  for name in (*dry_run.EXECUTABLES, "params"):
    assert name in table


def test_command_line():
  # The child inherits conftest's 8 fake devices; config.mesh's data=-1 takes all of them.
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "grpojax.dry_run",
      "--config=configs/default.py:local",
      "--config.rollout.prompts_per_step=8",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert "update" in res.stdout and "temp MiB" in res.stdout
  assert "data=8" in res.stdout and "resident MiB per device" in res.stdout


def test_the_dry_run_compiles_the_trainers_functions(monkeypatch):
  """compile_only goes through `train.build`, and the abstract build lowers to the very programs
  of the trainer's concrete one, FP8 sampler copy included."""
  c = _local_config()
  c.precision.matmul = "fp8"
  calls = []
  real = train.build
  monkeypatch.setattr(train, "build", lambda *a, **k: calls.append(k) or real(*a, **k))
  dry_run.compile_only(c, mesh=_one_device(), executables=("prefill",))
  assert calls and calls[0]["abstract"]

  concrete = real(c, _one_device())
  abstract = real(c, _one_device(), abstract=True)
  sds = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  params = sds(nnx.state(concrete.run.model))
  key = jax.eval_shape(lambda: jax.random.key(0))
  prompts = jax.ShapeDtypeStruct((8, c.rollout.max_prompt_len), jnp.int32)
  texts = []
  for program in (concrete, abstract):
    sampler_params = jax.eval_shape(program.to_sampler, params)
    prefill, _ = program.sampler.jitted(c.rollout.samples_per_prompt, False)
    state = jax.eval_shape(program.init_state, params)
    rows = 8 * c.rollout.samples_per_prompt
    n, tp = c.rollout.max_new_tokens, c.rollout.max_prompt_len
    batch = step.Batch(
      seqs=types.Sequences(
        *[jax.ShapeDtypeStruct((rows, k), jnp.int32) for k in (tp + n, tp + n, n)]
      ),
      sampler_logprobs=jax.ShapeDtypeStruct((rows, n), jnp.float32),
      rewards=jax.ShapeDtypeStruct((rows,), jnp.float32),
    )
    texts.append(
      (
        prefill.lower(sampler_params, prompts, prompts, key).as_text(),
        program.update.lower(state, batch, key).as_text(),
      )
    )
  assert "f8E4M3FN" in texts[0][0]  # the sampler multiplies FP8 codes
  assert texts[0] == texts[1]
