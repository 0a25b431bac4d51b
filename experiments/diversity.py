"""Diversity: does ProGRPO keep more solutions alive than GRPO, as pass@k for large k shows?

ProGRPO (arXiv 2602.05281) reweights advantages by the policy's own confidence so that
over-confident correct paths stop absorbing the update, and reports +5.7% pass@1 and +13.9%
pass@32 over GRPO on Qwen2.5-7B. Here both arms train from the scratchpad warm start under the
setup of experiments/arms.py (every problem has two to six valid scratchpads, so a policy can
keep several or collapse to one), and each held-out problem gets 32 samples: pass@k for
k = 1 ... 32 from the unbiased estimator, plus the entropy at the end of training. A third arm
reads ProGRPO's prompt confidence c(q) as the group's mean answer confidence: on a task whose
prompts are random digits the prompt tokens' own confidence sits far below any answer's, which
shifts every advantage down (the report's adv_mean column shows by how much).

  python experiments/diversity.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/diversity.py --smoke                 # seconds, the local config

Writes OUT/diversity.md and OUT/diversity.png (pass@k against k; OUT: --out).
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)
import study  # noqa: E402

ARMS = ("grpo", "progrpo", "progrpo_group_confidence")
SMOKE_ARMS = ("progrpo",)


def report(args, names, records) -> None:
  warm = arms.warm_start_outcomes(args)
  n = records[0]["examples"]["n"]
  ks = [2**i for i in range(int(math.log2(n)) + 1)]
  columns = {f"pass@{k} %": (lambda r, k=k: 100 * study.pass_at_k(r["examples"], k), 1) for k in ks}
  columns["greedy %"] = (lambda r: 100 * r["greedy_accuracy"], 1)
  columns["entropy, last 5 steps"] = (arms.steps_mean(args.out, "entropy/mean"), 3)
  columns["adv_mean"] = (lambda r: arms.run_mean(args.out, r, "objective/adv_mean"), 3)
  columns["wall s"] = (lambda r: r["wall_s"], 0)
  columns["generated tokens (k)"] = (lambda r: r["generated_tokens"] / 1000, 0)
  warm_row = " | ".join(f"{100 * study.pass_at_k(warm, k):.1f}" for k in ks)
  text = (
    f"Diversity, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval):\n\n"
    + arms.markdown_table(records, names, columns)
    + f"\n\nThe warm start: pass@1..{n} = {warm_row}, greedy "
    + f"{100 * warm['metrics']['greedy_accuracy']:.1f}%.\n\n"
    + "How far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
    + "\n"
  )
  arms.write_report(args, "diversity", text)
  ax = arms.axes()
  ax.plot(ks, [100 * study.pass_at_k(warm, k) for k in ks], "k--", label="warm start")
  for arm in names:
    per_k = [
      arms.cells(records, [arm], lambda r, k=k: 100 * study.pass_at_k(r["examples"], k)) for k in ks
    ]
    ys = [c[arm][0] for c in per_k]
    es = [0.0 if c[arm][1] != c[arm][1] else c[arm][1] for c in per_k]
    ax.errorbar(ks, ys, yerr=es, marker="o", capsize=3, label=arm)
  ax.set_xscale("log", base=2)
  arms.save(
    ax,
    os.path.join(args.out, "diversity.png"),
    xlabel="k (samples per problem)",
    ylabel="held-out pass@k (%)",
    title="pass@k after RL (mean, 95% CI over seeds)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
