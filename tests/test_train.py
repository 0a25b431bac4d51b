"""The real entry point end to end, and exact resume after a kill."""

import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from grpojax import checkpoint as checkpoint_lib
from grpojax import metrics as metrics_lib
from grpojax import run_records, train, types
from grpojax.parallel import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _local_config():
  sys.path.insert(0, REPO)
  from configs import default

  return default.get_config("local")


def test_main_smoke_run(tmp_path):
  """Two warm-start and two RL steps through `python -m grpojax.main`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "grpojax.main",
      "--config=configs/default.py:local",
      f"--workdir={tmp_path}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert re.fullmatch(
    r"held-out accuracy: warm start \d+\.\d%, after RL \d+\.\d%, "
    r"pass@4 \d+\.\d%",
    last,
  ), last
  # Captured output is not a terminal: banner, phase boundary, progress with ETA, outputs.
  out = proc.stdout
  assert re.search(
    r"^run: 2 warm-start steps then 2 RL steps, recipe 'grpo', [\d,]+ parameters, \d+ cpu "
    rf"device\(s\) in 1 process\(es\), workdir {re.escape(str(tmp_path))}$",
    out,
    re.M,
  ), out
  assert "--- warm start done at step 2; RL steps 3 to 4 ---" in out
  assert re.search(r"^progress: step 4/4 \(100%\), \S+ elapsed, ETA 0s$", out, re.M), out
  policy = tmp_path / "policy"
  assert f"wrote the policy to {policy}, curves to {tmp_path / 'curves.png'}" in out
  # The exported policy is world-readable and carries its tokenizer.
  assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(
    os.listdir(policy)
  )
  assert os.stat(policy).st_mode & 0o777 == 0o755
  assert {os.stat(policy / n).st_mode & 0o777 for n in os.listdir(policy)} == {0o644}
  names = os.listdir(tmp_path)
  assert "curves.png" in names and "metrics.jsonl" in names
  assert any(n.startswith("events.out.tfevents") for n in names)
  # The final evaluation's report: every held-out example, agreeing with the logged metrics.
  with open(tmp_path / "eval" / "summary.json") as f:
    summary = json.load(f)
  with open(tmp_path / "eval" / "examples.jsonl") as f:
    records = [json.loads(line) for line in f]
  with open(tmp_path / "metrics.jsonl") as f:
    logged = [r for r in map(json.loads, f) if r["step"] == 4 and "eval/pass@4" in r][-1]
  assert summary["step"] == 4 and summary["examples"] == len(records) > 0
  n = summary["samples"]
  counts = [sum(s["correct"] for s in r["samples"]) for r in records]
  pass4 = np.mean([1 - math.comb(n - c, 4) / math.comb(n, 4) for c in counts])
  assert pass4 == pytest.approx(logged["eval/pass@4"], abs=1e-9)
  greedy = np.mean([r["greedy"]["correct"] for r in records])
  assert greedy == pytest.approx(logged["eval/greedy_accuracy"], abs=1e-9)
  # Re-running the finished command resumes at the end and only re-evaluates.
  again = subprocess.run(
    [
      sys.executable,
      "-m",
      "grpojax.main",
      "--config=configs/default.py:local",
      f"--workdir={tmp_path}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from step 4" in again.stdout
  assert again.stdout.strip().splitlines()[-1] == last


def _final_params(workdir):
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step()
  raw = ckpt._manager.restore(step)  # untyped read of the saved arrays
  ckpt.close()
  return step, jax.tree.leaves(raw["state"])


def test_killed_run_resumes_to_identical_parameters(tmp_path, monkeypatch):
  config = _local_config()
  config.train.steps = 3  # steps 0-1 warm start, 2-4 RL; checkpoints at 2 and 4 and 5
  config.metrics.writers = ("jsonl", "csv")
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  train.train_and_evaluate(config, straight)

  real_step = train._rl_step
  calls = {"n": 0}

  def dying_step(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:  # die during the second RL step, after the step-2 checkpoint
      raise KeyboardInterrupt("simulated kill")
    return real_step(*args, **kwargs)

  monkeypatch.setattr(train, "_rl_step", dying_step)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, killed)
  monkeypatch.setattr(train, "_rl_step", real_step)
  train.train_and_evaluate(config, killed)

  # Run tracking: one start record per start; the CSV purged of the killed run's extra steps.
  assert [r["start_step"] for r in run_records.read_run_info(killed)] == [0, 2]
  assert run_records.read_run_info(killed)[0]["config"]["train"]["steps"] == 3

  def tracked(workdir):  # (step, name) of every CSV row; timings differ between the runs
    rows = metrics_lib.read_csv_history(os.path.join(workdir, metrics_lib.CSV_FILENAME))
    return [(step, name) for step, name, _ in rows]

  assert tracked(killed) == tracked(straight)
  step_a, leaves_a = _final_params(straight)
  step_b, leaves_b = _final_params(killed)
  assert step_a == step_b == 5
  assert len(leaves_a) == len(leaves_b)
  for a, b in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_non_finite_steps_are_skipped_then_abort(tmp_path, monkeypatch, caplog, capsys):
  config = _local_config()
  config.train.steps = 5
  config.train.max_bad_steps = 2
  config.checkpoint.every = 1  # a save is in flight when the run aborts
  real_step = train._rl_step
  seen = []

  def non_finite_step(*args, **kwargs):
    state, logs, _ = real_step(*args, **kwargs)
    seen.append(int(state.step))
    logs["loss"] = float("nan")  # as if the gradient norm were NaN
    return state, logs, False

  monkeypatch.setattr(train, "_rl_step", non_finite_step)
  with caplog.at_level("WARNING"):
    with pytest.raises(FloatingPointError, match=r"step 4: 2 updates in a row skipped"):
      train.train_and_evaluate(config, str(tmp_path))
  assert seen == [3, 4]  # warm-start steps 1-2, then RL steps 3 and 4 (1-based, as printed)
  warnings = [r.getMessage() for r in caplog.records if "update skipped" in r.getMessage()]
  assert warnings == [
    "step 3: non-finite loss=nan; update skipped (1 in a row)",
    "step 4: non-finite loss=nan; update skipped (2 in a row)",
  ]
  assert re.search(r"^step\s+3\b", capsys.readouterr().out, re.M)  # the console's step 3
  ckpt_dir = tmp_path / "checkpoints"
  assert not [n for n in os.listdir(ckpt_dir) if "tmp" in n]  # the save in flight finished
  assert "3" in os.listdir(ckpt_dir)


def test_second_run_on_a_locked_workdir_is_refused(tmp_path):
  os.makedirs(tmp_path / "run")
  with checkpoint_lib.lock_workdir(tmp_path / "run"):
    with pytest.raises(checkpoint_lib.WorkdirLockedError, match="is in use by another run"):
      train.train_and_evaluate(_local_config(), str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == [".lock"]  # refused before writing anything


def test_spike_guard_skips_a_spiking_update(tmp_path, monkeypatch, caplog):
  config = _local_config()
  config.warm_start.steps = 0
  config.train.steps = 2
  config.train.spike_guard = 2.0
  spiking = iter([0, 1])

  def spikes_since(before, state):  # the guard's count rises in the second step
    return next(spiking)

  monkeypatch.setattr(train, "_spikes_since", spikes_since)
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(config, str(tmp_path))
  [warning] = [r.getMessage() for r in caplog.records if "update skipped" in r.getMessage()]
  assert warning.startswith("step 2: gradient-norm spike (grad_norm=")
  assert "> 2 x the recent median); update skipped (1 in a row)" in warning


def test_fsdp_and_tensor_parallel_run_equals_data_parallel_run(tmp_path):
  """The whole trainer on a (2, 2, 2) mesh (parameters split over fsdp and tensor, resharded to
  the sampler's layout every step, activations pinned to the batch split) ends with the
  parameters of the (8, 1, 1) data-parallel run."""
  finals = []
  for name, (data, fsdp, tensor) in (("dp", (8, 1, 1)), ("fsdp_tp", (2, 2, 2))):
    config = _local_config()
    with config.unlocked():
      config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, tensor
      config.objective.entropy_coef = 0.01  # non-zero RL gradients even at zero reward
    train.train_and_evaluate(config, str(tmp_path / name))
    finals.append(_final_params(str(tmp_path / name)))
  (s1, p1), (s2, p2) = finals
  assert s1 == s2 == 4
  for a, b in zip(p1, p2, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_aqn_noise_reaches_only_the_samplers_norm_scales():
  """QeRL's noise: the sampler's copy differs from the clean one on RMSNorm scales alone, by
  σ of the step's stage; the first stage is noise-free."""
  config = _local_config()
  with config.unlocked():
    config.precision.aqn.enabled = True
    config.train.steps = 10
  program = train.build(config, mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  params = nnx.state(program.run.model)
  clean = program.to_sampler(params)
  key = jax.random.key(3)
  first_stage = train._sampler_params(program, config, params, 0, key)
  for a, b in zip(jax.tree.leaves(first_stage), jax.tree.leaves(clean), strict=True):
    np.testing.assert_array_equal(a, b)
  noisy = train._sampler_params(program, config, params, 9, key)  # the last stage: σ = 1e-4
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(noisy), jax.tree.leaves(clean), strict=True
  ):
    name = types.path_to_str(path)
    if name.endswith("norm/scale"):
      diff = np.asarray(a) - np.asarray(b)
      assert 0 < np.abs(diff).max() < 1e-3, name
    else:
      np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize(
  "overrides, error",
  [
    ({"rollout.top_p": 2.0}, r"config\.rollout\.top_p"),  # fails validation
    ({"metrics.writers": ("tensorbord", "jsonl")}, r"config\.metrics\.writers: unknown writer"),
    # valid alone, but 2 x 3 rows do not split over the 8 devices: fails while building
    ({"rollout.samples_per_prompt": 3, "train.microbatch_rows": 6}, "rollout"),
  ],
)
def test_a_failed_start_leaves_no_workdir(tmp_path, overrides, error):
  config = _local_config()
  for field, value in overrides.items():
    section, name = field.split(".")
    config[section][name] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=error):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
