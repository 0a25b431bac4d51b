"""The local multi-process launcher: argument building, failure handling, a real 2-process run."""

import io
import os
import sys
import time

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
    assert cmd[6:] == ["--coordinator_address=127.0.0.1:1234", "--num_processes=3",
                       f"--process_id={i}"]


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
    [[sys.executable, "-c", f"print('hello {i}')"] for i in range(2)], out=out)
  assert code == 0
  assert sorted(out.getvalue().splitlines()) == ["[0] hello 0", "[1] hello 1"]


def test_one_failure_kills_the_others_and_its_code_wins():
  out = io.StringIO()
  t0 = time.monotonic()
  code = local_launch.run_processes([
    [sys.executable, "-c", "import time; time.sleep(60)"],
    [sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"],
  ], out=out, grace_s=2.0)
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
