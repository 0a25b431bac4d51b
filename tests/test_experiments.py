"""Every script in experiments/ runs its `--smoke` mode to the end and prints its key lines.

Each script runs in a child process from the repository root, without the pytest process's fake
8-device `XLA_FLAGS` (the scripts pick their own devices). Peers (torch, transformers, TRL) are
exercised when importable; a script must then print their lines, and otherwise its skip note.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
TRL = TORCH and all(importlib.util.find_spec(m) for m in ("trl", "datasets"))
# The JAX peer lives in its own environment (the peers-jax extra pins other transformers).
TUNIX = importlib.util.find_spec("tunix") is not None
# Runs a script as `__main__` with the peers made unimportable (`find_spec` returns None for a
# module whose sys.modules entry is None).
_WITHOUT_PEERS = (
  "import runpy, sys; sys.modules.update(dict.fromkeys(['torch', 'transformers', 'trl', "
  "'datasets', 'tunix']));"
  " sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _run(*args: str, timeout: int = 300) -> str:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run(
    args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-5000:]
  return proc.stdout


def _python(script: str, *flags: str, timeout: int = 300) -> list[str]:
  out = _run(sys.executable, os.path.join("experiments", script), *flags, timeout=timeout)
  return [line for line in out.splitlines() if line.strip()]


def _starting(lines: list[str], prefix: str) -> list[str]:
  return [line for line in lines if line.startswith(prefix)]


def test_bench_step():
  lines = _python("bench_step.py", "--smoke")
  assert _starting(lines, "grpojax f32  :") and _starting(lines, "grpojax bf16 :")
  assert _starting(lines, "learn FLOP/s :")
  if TRL:
    assert _starting(lines, "TRL ")
    assert _starting(lines, "  settings   : bf16=False, gradient_checkpointing=False")
    assert _starting(lines, "  first step : learn: autocast=False, dtype=float32")
    assert _starting(lines, "  why        :")
    assert _starting(lines, "speed-up grpojax / TRL (f32 step time): ")
  if TUNIX:
    assert _starting(lines, "tunix ") and _starting(lines, "  settings   : rollout_engine=")
    assert _starting(lines, "speed-up grpojax / tunix (f32 step time): ")
  else:
    assert _starting(lines, "tunix: skipped (not importable: tunix")
  if TORCH:
    assert _starting(lines, "torch loop   :")
    # The plain PyTorch ratio comes last, after TRL's.
    assert lines[-1].startswith("speed-up grpojax / plain PyTorch loop (f32 step time): ")


def test_bench_sampler():
  lines = _python("bench_sampler.py", "--smoke")
  assert _starting(lines, "grpojax      :") and _starting(lines, "decode FLOP/s:")
  if TORCH:
    assert _starting(lines, "transformers : ")
    assert lines[-1].startswith("speed-up grpojax / transformers: ")


def test_bench_device():
  lines = _python("bench_device.py", "--smoke", "--peak_tflops=1", "--hbm_tbps=0.1")
  assert _starting(lines, "device: 1 x cpu (cpu)")
  header = [h.strip() for h in _starting(lines, "| model | chips |")[0].split("|")[1:-1]]
  cells = _starting(lines, "| tiny | 1 x cpu |")[0].split("|")[1:-1]
  row = dict(zip(header, cells, strict=True))
  # The phases partition the step (each printed to the millisecond).
  phases = ("generate s", "score s", "learn s", "weight sync s")
  assert abs(sum(float(row[k]) for k in phases) - float(row["step s"])) <= 0.003, row
  assert float(row["learn MFU"].strip().rstrip("%")) > 0, row  # --peak_tflops gives a peak
  assert _starting(lines, "share of step: generate ")
  assert _starting(lines, "learn: ") and "MFU" in _starting(lines, "learn: ")[0]
  assert _starting(lines, "decode: ") and "x the bound" in _starting(lines, "decode: ")[0]


@pytest.mark.parametrize(
  ("script", "flags", "note"),
  [
    ("bench_step.py", ("--smoke", "--skip_bf16"), "TRL and plain PyTorch loop: skipped"),
    ("bench_sampler.py", ("--smoke",), "transformers : skipped"),
  ],
)
def test_peers_skip_cleanly(script, flags, note):
  out = _run(sys.executable, "-c", _WITHOUT_PEERS, os.path.join("experiments", script), *flags)
  assert "grpojax" in out
  assert note in out and "(not importable: torch, transformers)" in out
  if script == "bench_step.py":
    assert "tunix: skipped (not importable: tunix" in out
  assert "speed-up" not in out


def test_bench_logprobs():
  lines = _python("bench_logprobs.py", "--smoke")
  assert _starting(lines, "XLA peak GiB")
  assert _starting(lines, "ratio time       chunked/naive: ")


def test_bench_learn():
  lines = _python("bench_learn.py", "--smoke")
  assert _starting(lines, "plain        : learn ") and _starting(lines, "ideal        : ")
  bucketed = _starting(lines, "buckets 4    : learn ")
  assert bucketed and "x ideal" in bucketed[0] and "positions 0." in bucketed[0]


def test_bench_precision():
  lines = _python("bench_precision.py", "--smoke")
  assert _starting(lines, "mode ") and "update s" in _starting(lines, "mode ")[0]
  for mode in ("bf16", "fp8", "fp8_block"):
    assert _starting(lines, f"{mode} "), mode


def test_scaling():
  lines = _python("scaling.py", "--smoke")
  assert "## Per-device memory (MiB), extrapolated to the full depth" in lines
  header = _starting(lines, "| model | target |")[0]
  for column in ("prefill arg/temp/peak", "decode arg/temp/peak", "update temp/peak"):
    assert column in header
  assert _starting(lines, "| tiny | cpu4 (XLA:CPU) | 1,2,2 | yes | none |")
  assert "## Linear-in-depth check" in lines
  assert len(_starting(lines, "| cpu4 | tiny | 1,2,2 | 4 |")) == 3  # prefill, decode, update


@pytest.mark.slow
def test_scaling_remat_full():
  lines = _python("scaling.py", "--smoke", "--remat_full")
  assert _starting(lines, "| tiny | cpu4 (XLA:CPU) | 1,2,2 | yes | full |")


def test_precision_report():
  lines = _python("precision_report.py", "--smoke")
  assert _starting(lines, "| mode | mean abs Δlog p |")
  assert _starting(lines, "| float32 |") and _starting(lines, "| naive FP8 (rollout only) |")
  assert lines[-1].startswith("wrote ") and lines[-1].endswith("precision_curves.png")


@pytest.mark.slow
def test_precision_modes_then_report(tmp_path):
  root = str(tmp_path)
  out = _run("bash", os.path.join("experiments", "precision_modes.sh"), "--smoke", root)
  for mode in ("f32", "bf16", "fp8_naive", "fp8_unified", "nvfp4_lora"):
    assert f"{mode}: held-out accuracy:" in out, mode
  lines = _python("precision_report.py", f"--root={root}", f"--out={root}")
  assert len(_starting(lines, "| ")) == 1 + 5  # the header and one row per mode


def test_staleness_study():
  lines = _python("staleness.py", "--smoke")
  results = _starting(lines, "RESULT ")
  assert len(results) == 4  # 2 arms x staleness 0 and 2 x one seed
  assert _starting(lines, "| arm | staleness 0 | staleness 2 |")
  assert _starting(lines, "| grpo | ") and _starting(lines, "| oapl | ")
  assert lines[-1].startswith("wrote ") and lines[-1].endswith("staleness.png")


def test_multiturn_study():
  lines = _python("multiturn.py", "--smoke")
  assert len(_starting(lines, "RESULT ")) == 2  # GRPO and SeeUPO on the calculator, one seed
  assert _starting(lines, "| grpo | ") and _starting(lines, "| seeupo | ")
  assert lines[-1].startswith("wrote ") and lines[-1].endswith("multiturn.png")


def test_bench_pipeline():
  lines = _python("bench_pipeline.py", "--smoke")
  assert _starting(lines, "pipeline sync  (-): ") and _starting(lines, "pipeline async (")
  assert _starting(lines, "ratio async/sync: ")


_STUDY_REPORTS = {
  "entropy.py": ("| clip_cov | ", "entropy_curve.png"),
  "exploration.py": ("| deep_grpo | ", "exploration_tokens.png"),
  "diversity.py": ("| progrpo | ", "diversity.png"),
  "difficulty.py": ("| dr_grpo | ", "difficulty_length.png"),
  "selection.py": ("| dynamic_sampling | ", "selection.png"),
  "critic.py": ("| vapo | ", "critic.png"),
}


# Two groups run on separate workers; the second shares one warm-start evaluation.
@pytest.mark.parametrize(
  "scripts",
  [
    ("entropy.py", "exploration.py"),
    ("diversity.py", "difficulty.py", "selection.py", "critic.py"),
  ],
)
def test_scratchpad_studies_share_one_out(tmp_path, scripts):
  """The method studies, one arm each, writing into one OUT: the warm start's evaluation is
  made once and every report finds its runs."""
  out = str(tmp_path)
  for script in scripts:
    row, png = _STUDY_REPORTS[script]
    lines = _python(script, "--smoke", f"--out={out}")
    assert len(_starting(lines, "RESULT ")) == 1, script  # its one arm, one seed
    assert _starting(lines, row), script
    assert lines[-1] == f"wrote {os.path.join(out, script.replace('.py', '.md'))}", script
    assert os.path.exists(os.path.join(out, png)), script
  with open(os.path.join(out, "results.jsonl")) as f:
    assert len(f.readlines()) == len(scripts)
  if "diversity.py" in scripts:
    assert os.path.exists(os.path.join(out, "warm_start.json"))


def _study_module():
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import study

  return study


def test_study_interval_and_example_outcomes_by_hand(tmp_path):
  study = _study_module()
  # Mean 2, sample sd 1, n = 3: half-width t(0.975, 2) x 1 / sqrt(3) = 4.303 / 1.732.
  mean, half = study.interval([1.0, 2.0, 3.0])
  assert mean == 2.0 and half == pytest.approx(4.303 / 3**0.5, rel=1e-6)

  # Two problems, four samples each: 1 and 3 right.
  def sample(correct, length):
    return {"correct": correct, "length": length}

  records = [
    {
      "greedy": {"correct": False},
      "samples": [sample(True, 10), sample(False, 20), sample(False, 30), sample(False, 40)],
    },
    {
      "greedy": {"correct": True},
      "samples": [sample(True, 8), sample(True, 12), sample(True, 10), sample(False, 50)],
    },
  ]
  path = tmp_path / "examples.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  ex = study.example_outcomes(str(path))
  assert ex == {
    "n": 4,
    "correct": [1, 3],
    "greedy": [0, 1],
    "right_length": [10.0, 10.0],
    "wrong_length": [30.0, 50.0],
  }
  # pass@2 = 1 - C(n - c, 2) / C(n, 2): 1 - 3/6 and 1 - 0/6.
  assert study.pass_at_k(ex, 2) == pytest.approx((0.5 + 1.0) / 2)
  assert study.pass_at_k(ex, 1) == pytest.approx((0.25 + 0.75) / 2)


def test_study_refuses_a_warm_start_that_is_not_a_policy(tmp_path):
  proc = subprocess.run(
    [sys.executable, os.path.join("experiments", "entropy.py"), f"--warm_start={tmp_path}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith(f"--warm_start: '{tmp_path}' is not")
