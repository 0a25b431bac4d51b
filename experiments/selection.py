"""Sample selection: which prompts to spend generation on, measured as accuracy per token.

DAPO's dynamic sampling (arXiv 2503.14476) drops groups whose samples all agree and samples more
prompts until the batch is full of informative ones; Goldilocks (arXiv 2602.14868) trains a
teacher to predict each prompt's success and picks those near 50%; PACED-RL (arXiv 2602.12642)
reads that prediction off FlowRL's log-partition head for free. The baselines are uniform
sampling with the same objective: GRPO for dynamic sampling and Goldilocks, FlowRL for PACED-RL.
Every arm trains from the scratchpad warm start under the setup of experiments/arms.py for the
same number of steps; the report counts every token each arm sampled (a refill's discarded
groups included) and gives the held-out gain over the warm start per million generated tokens.

  python experiments/selection.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/selection.py --smoke                 # seconds, the local config

Writes OUT/selection.md and OUT/selection.png (avg@32 against generated tokens; OUT: --out).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)
import study  # noqa: E402

ARMS = ("grpo", "dynamic_sampling", "goldilocks", "flowrl", "paced_rl")
SMOKE_ARMS = ("dynamic_sampling",)


def report(args, names, records) -> None:
  warm = arms.warm_start_outcomes(args)
  n = warm["n"]
  warm_avg = 100 * study.pass_at_k(warm, 1)
  warm_greedy = 100 * warm["metrics"]["greedy_accuracy"]
  columns = {
    **arms.outcome_columns(records),
    f"avg@{n} gain per M tokens": (
      lambda r: (
        (100 * study.pass_at_k(r["examples"], 1) - warm_avg) / (r["generated_tokens"] / 1e6)
      ),
      1,
    ),
    "greedy gain per M tokens": (
      lambda r: (100 * r["greedy_accuracy"] - warm_greedy) / (r["generated_tokens"] / 1e6),
      1,
    ),
    "training-batch accuracy %": (lambda r: 100 * arms.run_mean(args.out, r, "reward/accuracy"), 1),
    "informative groups / step": (
      lambda r: arms.run_mean(args.out, r, "rollout/informative_groups"),
      1,
    ),
  }
  text = (
    f"Sample selection, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval; the "
    + f"warm start: greedy {warm_greedy:.1f}%, avg@{n} {warm_avg:.1f}%):\n\n"
    + arms.markdown_table(records, names, columns)
    + "\n"
  )
  arms.write_report(args, "selection", text)
  ax = arms.axes()
  for arm in names:
    rs = [r for r in records if r["arm"] == arm]
    xs = [r["generated_tokens"] / 1e6 for r in rs]
    ys = [100 * study.pass_at_k(r["examples"], 1) for r in rs]
    (line,) = ax.plot(xs, ys, "o", alpha=0.4)
    (mx, hx), (my, hy) = study.interval(xs), study.interval(ys)
    ax.errorbar(
      [mx],
      [my],
      xerr=[0 if hx != hx else hx],
      yerr=[0 if hy != hy else hy],
      marker="s",
      capsize=3,
      color=line.get_color(),
      label=arm,
    )
  ax.axhline(warm_avg, color="k", ls="--", lw=1, label="warm start")
  arms.save(
    ax,
    os.path.join(args.out, "selection.png"),
    xlabel="generated tokens (millions)",
    ylabel=f"held-out avg@{n} (%)",
    title="accuracy against generation spent (seeds and mean, 95% CI)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
