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


def entropy_at(out: str, which: str):
  """The mean token entropy over a run's first or last five logged RL steps."""

  def value(record):
    vals = [h["entropy/mean"] for h in arms.history(out, record) if "entropy/mean" in h]
    vals = vals[:5] if which == "first" else vals[-5:]
    return sum(vals) / len(vals) if vals else None

  return value


def report(args, names, records) -> None:
  n = records[0]["examples"]["n"]  # samples per held-out problem: 32 (4 in the smoke run)
  columns = {
    **arms.outcome_columns(records),
    f"pass@{n} %": (lambda r: 100 * study.pass_at_k(r["examples"], n), 1),
    "entropy, first 5 steps": (entropy_at(args.out, "first"), 3),
    "entropy, last 5 steps": (entropy_at(args.out, "last"), 3),
  }
  text = (
    f"Entropy collapse, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval):\n\n"
    + arms.markdown_table(records, names, columns)
    + "\n\nHow far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
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
  args = arms.parser(__doc__, ARMS, SMOKE_ARMS).parse_args(argv)
  names, records = arms.run(args)
  report(args, names, records)


if __name__ == "__main__":
  main()
