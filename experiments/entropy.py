"""Entropy collapse: which fix keeps the policy's entropy, and does it pay in accuracy or pass@k?

DAPO (arXiv 2503.14476) raises the upper clip bound (0.2 -> 0.28) so low-probability tokens can
grow; the entropy-mechanism paper (arXiv 2505.22617) detaches (Clip-Cov) or penalises (KL-Cov)
the few tokens whose log-prob / advantage covariance drives entropy down; STAPO (arXiv
2602.15620) masks spurious low-probability, low-entropy tokens; SAPO (arXiv 2511.20347) replaces
the hard clip by a soft gate; an entropy bonus pushes entropy up directly. Every arm trains from
the scratchpad warm start under the setup of experiments/arms.py (off-policy: eight optimiser
steps per rollout), and the report shows first that the objectives really differ (clip, mask
and ratio statistics), then the entropy curve, held-out greedy accuracy, avg@32 and pass@k.

  python experiments/entropy.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/entropy.py --smoke                 # seconds, the local config

Writes OUT/entropy.md, OUT/entropy_curve.png and OUT/entropy_outcomes.png (OUT: --out).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)
import study  # noqa: E402

ARMS = ("grpo", "clip_higher", "stapo", "sapo", "clip_cov", "kl_cov", "entropy_bonus")
SMOKE_ARMS = ("clip_cov",)
# Each arm's own mechanism, as its objective logs it: (label, metric, scale).
MECHANISMS = {
  "stapo": ("spurious tokens masked %", "objective/stapo_masked_frac", 100),
  "sapo": ("mean soft-gate weight", "objective/gate_weight_mean", 1),
  "clip_cov": ("tokens detached %", "objective/cov_selected_frac", 100),
  "kl_cov": ("tokens KL-penalised %", "objective/cov_selected_frac", 100),
  "entropy_bonus": ("entropy term", "objective/entropy_mean", 1),
}


def mechanism_table(out: str, names, records) -> str:
  """Per arm with a mechanism of its own: the per-step mean and the largest step's value."""
  lines = ["| arm | statistic | per-step mean | largest step |", "|---|---|---|---|"]
  for arm in names:
    if arm not in MECHANISMS:
      continue
    label, key, scale = MECHANISMS[arm]
    steps = [
      scale * h[key] for r in records if r["arm"] == arm for h in arms.history(out, r) if key in h
    ]
    if steps:
      lines.append(f"| {arm} | {label} | {sum(steps) / len(steps):.4g} | {max(steps):.4g} |")
  return "\n".join(lines)


def report(args, names, records) -> None:
  n = records[0]["examples"]["n"]  # samples per held-out problem: 32 (4 in the smoke run)
  columns = {
    **arms.outcome_columns(records),
    f"pass@{n} %": (lambda r: 100 * study.pass_at_k(r["examples"], n), 1),
    "entropy, first 5 steps": (arms.steps_mean(args.out, "entropy/mean", "first"), 3),
    "entropy, last 5 steps": (arms.steps_mean(args.out, "entropy/mean"), 3),
  }
  text = (
    f"Entropy collapse, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval):\n\n"
    + arms.markdown_table(records, names, columns)
    + "\n\nHow far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
    + "\n\nEach arm's own mechanism, over every step of every seed:\n\n"
    + mechanism_table(args.out, names, records)
    + "\n"
  )
  arms.write_report(args, "entropy", text)
  arms.curve_plot(
    args.out,
    records,
    names,
    "entropy/mean",
    os.path.join(args.out, "entropy_curve.png"),
    ylabel="mean token entropy (nats)",
    title="policy entropy during RL (mean over seeds)",
  )
  arms.errorbar_plot(
    records,
    names,
    {
      "greedy": lambda r: 100 * r["greedy_accuracy"],
      f"avg@{n}": lambda r: 100 * study.pass_at_k(r["examples"], 1),
      f"pass@{n}": lambda r: 100 * study.pass_at_k(r["examples"], n),
    },
    os.path.join(args.out, "entropy_outcomes.png"),
    ylabel="held-out %",
    title="entropy study: held-out accuracy (mean, 95% CI)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
