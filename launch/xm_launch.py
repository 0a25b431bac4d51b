"""XManager launcher: one job per point of a config file's `sweep()`.

  pip install -e .[launch]
  python -m launch.xm_launch --config=configs/default.py --workdir_root=gs://BUCKET/grpojax \
    --platform=tpu --tpu_topology=v5p-64
  python -m launch.xm_launch --config=configs/default.py --workdir_root=gs://BUCKET/grpojax \
    --platform=gpu --gpu_type=h100 --gpus_per_host=8 --hosts=2
  python -m launch.xm_launch --config=configs/default.py:local --workdir_root=/tmp/x --print_only

Each sweep point (a dict of dotted config fields -> values) becomes the arguments of
`python -m grpojax.main --config=FILE[:ARG] --workdir=ROOT/EXPERIMENT/POINT --config.a.b=VALUE`,
where POINT is a stable name derived from the overrides alone (sorted keys), so re-launching a
sweep resumes each point from its own workdir. Every point is applied to the config before
anything is launched, so a typo in `sweep()` fails here, not on the cluster.

The argument building (`build_job_args`, `jobs_from_sweep`, `requirements_kwargs`) is pure and
unit-tested. The XManager part (`_launch`) is written against xmanager's public API
(`xm_local.create_experiment`, `xm.python_container` -> `xm.Packageable`, `xm_local.Vertex`,
`xm.JobRequirements`, `xm.Job`) but has NOT been executed or even imported here: xmanager is an
optional extra and is not installed in the development environment. Still to check on first
real use: the base image (it must install this package's requirements; a TPU image needs
`jax[tpu]`) and how a multi-host job learns its coordinator address and process id (Vertex sets
cluster environment variables; jobs of more than one host get `--distributed`, with which
`grpojax.main` calls `jax.distributed.initialize()` to detect them).
Accelerator resource names accepted by `xm.JobRequirements` differ between xmanager versions;
check `xm.ResourceType` of the installed version if the job is rejected. Without xmanager,
`main` exits with an install hint unless `--print_only` is given.
"""

import hashlib
import importlib.util
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags

ENTRY_MODULE = "grpojax.main"
_MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
# Chips per host and whether the slice name counts TensorCores (2 per chip) rather than chips.
_TPU_GENERATIONS = {"v4": (4, True), "v5p": (4, True), "v5e": (4, False), "v6e": (4, False)}


def format_value(value: Any) -> str:
  """A config value as `--config.a.b=` text that ml_collections' config_flags parses back.

  Args:
    value: a bool, int, float, str, or tuple/list of those.

  Returns:
    The text: `true`/`false` for bools, `repr` for floats (exact round trip, `1e-05` form for
    small ones), the string itself for strings (spaces survive because the argument list is
    never shell-split), a Python tuple literal for sequences.
  """
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      raise ValueError(f"cannot pass a non-finite float {value!r} as a flag")
    return repr(value)
  if isinstance(value, str):
    return value
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  raise TypeError(f"unsupported sweep value {value!r} of type {type(value).__name__}")


def override_flags(point: Mapping[str, Any]) -> list[str]:
  """`--config.<key>=<value>` for each override of a sweep point, in sorted key order."""
  return [f"--config.{key}={format_value(point[key])}" for key in sorted(point)]


def point_name(point: Mapping[str, Any]) -> str:
  """A stable, filesystem-safe name for a sweep point, derived from its overrides only.

  `{"seed": 1, "optim.learning_rate": 3e-4}` -> `optim.learning_rate=0.0003,seed=1`; the
  empty point is `base`. Unsafe characters become `-`; names longer than 120 characters are cut
  and end with an 8-digit hash of the full name, so distinct points keep distinct names.
  """
  if not point:
    return "base"
  parts = [f"{key}={format_value(point[key])}" for key in sorted(point)]
  name = ",".join(_UNSAFE.sub("-", p) for p in parts)
  if len(name) > _MAX_NAME:
    digest = hashlib.sha256(",".join(parts).encode()).hexdigest()[:8]
    name = f"{name[: _MAX_NAME - 9]}-{digest}"
  return name


def build_job_args(
  config_path: str, workdir_root: str, sweep_point: Mapping[str, Any], *, experiment_name: str
) -> list[str]:
  """The `grpojax.main` arguments of one sweep point (without `python -m grpojax.main`).

  Args:
    config_path: the config file, optionally with its argument (`configs/default.py:local`).
    workdir_root: where experiments live (a local path or a bucket URL).
    sweep_point: dotted config field -> value.
    experiment_name: the experiment's directory under `workdir_root`.

  Returns:
    `['--config=...', '--workdir=ROOT/EXPERIMENT/POINT', '--config.a.b=value', ...]`.
  """
  workdir = "/".join([workdir_root.rstrip("/"), experiment_name, point_name(sweep_point)])
  return [f"--config={config_path}", f"--workdir={workdir}", *override_flags(sweep_point)]


def command(args: Sequence[str], python: str = "python") -> list[str]:
  """The full command line of `grpojax.main` with `args`."""
  return [python, "-m", ENTRY_MODULE, *args]


def load_config_module(config_path: str):
  """Imports a config file (`path.py` or `path.py:arg`) by path; returns (module, arg)."""
  path, _, arg = config_path.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} not found")
  spec = importlib.util.spec_from_file_location(
    "_grpojax_config_" + os.path.basename(path)[:-3], path
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, (arg or None)


def apply_overrides(config, point: Mapping[str, Any]):
  """Sets dotted fields of a (locked) ConfigDict in place; an unknown field raises.

  ConfigDict's own type checks apply (a float into an int field raises TypeError).
  """
  for key, value in point.items():
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(f"sweep point sets unknown field config.{key}")
    node[leaf] = value
  return config


def jobs_from_sweep(
  config_path: str, workdir_root: str, *, experiment_name: str | None = None
) -> list[tuple[str, list[str]]]:
  """One `(point name, grpojax.main arguments)` per point of the config file's `sweep()`.

  A config file without `sweep()` is one job with no overrides. Every point is applied to the
  config first, so an unknown field fails before any launch; duplicate names also fail.

  Args:
    config_path: `configs/x.py` or `configs/x.py:arg`.
    workdir_root: parent of the experiment directory.
    experiment_name: defaults to the config file's base name.
  """
  module, arg = load_config_module(config_path)
  points = module.sweep() if hasattr(module, "sweep") else [{}]
  if not points:
    raise ValueError(f"{config_path}: sweep() returned no points")
  name = experiment_name or os.path.basename(config_path.partition(":")[0])[:-3]
  jobs, seen = [], set()
  for point in points:
    apply_overrides(module.get_config(arg), point)
    job_name = point_name(point)
    if job_name in seen:
      raise ValueError(f"{config_path}: two sweep points share the name {job_name!r}")
    seen.add(job_name)
    jobs.append((job_name, build_job_args(config_path, workdir_root, point, experiment_name=name)))
  return jobs


def multi_host(jobs, hosts: int):
  """`jobs` with `--distributed` added to each job's arguments when it spans several hosts."""
  if hosts <= 1:
    return jobs
  return [(name, [*args, "--distributed"]) for name, args in jobs]


def tpu_hosts(tpu_topology: str) -> tuple[str, int, int]:
  """`v5p-64` -> ('v5p', chips, hosts); slice names count cores on v4/v5p, chips on v5e/v6e."""
  match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", tpu_topology)
  if not match or match.group(1) not in _TPU_GENERATIONS:
    raise ValueError(
      f"--tpu_topology={tpu_topology!r}: expected e.g. v5p-64 or v5e-16 "
      f"(generations {sorted(_TPU_GENERATIONS)})"
    )
  generation, count = match.group(1), int(match.group(2))
  per_host, counts_cores = _TPU_GENERATIONS[generation]
  chips = count // 2 if counts_cores else count
  return generation, chips, max(1, chips // per_host)


def requirements_kwargs(
  platform: str,
  *,
  tpu_topology: str = "",
  gpu_type: str = "",
  gpus_per_host: int = 0,
  hosts: int = 0,
) -> dict[str, Any]:
  """Keyword arguments of `xm.JobRequirements` for one host of the job, and the host count.

  Returns:
    e.g. `{'tpu_v5p': 32, 'hosts': 8}` or `{'h100': 8, 'hosts': 2}`; the caller pops `hosts`
    (xmanager's `replicas` for GPU jobs; a TPU slice's hosts are implied by its size).
  """
  if platform == "tpu":
    generation, chips, implied = tpu_hosts(tpu_topology)
    if hosts and hosts != implied:
      raise ValueError(
        f"--hosts={hosts} contradicts --tpu_topology={tpu_topology} ({implied} hosts)"
      )
    return {f"tpu_{generation}": chips, "hosts": implied}
  if platform == "gpu":
    if not gpu_type or gpus_per_host < 1:
      raise ValueError("--platform=gpu needs --gpu_type (e.g. h100, a100) and --gpus_per_host")
    return {gpu_type.lower(): gpus_per_host, "hosts": max(hosts, 1)}
  raise ValueError(f"--platform={platform!r}: expected 'tpu' or 'gpu'")


def _import_xmanager():
  """(xm, xm_local), or exit with the install hint."""
  try:
    from xmanager import xm, xm_local  # optional dependency: imported only when launching
  except ImportError:
    sys.exit(
      "xm_launch: xmanager is not installed. It is an optional extra: "
      "pip install -e .[launch]  (or use --print_only to see the jobs)"
    )
  return xm, xm_local


def _launch(
  jobs, requirements: dict[str, Any], experiment_name: str, repo_root: str
) -> None:  # pragma: no cover - needs xmanager and a cloud project
  """Packages the repository once and adds one Vertex AI job per sweep point (untested)."""
  xm, xm_local = _import_xmanager()
  requirements = dict(requirements)
  hosts = requirements.pop("hosts")
  tpu = any(k.startswith("tpu_") for k in requirements)
  with xm_local.create_experiment(experiment_title=experiment_name) as experiment:
    # xm.python_container returns an xm.Packageable: the repo as a Docker image whose
    # entrypoint is `python -m grpojax.main`; the job args below are appended to it.
    [executable] = experiment.package(
      [
        xm.python_container(
          executor_spec=xm_local.Vertex.Spec(),
          entrypoint=xm.ModuleName(ENTRY_MODULE),
          path=repo_root,
          base_image="python:3.11",
          use_deep_module=True,
        )
      ]
    )
    job_requirements = xm.JobRequirements(**requirements, **({} if tpu else {"replicas": hosts}))
    for _, args in jobs:
      experiment.add(
        xm.Job(
          executable=executable, executor=xm_local.Vertex(requirements=job_requirements), args=args
        )
      )


def define_flags() -> None:
  """Defines this program's flags (at `__main__` only, so tests can import the module)."""
  flags.DEFINE_string("config", None, "Config file, optionally `:arg`.")
  flags.DEFINE_string("workdir_root", None, "Parent of the experiment directory.")
  flags.DEFINE_string("experiment_name", None, "Defaults to the config's name.")
  flags.DEFINE_enum("platform", "tpu", ["tpu", "gpu"], "Accelerator platform.")
  flags.DEFINE_string("tpu_topology", "v5p-8", "TPU slice, e.g. v5p-64, v5e-16.")
  flags.DEFINE_string("gpu_type", "h100", "GPU type for --platform=gpu.")
  flags.DEFINE_integer("gpus_per_host", 8, "GPUs per host for --platform=gpu.")
  flags.DEFINE_integer("hosts", 0, "Hosts per job (0: implied by the TPU slice, or 1).")
  flags.DEFINE_bool("print_only", False, "Print the jobs; launch nothing.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.config or not f.workdir_root:
    raise app.UsageError("--config and --workdir_root are required")
  if not f.print_only:
    _import_xmanager()  # fail before any work
  name = f.experiment_name or os.path.basename(f.config.partition(":")[0])[:-3]
  jobs = jobs_from_sweep(f.config, f.workdir_root, experiment_name=name)
  requirements = requirements_kwargs(
    f.platform,
    tpu_topology=f.tpu_topology,
    gpu_type=f.gpu_type,
    gpus_per_host=f.gpus_per_host,
    hosts=f.hosts,
  )
  jobs = multi_host(jobs, requirements["hosts"])
  print(f"{len(jobs)} job(s), each {requirements}")
  for _, args in jobs:
    print(shlex.join(command(args)))
  if not f.print_only:
    _launch(jobs, requirements, name, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


if __name__ == "__main__":
  define_flags()
  app.run(main)
