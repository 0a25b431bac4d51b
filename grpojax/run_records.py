"""What each start of a run was: `record_run_start` appends the config, grpojax's version and git
commit and the libraries' versions to `<workdir>/run_info.jsonl` (process 0 only)."""

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from typing import Any

from absl import logging

RUN_INFO_FILENAME = "run_info.jsonl"
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def _package_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def git_state(package_dir: str | os.PathLike) -> tuple[str, bool | None]:
  """(commit, dirty) of the git checkout holding the package, or ("unknown", None).

  Only a checkout whose top level directly holds the package counts: an installed copy inside
  some other repository (a virtualenv in a user's project) is not grpojax's own source.
  """
  package_dir = os.path.realpath(package_dir)

  def git(*args: str) -> str:
    return subprocess.run(
      ["git", "-C", package_dir, *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()

  try:
    top = git("rev-parse", "--show-toplevel")
    if os.path.realpath(top) != os.path.dirname(package_dir):
      return "unknown", None
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return "unknown", None
  return commit, dirty


def run_info(config: Any, *, start_step: int) -> dict[str, Any]:
  """What this start of a run was: its config, the code's version and commit, when and where.

  Args:
    config: the run's `ml_collections.ConfigDict` (anything with `to_json_best_effort`).
    start_step: the step this start resumes from (0 for a fresh run).

  Returns:
    A JSON-serialisable dict: `started` (UTC, ISO 8601), `start_step`, `grpojax_version`,
    `git_commit` ("unknown" outside a git checkout), `git_dirty` (tracked files modified;
    None when unknown), `versions` (jax, flax, ...), `python`, `host`, `argv`, `config`.
  """
  package_dir = os.path.dirname(os.path.abspath(__file__))
  commit, dirty = git_state(package_dir)
  return {
    "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "start_step": int(start_step),
    # The package's __init__ is loaded before any of its modules, this one included.
    "grpojax_version": sys.modules[__package__].__version__,
    "git_commit": commit,
    "git_dirty": dirty,
    "versions": {name: _package_version(name) for name in _VERSIONED},
    "python": platform.python_version(),
    "host": socket.gethostname(),
    "argv": list(sys.argv),
    "config": json.loads(config.to_json_best_effort(sort_keys=True)),
  }


def record_run_start(workdir: str | os.PathLike, config: Any, *, start_step: int) -> dict:
  """Appends this start's `run_info` as one line of `<workdir>/run_info.jsonl`.

  Every start of a run (the first and each resume) adds a line; none is overwritten, so a
  resume with a changed config or newer code stays visible next to the first start.

  Returns:
    The record written.
  """
  record = run_info(config, start_step=start_step)
  path = os.path.join(os.fspath(workdir), RUN_INFO_FILENAME)
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    if not _ends_with_newline(path):  # seal a line cut short by a crash
      os.write(fd, b"\n")
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    os.fsync(fd)
  finally:
    os.close(fd)
  return record


def read_run_info(workdir: str | os.PathLike) -> list[dict]:
  """The records of `record_run_start` in `workdir`, oldest first; unreadable lines skipped."""
  path = os.path.join(os.fspath(workdir), RUN_INFO_FILENAME)
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except ValueError as e:
          logging.warning("Skipping unreadable line %d of %s: %s", lineno, path, e)
  return records


def _ends_with_newline(path: str) -> bool:
  """Whether the file at `path` is empty or ends with a newline."""
  with open(path, "rb") as f:
    if f.seek(0, os.SEEK_END) == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"
