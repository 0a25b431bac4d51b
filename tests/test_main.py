"""The entry point's start-up errors: one line naming the culprit, before the trainer's imports,
and no workdir left behind."""

import json
import os
import subprocess
import sys

from grpojax import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the trainer brings in; none of it may load before a bad launch is reported.
HEAVY = {"flax", "optax", "orbax", "tensorflow_datasets", "grain", "torch", "tensorboardX"}
# `python -m grpojax.main ARGS` exactly (runpy is what -m runs), then the modules it had loaded.
_RUN_MAIN = """
import json, runpy, sys
sys.argv = ["grpojax.main", *sys.argv[1:]]
try:
  runpy.run_module("grpojax.main", run_name="__main__", alter_sys=True)
finally:
  print(json.dumps(sorted(sys.modules)))
"""


def _start(workdir, *args):
  """(exit status, stderr lines, top-level and grpojax modules loaded) of a launch."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, "-c", _RUN_MAIN, *args, f"--workdir={workdir}"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  modules = json.loads(proc.stdout.strip().splitlines()[-1])
  loaded = {m.split(".")[0] for m in modules} | {m for m in modules if m.startswith("grpojax.")}
  return proc.returncode, proc.stderr.strip().splitlines(), loaded


def test_a_missing_config_file_stops_before_jax(tmp_path):
  workdir = tmp_path / "run"
  code, stderr, loaded = _start(workdir, "--config=configs/nope.py:local")
  assert code == 1
  assert stderr == [f"error: --config: no config file 'configs/nope.py' (relative to {REPO})"]
  assert not {m for m in loaded if m.startswith("jax")}, sorted(loaded)
  assert not workdir.exists()


def test_a_misspelt_override_is_one_line_before_the_trainer_loads(tmp_path):
  workdir = tmp_path / "run"
  code, stderr, loaded = _start(
    workdir, "--config=configs/default.py:local", "--config.optim.learnin_rate=1"
  )
  assert code == 1
  assert stderr == [
    "error: config.optim.learnin_rate: no field 'learnin_rate' in config.optim; did you mean "
    "config.optim.learning_rate or config.optim.head_learning_rate?"
  ]
  assert not loaded & HEAVY and "grpojax.train" not in loaded, sorted(loaded & HEAVY)
  assert not workdir.exists()


def test_a_field_of_the_wrong_section_points_to_where_it_lives(tmp_path):
  code, stderr, _ = _start(
    tmp_path / "run", "--config=configs/default.py:local", "--config.objective.name=x"
  )
  assert code == 1 and len(stderr) == 1
  assert stderr[0].startswith("error: config.objective.name: no field 'name' in config.objective")
  assert "config.objective.correction.name" in stderr[0]
  assert "recipe" in stderr[0]  # the section's fields, since none is close to 'name'


def test_missing_inputs_are_reported_before_the_trainer_loads(tmp_path):
  workdir = tmp_path / "run"
  data, checkpoint = tmp_path / "train.jsonl", tmp_path / "ckpt"
  code, stderr, loaded = _start(
    workdir,
    "--config=configs/gsm8k.py:local",
    f"--config.task.data_path={data}",
    f"--config.model.checkpoint={checkpoint}",
  )
  assert code == 1
  assert stderr == [
    f"error: config.task.data_path: no file '{data}'; "
    f"config.model.checkpoint: no directory '{checkpoint}'"
  ]
  assert not loaded & HEAVY and "grpojax.train" not in loaded, sorted(loaded & HEAVY)
  assert not workdir.exists()


def test_a_second_run_on_a_busy_workdir_is_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with checkpoint.lock_workdir(workdir):
    code, stderr, _ = _start(workdir, "--config=configs/default.py:local")
  assert code == 1 and len(stderr) == 1, stderr
  assert stderr[0].startswith("error: ") and "is in use by another run" in stderr[0]
