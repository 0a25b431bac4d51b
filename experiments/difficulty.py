"""Difficulty and length bias: Dr. GRPO against GRPO, by problem difficulty and response length.

Dr. GRPO (arXiv 2503.20783) drops GRPO's two normalisers: the group std, which weighs problems
by how decided their group is (a difficulty bias), and the per-response 1/|o|, which shrinks the
penalty per token of a long wrong answer (a length bias that lets wrong answers grow). Here both
arms train from the scratchpad warm start under the setup of experiments/arms.py; the scratchpad
lengths vary with the order of the steps and with the sizes of the intermediate results. A
problem's difficulty is the warm-started policy's own avg@32 on it (0/32 unsolved ... 32/32
solved); the report gives each arm's avg@32 per difficulty band, the response length over
training and the final lengths of right and wrong samples.

  python experiments/difficulty.py --warm_start=W/policy   # W: configs/scratchpad.py, 0 RL steps
  python experiments/difficulty.py --smoke                 # seconds, the local config

Writes OUT/difficulty.md, OUT/difficulty.png (avg@32 by band) and OUT/difficulty_length.png.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import arms  # noqa: E402  (experiments/arms.py, next to this script)
import study  # noqa: E402

ARMS = ("grpo", "dr_grpo")
SMOKE_ARMS = ("dr_grpo",)


def bands(n: int) -> dict[str, tuple[int, int]]:
  """Difficulty bands by the warm start's correct samples out of n (inclusive bounds)."""
  third = max(n // 3, 1)
  return {
    f"unsolved (0/{n})": (0, 0),
    f"hard (1-{third}/{n})": (1, third),
    f"medium ({third + 1}-{2 * third}/{n})": (third + 1, 2 * third),
    f"easy ({2 * third + 1}-{n - 1}/{n})": (2 * third + 1, n - 1),
    f"solved ({n}/{n})": (n, n),
  }


def band_accuracy(warm: dict, lo: int, hi: int):
  """avg@n of a run on the problems whose warm-start count is in [lo, hi] (None if none are)."""
  chosen = [i for i, c in enumerate(warm["correct"]) if lo <= c <= hi]

  def value(record):
    if not chosen:
      return None
    ex = record["examples"]
    return 100 * sum(ex["correct"][i] for i in chosen) / (len(chosen) * ex["n"])

  return value


def sample_length(which: str):
  """The mean length of a run's right or wrong held-out samples (None if it has none)."""

  def value(record):
    ex = record["examples"]
    lengths = ex["right_length" if which == "right" else "wrong_length"]
    counts = ex["correct"] if which == "right" else [ex["n"] - c for c in ex["correct"]]
    total = sum(c for c, m in zip(counts, lengths, strict=True) if m is not None)
    if not total:
      return None
    return sum(c * m for c, m in zip(counts, lengths, strict=True) if m is not None) / total

  return value


def report(args, names, records) -> None:
  warm = arms.warm_start_outcomes(args)
  n = warm["n"]
  band_cols = {}
  sizes = []
  for label, (lo, hi) in bands(n).items():
    band_cols[label] = (band_accuracy(warm, lo, hi), 1)
    size = sum(lo <= c <= hi for c in warm["correct"])
    warm_acc = band_accuracy(warm, lo, hi)({"examples": warm})
    sizes.append(f"{label}: {size} problems" + (f", warm start {warm_acc:.1f}%" if size else ""))
  length_cols = {
    "greedy %": (lambda r: 100 * r["greedy_accuracy"], 1),
    f"avg@{n} %": (lambda r: 100 * study.pass_at_k(r["examples"], 1), 1),
    "right samples' length": (sample_length("right"), 2),
    "wrong samples' length": (sample_length("wrong"), 2),
    "train length, last 5 steps": (arms.steps_mean(args.out, "response/length"), 2),
    "wall s": (lambda r: r["wall_s"], 0),
    "generated tokens (k)": (lambda r: r["generated_tokens"] / 1000, 0),
  }
  warm_lengths = (
    f"right {sample_length('right')({'examples': warm}) or float('nan'):.2f}, "
    f"wrong {sample_length('wrong')({'examples': warm}) or float('nan'):.2f}"
  )
  text = (
    f"Difficulty bias, {args.steps} RL steps, seeds {args.seeds} (mean ± 95% interval).\n\n"
    + f"avg@{n} (%) by the warm start's difficulty band ("
    + "; ".join(sizes)
    + "):\n\n"
    + arms.markdown_table(records, names, band_cols)
    + f"\n\nLengths in tokens (the warm start's samples: {warm_lengths}):\n\n"
    + arms.markdown_table(records, names, length_cols)
    + "\n\nHow far each objective departs from the plain gradient (per-step means):\n\n"
    + arms.markdown_table(records, names, arms.divergence_columns(args.out))
    + "\n"
  )
  arms.write_report(args, "difficulty", text)
  arms.errorbar_plot(
    records,
    names,
    {label: fn for label, (fn, _) in band_cols.items()},
    os.path.join(args.out, "difficulty.png"),
    ylabel=f"held-out avg@{n} (%)",
    title="accuracy by the warm start's difficulty band",
  )
  arms.curve_plot(
    args.out,
    records,
    names,
    "response/length",
    os.path.join(args.out, "difficulty_length.png"),
    ylabel="mean sampled response length (tokens)",
    title="response length during RL (mean over seeds)",
  )


def main(argv=None):
  arms.main(__doc__, ARMS, SMOKE_ARMS, report, argv)


if __name__ == "__main__":
  main()
