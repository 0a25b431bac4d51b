"""Summarises `experiments/precision_modes.sh` runs: the mismatch table and learning curves.

  python experiments/precision_report.py --root=/tmp/prec --out=experiments

Prints the table of precision.md and writes `precision_curves.png` into --out.
"""

import argparse
import json
import os

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


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--root", required=True)
  ap.add_argument("--out", default="experiments")
  args = ap.parse_args()
  lines = [
    "| mode | mean abs Δlog p | k3 KL(sampler‖trainer) | tokens beyond TIS cap 2 | "
    "greedy acc: start → end | pass@8 end | step s (CPU) |",
    "|---|---|---|---|---|---|---|",
  ]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for mode, label in MODES:
    if not os.path.exists(os.path.join(args.root, mode, "metrics.jsonl")):
      continue
    h = _history(args.root, mode)
    rl = [d for d in h if "mismatch/abs_logprob" in d]
    ev = [d for d in h if "eval/greedy_accuracy" in d]
    mean = lambda k, rl=rl: float(np.mean([d[k] for d in rl]))
    lines.append(
      f"| {label} | {mean('mismatch/abs_logprob'):.2e} | {mean('mismatch/k3_kl'):.2e} "
      f"| {100 * mean('mismatch/beyond_tis_frac'):.3f}% | "
      f"{100 * ev[0]['eval/greedy_accuracy']:.1f}% → "
      f"{100 * ev[-1]['eval/greedy_accuracy']:.1f}% | "
      f"{100 * ev[-1]['eval/pass@8']:.1f}% | {mean('time/step_s'):.2f} |"
    )
    axes[0].plot([d["step"] for d in rl], [d["reward/mean"] for d in rl], label=label)
    axes[1].plot(
      [d["step"] for d in ev], [d["eval/greedy_accuracy"] for d in ev], "o-", label=label
    )
    axes[2].semilogy(
      [d["step"] for d in rl], [max(d["mismatch/abs_logprob"], 1e-9) for d in rl], label=label
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
  fig.savefig(os.path.join(args.out, "precision_curves.png"), dpi=90)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
