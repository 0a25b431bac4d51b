"""Exploration: branching from failures, learned temperatures and quantisation noise.

Three comparisons, every arm from the scratchpad warm start under experiments/arms.py's setup:
- DEEP-GRPO (arXiv 2602.14169) branches failed chains at pivots chosen by a learned success
  model, spending extra generation where it helps most, against GRPO at equal generated tokens:
  the accuracy of each step's fresh root samples (on-policy, on unseen training prompts)
  against the tokens spent so far, read at the budget GRPO's whole run used;
- IntroLLM (arXiv 2602.13035) learns a per-token sampling temperature in [0.5, 1.5], against
  GRPO at fixed temperatures 0.7, 1.0 and 1.3;
- QeRL (arXiv 2510.11696) claims the noise of NVFP4 quantisation plus its adaptive noise (AQN)
  raise entropy and exploration: NVFP4 + rank-16 LoRA with AQN against the same without noise.

Held-out evaluation samples at temperature 1 for every arm.

  python experiments/exploration.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/exploration.py --smoke                 # seconds, the local config

Writes OUT/exploration.md, OUT/exploration_tokens.png (DEEP-GRPO vs GRPO against tokens) and
OUT/exploration_entropy.png (OUT: --out).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)

ARMS = (
  "grpo",
  "deep_grpo",
  "temperature_0_7",
  "temperature_1_3",
  "introllm",
  "qerl_no_noise",
  "qerl_aqn",
)
SMOKE_ARMS = ("deep_grpo",)
# Steps averaged when reading a training-accuracy curve at a point.
WINDOW = 10


def token_curve(out: str, record: dict) -> tuple[list[float], list[float]]:
  """Cumulative generated tokens and the root samples' accuracy, per RL step."""
  tokens, acc, total = [], [], 0.0
  for h in arms.history(out, record):
    total += h["rollout/generated_tokens"]
    tokens.append(total)
    acc.append(h["reward/accuracy"])
  return tokens, acc


def accuracy_at(out: str, record: dict, budget: float):
  """The root samples' accuracy over the WINDOW steps that end where `budget` tokens are spent:
  at the run's end if it spent within 3% of the budget (answers vary in length), None if it
  spent less than that."""
  tokens, acc = token_curve(out, record)
  if not tokens or tokens[-1] < 0.97 * budget:
    return None
  end = next(i for i, t in enumerate(tokens) if t >= min(budget, tokens[-1]))
  window = acc[max(0, end - WINDOW + 1) : end + 1]
  return 100 * sum(window) / len(window)


def report(args, names, records) -> None:
  budgets = [r["generated_tokens"] for r in records if r["arm"] == "grpo"]
  budget = min(budgets) if budgets else None
  n = records[0]["examples"]["n"]
  columns = {
    **arms.outcome_columns(records),
    "entropy, last 5 steps": (arms.steps_mean(args.out, "entropy/mean"), 3),
  }
  # The rollout's own sampler against the trainer: AQN's noise shows here, by design.
  columns["sampler-trainer abs Δlog p"] = (
    lambda r: arms.run_mean(args.out, r, "mismatch/abs_logprob"),
    "e",
  )
  if budget:
    columns["train acc. at GRPO's tokens %"] = (lambda r: accuracy_at(args.out, r, budget), 1)
  text = (
    f"Exploration, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval; held-out "
    + f"samples at temperature 1, avg@{n} over {n} each"
    + (f"; GRPO's token budget {budget / 1e3:.0f}k" if budget else "")
    + "):\n\n"
    + arms.markdown_table(records, names, columns)
    + "\n\nHow far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
    + "\n"
  )
  arms.write_report(args, "exploration", text)
  arms.curve_plot(
    args.out,
    records,
    names,
    "entropy/mean",
    os.path.join(args.out, "exploration_entropy.png"),
    ylabel="mean token entropy (nats)",
    title="policy entropy during RL (mean over seeds)",
  )
  ax = arms.axes()
  for arm in [a for a in ("grpo", "deep_grpo") if a in names]:
    for i, r in enumerate(r for r in records if r["arm"] == arm):
      tokens, acc = token_curve(args.out, r)
      smooth = [
        sum(acc[max(0, j - WINDOW + 1) : j + 1]) / len(acc[max(0, j - WINDOW + 1) : j + 1])
        for j in range(len(acc))
      ]
      color = "C0" if arm == "grpo" else "C1"
      ax.plot(
        [t / 1e6 for t in tokens],
        [100 * a for a in smooth],
        color=color,
        alpha=0.7,
        label=arm if i == 0 else None,
      )
  if budget:
    ax.axvline(budget / 1e6, color="k", ls="--", lw=1, label="GRPO's budget")
  arms.save(
    ax,
    os.path.join(args.out, "exploration_tokens.png"),
    xlabel="generated tokens (millions)",
    ylabel=f"root samples' accuracy, {WINDOW}-step mean (%)",
    title="DEEP-GRPO vs GRPO at equal generation (one line per seed)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
