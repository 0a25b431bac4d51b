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
