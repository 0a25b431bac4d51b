"""The XManager launcher's argument building, without xmanager."""

import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from launch import xm_launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "configs", "default.py")


def _parse(args):
  """Parses `grpojax.main`-style arguments with config_flags, as the entry point does.

  config_flags reads the `--config.a.b=` overrides from `sys.argv` itself, so it is swapped in.
  """
  argv = ["grpojax.main", *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  saved, sys.argv = sys.argv, argv
  try:
    fv(argv)
  finally:
    sys.argv = saved
  return fv.config, fv.workdir


@pytest.mark.parametrize(
  "value, text",
  [
    (True, "true"),
    (False, "false"),
    (3, "3"),
    (1.5e-4, "0.00015"),
    (1e-5, "1e-05"),
    ("a b", "a b"),
    ((1, 2), "(1, 2)"),
  ],
)
def test_format_value(value, text):
  assert xm_launch.format_value(value) == text


def test_format_value_rejects_what_flags_cannot_carry():
  with pytest.raises(TypeError):
    xm_launch.format_value(None)
  with pytest.raises(ValueError):
    xm_launch.format_value(float("nan"))


def test_round_trip_through_config_flags():
  # Every kind of field: float, int, bool, a string with spaces and punctuation.
  point = {
    "optim.learning_rate": 3.0e-4,
    "seed": 7,
    "tokenizer.chat_template": True,
    "task.operators": "+ -",
    "objective.kl_coef": 1e-5,
    "rollout.top_p": 0.95,
  }
  args = xm_launch.build_job_args(f"{DEFAULT}:local", "/root", point, experiment_name="exp")
  config, workdir = _parse(args)
  assert workdir == "/root/exp/" + xm_launch.point_name(point)
  for key, value in point.items():
    node = config
    for name in key.split("."):
      node = node[name]
    assert node == value and type(node) is type(value), key
  assert config.train.steps == 2  # the `:local` argument survived


def test_bool_false_round_trips():
  config, _ = _parse(
    xm_launch.build_job_args(DEFAULT, "/r", {"tokenizer.chat_template": False}, experiment_name="e")
  )
  assert config.tokenizer.chat_template is False


def test_point_names_are_stable_and_safe():
  a = xm_launch.point_name({"seed": 1, "optim.learning_rate": 3e-4})
  b = xm_launch.point_name({"optim.learning_rate": 3e-4, "seed": 1})
  assert a == b == "optim.learning_rate=0.0003,seed=1"
  assert xm_launch.point_name({}) == "base"
  assert xm_launch.point_name({"tokenizer.path": "/a b/c"}) == "tokenizer.path=-a-b-c"
  long_a = xm_launch.point_name({"task.data_path": "x" * 200 + "a"})
  long_b = xm_launch.point_name({"task.data_path": "x" * 200 + "b"})
  assert len(long_a) == 120 and long_a != long_b


def test_sweep_of_default_builds_distinct_jobs():
  jobs = xm_launch.jobs_from_sweep(f"{DEFAULT}:local", "gs://b/root")
  assert len(jobs) == 9
  names = [name for name, _ in jobs]
  assert len(set(names)) == 9
  for name, args in jobs:
    assert args[0] == f"--config={DEFAULT}:local"
    assert args[1] == f"--workdir=gs://b/root/default/{name}"
    config, _ = _parse(args)
    assert config.seed in (0, 1, 2)
    assert config.optim.learning_rate in (7.5e-5, 1.5e-4, 3e-4)


def test_sweep_with_a_typo_fails_before_launch(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(
    f"import sys\nsys.path.insert(0, {REPO!r})\nfrom configs import common\n"
    "def get_config(arg=None):\n  return common.finish(common.base(), arg)\n"
    "def sweep():\n  return [{'optim.learning_rat': 1.0}]\n"
  )
  with pytest.raises(KeyError, match="optim.learning_rat"):
    xm_launch.jobs_from_sweep(str(path), "/r")


@pytest.mark.parametrize(
  "topology, expected",
  [
    ("v5p-64", {"tpu_v5p": 32, "hosts": 8}),  # 64 TensorCores = 32 chips, 4 per host
    ("v5e-16", {"tpu_v5e": 16, "hosts": 4}),  # v5e names count chips
    ("v5p-8", {"tpu_v5p": 4, "hosts": 1}),
  ],
)
def test_tpu_requirements(topology, expected):
  assert xm_launch.requirements_kwargs("tpu", tpu_topology=topology) == expected


def test_gpu_requirements_and_errors():
  assert xm_launch.requirements_kwargs("gpu", gpu_type="H100", gpus_per_host=8, hosts=2) == {
    "h100": 8,
    "hosts": 2,
  }
  with pytest.raises(ValueError, match="tpu_topology"):
    xm_launch.requirements_kwargs("tpu", tpu_topology="v9x-3")
  with pytest.raises(ValueError, match="contradicts"):
    xm_launch.requirements_kwargs("tpu", tpu_topology="v5p-64", hosts=2)
  with pytest.raises(ValueError, match="gpus_per_host"):
    xm_launch.requirements_kwargs("gpu", gpu_type="h100", gpus_per_host=0)


def test_multi_host_jobs_join_jax_distributed():
  jobs = [("a", ["--config=c.py", "--workdir=/w/a"])]
  assert xm_launch.multi_host(jobs, 1) == jobs
  hosts = xm_launch.requirements_kwargs("tpu", tpu_topology="v5p-64")["hosts"]
  assert xm_launch.multi_host(jobs, hosts) == [
    ("a", ["--config=c.py", "--workdir=/w/a", "--distributed"])
  ]
  from grpojax import main  # the flag the jobs pass exists in the entry point

  assert "distributed" in main.FLAGS


def test_main_without_xmanager_exits_with_install_hint():
  try:
    import xmanager  # noqa: F401

    pytest.skip("xmanager is installed here")
  except ImportError:
    pass
  res = subprocess.run(
    [sys.executable, "-m", "launch.xm_launch", f"--config={DEFAULT}", "--workdir_root=/tmp/unused"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert res.returncode == 1
  assert "pip install -e .[launch]" in res.stderr


def test_main_print_only_lists_the_jobs():
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.xm_launch",
      f"--config={DEFAULT}:local",
      "--workdir_root=/tmp/w",
      "--print_only",
      "--platform=gpu",
      "--gpu_type=h100",
      "--gpus_per_host=8",
      "--hosts=2",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert res.returncode == 0, res.stderr
  lines = res.stdout.strip().splitlines()
  assert lines[0] == "9 job(s), each {'h100': 8, 'hosts': 2}"
  assert all(" -m grpojax.main --config=" in line for line in lines[1:])
