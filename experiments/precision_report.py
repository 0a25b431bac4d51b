"""Summarises `experiments/precision_modes.sh` runs: the mismatch table and learning curves.

  python experiments/precision_report.py --root=/tmp/prec --out=experiments
  python experiments/precision_report.py --smoke   # two fake run directories in a temp dir

Reads each mode's `<root>/<mode>/metrics.jsonl` (the trainer's history), prints the table of
precision.md and writes `precision_curves.png` into --out. `--smoke` writes two short fake
histories with the trainer's own metric writer and mismatch metrics (`rl.step.
mismatch_metrics`) and renders them, so a renamed metric fails it.
"""

import argparse
import json
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODES = [
  ("f32", "float32"),
  ("bf16", "bf16 compute"),
  ("fp8_naive", "naive FP8 (rollout only)"),
  ("fp8_unified", "unified FP8 (Jet-RL)"),
  ("nvfp4_lora", "NVFP4 base + LoRA + AQN (QeRL)"),
]


def _history(root, mode):
  with open(os.path.join(root, mode, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _pass_key(evals) -> str:
  """The run's `eval/pass@k` key (k is `config.eval.pass_k`)."""
  keys = sorted({k for d in evals for k in d if k.startswith("eval/pass@")})
  if len(keys) != 1:
    raise ValueError(f"expected one eval/pass@k metric, found {keys}")
  return keys[0]


def report(root: str, out: str) -> str:
  """The markdown table of the runs under `root`; writes `precision_curves.png` into `out`."""
  rows, pass_name = [], "pass@k"
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for mode, label in MODES:
    if not os.path.exists(os.path.join(root, mode, "metrics.jsonl")):
      continue
    h = _history(root, mode)
    rl = [d for d in h if "mismatch/abs_logprob" in d]
    ev = [d for d in h if "eval/greedy_accuracy" in d]
    pass_key = _pass_key(ev)
    pass_name = pass_key.removeprefix("eval/")
    mean = lambda k, rl=rl: float(np.mean([d[k] for d in rl]))
    rows.append(
      f"| {label} | {mean('mismatch/abs_logprob'):.2e} | {mean('mismatch/k3_kl'):.2e} "
      f"| {100 * mean('mismatch/beyond_tis_frac'):.3f}% | "
      f"{100 * ev[0]['eval/greedy_accuracy']:.1f}% → "
      f"{100 * ev[-1]['eval/greedy_accuracy']:.1f}% | "
      f"{100 * ev[-1][pass_key]:.1f}% | {mean('time/step_s'):.2f} |"
    )
    axes[0].plot([d["step"] for d in rl], [d["reward/mean"] for d in rl], label=label)
    axes[1].plot(
      [d["step"] for d in ev], [d["eval/greedy_accuracy"] for d in ev], "o-", label=label
    )
    axes[2].semilogy(
      [d["step"] for d in rl], [max(d["mismatch/abs_logprob"], 1e-9) for d in rl], label=label
    )
  if not rows:
    raise FileNotFoundError(
      f"no <mode>/metrics.jsonl under {root} for modes {[m for m, _ in MODES]}"
    )
  for ax, title in zip(
    axes,
    ["train reward", "held-out greedy accuracy", "sampler vs trainer mean |Δ log p|"],
    strict=True,
  ):
    ax.set_title(title)
    ax.set_xlabel("RL step")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "precision_curves.png"), dpi=90)
  plt.close(fig)
  header = [
    "| mode | mean abs Δlog p | k3 KL(sampler‖trainer) | tokens beyond TIS cap 2 | "
    f"greedy acc: start → end | {pass_name} end | step s (CPU) |",
    "|---|---|---|---|---|---|---|",
  ]
  return "\n".join(header + rows)


def write_fake_runs(root: str, *, steps: int = 3, pass_k: int = 4) -> None:
  """Two short histories (f32, fp8_naive) as the trainer writes them, with made-up values."""
  import jax.numpy as jnp

  from grpojax import metrics
  from grpojax.rl import step

  rs = np.random.RandomState(0)
  for mode, noise in (("f32", 1e-7), ("fp8_naive", 3e-2)):
    writer = metrics.MetricWriter(os.path.join(root, mode))
    evaluate = lambda s, acc, w=writer: w.write_scalars(
      s, {"eval/greedy_accuracy": acc, "eval/sample_accuracy": acc, f"eval/pass@{pass_k}": acc}
    )
    evaluate(0, 0.5)
    for s in range(1, steps + 1):
      trainer_lp = jnp.asarray(-rs.rand(4, 6), jnp.float32)
      sampler_lp = trainer_lp + noise * jnp.asarray(rs.randn(4, 6), jnp.float32)
      logs = {
        k: float(v)
        for k, v in step.mismatch_metrics(trainer_lp, sampler_lp, jnp.ones((4, 6))).items()
      }
      logs.update({"reward/mean": 0.1 * s, "time/step_s": 0.5})
      writer.write_scalars(s, logs)
    evaluate(steps, 0.75)
    writer.close()


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--root", help="the ROOT given to precision_modes.sh")
  ap.add_argument("--out", default="experiments")
  ap.add_argument("--smoke", action="store_true", help="render fake runs made in a temp dir")
  args = ap.parse_args()
  if args.smoke:
    args.root = args.out = tempfile.mkdtemp(prefix="precision_report_smoke_")
    write_fake_runs(args.root)
  elif not args.root:
    ap.error("--root is required (or --smoke)")
  print(report(args.root, args.out))
  print(f"wrote {os.path.join(args.out, 'precision_curves.png')}")


if __name__ == "__main__":
  main()
