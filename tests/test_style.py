"""The whole tree is ruff-formatted (2-space indent, 100 columns) and lint-clean."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args):
  exe = shutil.which("ruff")
  cmd = [exe, *args] if exe else [sys.executable, "-m", "ruff", *args]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [("format", "--check", "."), ("check", ".")], ids=str)
def test_ruff(args):
  proc = _ruff(*args)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _collect(*args):
  """The test ids `pytest --collect-only ARGS` selects, and its output."""
  proc = subprocess.run(
    [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  return [line for line in proc.stdout.splitlines() if "::" in line], proc.stdout


def test_the_test_command_skips_slow_tests_and_selects_them_with_m_slow():
  path = "tests/test_experiments.py"
  default, out = _collect(path)
  assert default and not any("test_scaling_remat_full" in t for t in default), out
  slow, out = _collect("-m", "slow", path)
  assert f"{path}::test_scaling_remat_full" in slow, out
  assert not set(slow) & set(default)
