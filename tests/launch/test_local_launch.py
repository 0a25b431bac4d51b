"""The local multi-process launcher: argument building, failure handling, a real 2-process run."""

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import local_launch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "psum_worker.py")


def test_build_process_commands():
  base = local_launch.main_args("configs/default.py:local", "/tmp/w", {"seed": 3})
  assert base == ["--config=configs/default.py:local", "--workdir=/tmp/w", "--config.seed=3"]
  cmds = local_launch.build_process_commands(["python", "-m", "grpojax.main", *base], 3, 1234)
  assert len(cmds) == 3
  for i, cmd in enumerate(cmds):
    assert cmd[:6] == ["python", "-m", "grpojax.main", *base]
    assert cmd[6:] == [
      "--coordinator_address=127.0.0.1:1234",
      "--num_processes=3",
      f"--process_id={i}",
    ]


@pytest.mark.parametrize("n, port", [(0, 1234), (2, 0), (2, 70000)])
def test_build_process_commands_rejects_bad_values(n, port):
  with pytest.raises(ValueError):
    local_launch.build_process_commands(["x"], n, port)


def test_pick_free_port():
  port = local_launch.pick_free_port()
  assert 0 < port < 65536


def test_output_is_prefixed_and_success_is_zero():
  out = io.StringIO()
  code = local_launch.run_processes(
    [[sys.executable, "-c", f"print('hello {i}')"] for i in range(2)], out=out
  )
  assert code == 0
  assert sorted(out.getvalue().splitlines()) == ["[0] hello 0", "[1] hello 1"]


def test_one_failure_kills_the_others_and_its_code_wins():
  out = io.StringIO()
  t0 = time.monotonic()
  code = local_launch.run_processes(
    [
      [sys.executable, "-c", "import time; time.sleep(60)"],
      [sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"],
    ],
    out=out,
    grace_s=2.0,
  )
  assert code == 3  # the failing process's code, not the sibling's SIGTERM
  assert time.monotonic() - t0 < 20
  assert "[1] bad" in out.getvalue()


def test_real_two_process_jax_run():
  """Two JAX processes join through the coordinator and all-gather their ids (~2-5 s)."""
  port = local_launch.pick_free_port()
  cmds = local_launch.build_process_commands([sys.executable, WORKER], 2, port)
  out = io.StringIO()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  code = local_launch.run_processes(cmds, env=env, out=out, grace_s=2.0)
  text = out.getvalue()
  assert code == 0, text
  assert "[0] process 0 of 2: sum of ids 1" in text
  assert "[1] process 1 of 2: sum of ids 1" in text


def _train_command(workdir):
  overrides = {
    "reward.overlong.enabled": True,
    "reward.overlong.max_len": 6,
    "reward.overlong.cache": 4,
    "objective.entropy_coef": 0.01,
    "train.steps": 3,
    "checkpoint.every": 2,
  }
  return [
    sys.executable,
    "-m",
    "grpojax.main",
    *local_launch.main_args("configs/default.py:local", str(workdir), overrides),
  ]


def _policy(workdir):
  from safetensors.numpy import load_file

  return load_file(str(workdir / "policy" / "model.safetensors"))


def test_two_process_training_matches_one_process(tmp_path):
  """2 processes x 2 devices train (warm start + RL steps with non-zero gradients, multi-host
  checkpoints) to the parameters and metrics of 1 process x 4 devices, then resume."""
  env = lambda n: dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}"
  )
  multi, single = tmp_path / "multi", tmp_path / "single"
  cmds = local_launch.build_process_commands(
    _train_command(multi), 2, local_launch.pick_free_port()
  )
  out = io.StringIO()
  assert local_launch.run_processes(cmds, env=env(2), out=out, grace_s=2.0) == 0, out.getvalue()
  done = subprocess.run(
    _train_command(single), env=env(4), cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stdout + done.stderr

  a, b = _policy(multi), _policy(single)
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
  hist = lambda w: [json.loads(line) for line in open(w / "metrics.jsonl")]
  rl_steps = 0
  for x, y in zip(hist(multi), hist(single), strict=True):
    assert x["step"] == y["step"]
    for k in x:
      if not k.startswith("time/"):
        np.testing.assert_allclose(x[k], y[k], rtol=1e-4, atol=1e-6, err_msg=k)
    rl_steps += x.get("grad_norm", 0.0) > 0
  assert rl_steps == 3  # every RL step really moved the policy
  assert sorted(os.listdir(multi / "checkpoints")) == ["4", "5"]  # written once, by both

  out = io.StringIO()  # the multi-host checkpoint restores (nothing left to train)
  cmds = local_launch.build_process_commands(
    _train_command(multi), 2, local_launch.pick_free_port()
  )
  assert local_launch.run_processes(cmds, env=env(2), out=out, grace_s=2.0) == 0, out.getvalue()
  assert "[0] resumed from step 5" in out.getvalue()
  assert "[1] resumed" not in out.getvalue()  # one process speaks for the run
