"""Learned critics against the group baseline: VAPO and FlowRL against GRPO.

VAPO (arXiv 2504.05118) brings back a value model (critic warm-up, decoupled and
length-adaptive GAE, clip-higher, NLL on correct samples) and reports AIME 2024 60.4 with
Qwen2.5-32B, over ten points above DAPO; FlowRL (arXiv 2509.15207) matches the reward
distribution with a learned log-partition head instead of maximising reward, and reports +10.0%
over GRPO on math. Every arm trains from the scratchpad warm start under experiments/arms.py's
setup; the report adds each critic's own health: VAPO's value loss and explained variance (of
the returns by the values the advantages were computed from), FlowRL's log Z. A fourth arm
fixes VAPO's λ_policy at 0.95: its length-adaptive 1 − 1/(αl) with α = 0.05 is 0.17 for this
task's ~24-token solutions, so the advantages lean almost entirely on the critic.

  python experiments/critic.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/critic.py --smoke                 # seconds, the local config

Writes OUT/critic.md and OUT/critic.png (OUT: --out).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)
import study  # noqa: E402

ARMS = ("grpo", "vapo", "vapo_fixed_lambda", "flowrl")
SMOKE_ARMS = ("vapo",)
CRITIC_KEYS = {
  "value loss": "objective/value_loss",
  "explained variance": "value/explained_variance",
  "log Z": "objective/log_z_mean",
}


def report(args, names, records) -> None:
  warm = arms.warm_start_outcomes(args)
  n = warm["n"]
  columns = {
    **arms.outcome_columns(records),
    **{
      f"{label}, last 10 steps": (arms.steps_mean(args.out, key, count=10), 3)
      for label, key in CRITIC_KEYS.items()
    },
  }
  text = (
    f"Critics, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval; the warm start: "
    + f"greedy {100 * warm['metrics']['greedy_accuracy']:.1f}%, avg@{n} "
    + f"{100 * study.pass_at_k(warm, 1):.1f}%):\n\n"
    + arms.markdown_table(records, names, columns)
    + "\n\nHow far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
    + "\n"
  )
  arms.write_report(args, "critic", text)
  arms.errorbar_plot(
    records,
    names,
    {
      "greedy": lambda r: 100 * r["greedy_accuracy"],
      f"avg@{n}": lambda r: 100 * study.pass_at_k(r["examples"], 1),
      f"pass@{min(8, n)}": lambda r: 100 * study.pass_at_k(r["examples"], min(8, n)),
    },
    os.path.join(args.out, "critic.png"),
    ylabel="held-out %",
    title="critic study: held-out accuracy (mean, 95% CI)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
