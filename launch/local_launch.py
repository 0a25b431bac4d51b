"""Local multi-process launcher: N `grpojax.main` processes on one machine, as N JAX hosts.

  python -m launch.local_launch --config=configs/default.py:local --workdir=/tmp/mp \
    --num_processes=2
  python -m launch.local_launch --config=configs/default.py --workdir=/tmp/sweep \
    --sweep_index=4   # point 4 of the config's sweep(), in /tmp/sweep/<point name>
  python -m launch.local_launch --config=configs/default.py:local --workdir=/tmp/mp \
    -- --config.train.steps=5   # arguments after `--` go to grpojax.main unchanged

Process i runs `python -m grpojax.main ... --coordinator_address=127.0.0.1:PORT
--num_processes=N --process_id=i` (PORT: a free port unless `--port` is given), so
`jax.distributed.initialize` joins them (CPU collectives go over gloo). Their output is
forwarded line by line with a `[i] ` prefix; when one process fails the others are terminated,
and the launcher exits with the first failing process's code (0 when all succeed).

`build_process_commands` is the pure, unit-tested part; `run_processes` is generic over
commands.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from absl import app, flags

from launch import xm_launch

_GRACE_S = 5.0


def pick_free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that was free a moment ago (the OS picks it; a race is possible but rare)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def main_args(
  config_path: str, workdir: str, overrides: Mapping[str, Any] | None = None
) -> list[str]:
  """`grpojax.main` arguments for one run: config, workdir, `--config.a.b=value` overrides."""
  return [
    f"--config={config_path}",
    f"--workdir={workdir}",
    *xm_launch.override_flags(overrides or {}),
  ]


def build_process_commands(
  base_command: Sequence[str], num_processes: int, port: int, *, host: str = "127.0.0.1"
) -> list[list[str]]:
  """One command per process: `base_command` plus the `jax.distributed` flags of process i.

  Args:
    base_command: e.g. `[sys.executable, '-m', 'grpojax.main', '--config=...', '--workdir=...']`.
    num_processes: N >= 1.
    port: the coordinator's port on `host` (process 0 serves it).
    host: the coordinator's address.

  Returns:
    N argument lists, the i-th ending in `--coordinator_address=HOST:PORT --num_processes=N
    --process_id=i`.
  """
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if not 0 < port < 65536:
    raise ValueError(f"port must be in (0, 65536), got {port}")
  return [
    [
      *base_command,
      f"--coordinator_address={host}:{port}",
      f"--num_processes={num_processes}",
      f"--process_id={i}",
    ]
    for i in range(num_processes)
  ]


def _forward(stream, prefix: str, out: TextIO, lock: threading.Lock) -> None:
  for line in iter(stream.readline, ""):
    with lock:
      out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
      out.flush()
  stream.close()


def run_processes(
  commands: Sequence[Sequence[str]],
  *,
  env: Mapping[str, str] | None = None,
  out: TextIO | None = None,
  poll_s: float = 0.05,
  grace_s: float = _GRACE_S,
) -> int:
  """Runs the commands concurrently, forwarding output prefixed with `[i] `.

  When one process exits non-zero, the others get SIGTERM (SIGKILL after `grace_s`).

  Returns:
    The exit code of the first process that failed (the cause, not the siblings it took down),
    or 0 if all succeeded. A process killed by a signal counts as 128 + the signal number.
  """
  out = out or sys.stdout
  lock = threading.Lock()
  procs, threads = [], []
  for i, cmd in enumerate(commands):
    p = subprocess.Popen(
      list(cmd),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=None if env is None else dict(env),
      bufsize=1,
    )
    t = threading.Thread(target=_forward, args=(p.stdout, f"[{i}] ", out, lock), daemon=True)
    t.start()
    procs.append(p)
    threads.append(t)
  first_failure = 0
  try:
    while True:
      codes = [p.poll() for p in procs]  # every process, every time (no short-circuit)
      if all(c is not None for c in codes):
        break
      failed = [c for c in codes if c not in (None, 0)]
      if failed:
        first_failure = _exit_code(failed[0])
        break
      time.sleep(poll_s)
  except KeyboardInterrupt:
    first_failure = 128 + signal.SIGINT
  finally:
    _stop(procs, grace_s)
    for t in threads:
      t.join(timeout=grace_s)
  if not first_failure:
    codes = [_exit_code(p.returncode) for p in procs]
    first_failure = next((c for c in codes if c), 0)
  return first_failure


def _exit_code(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode


def _stop(procs, grace_s: float) -> None:
  """SIGTERM every live process, then SIGKILL whatever is left after `grace_s`."""
  live = [p for p in procs if p.poll() is None]
  for p in live:
    p.terminate()
  deadline = time.monotonic() + grace_s
  for p in live:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def define_flags() -> None:
  """Defines this program's flags (at `__main__` only, so tests can import the module)."""
  flags.DEFINE_string("config", None, "Config file, optionally `:arg`.")
  flags.DEFINE_string("workdir", None, "The run's workdir (a sweep point gets a subdirectory).")
  flags.DEFINE_integer("num_processes", 2, "Processes (JAX hosts) to start.")
  flags.DEFINE_integer("port", 0, "Coordinator port; 0 picks a free one.")
  flags.DEFINE_integer("sweep_index", -1, "Run point i of the config's sweep(); -1: no sweep.")


def main(argv):
  extra = argv[1:]  # after `--`: passed to grpojax.main, e.g. --config.train.steps=5
  f = flags.FLAGS
  if not f.config or not f.workdir:
    raise app.UsageError("--config and --workdir are required")
  overrides, workdir = {}, f.workdir
  if f.sweep_index >= 0:
    module, _ = xm_launch.load_config_module(f.config)
    points = module.sweep()
    overrides = points[f.sweep_index]
    workdir = os.path.join(workdir, xm_launch.point_name(overrides))
  base = xm_launch.command(main_args(f.config, workdir, overrides), python=sys.executable)
  commands = build_process_commands([*base, *extra], f.num_processes, f.port or pick_free_port())
  sys.exit(run_processes(commands))


if __name__ == "__main__":
  define_flags()
  app.run(main)
