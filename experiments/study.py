"""What the small-scale studies share: run a grid of arms x settings x seeds resumably, summarise
each cell as a mean with a 95% t-interval, and plot.

A study appends one JSON record per finished run to OUT/results.jsonl (a rerun skips the runs
already there), keeps each run's metric history under OUT/runs/, and deletes the run's
checkpoints and exported policy.
"""

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable

# Two-sided 95% Student-t quantiles by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def interval(values: list[float]) -> tuple[float, float]:
  """Mean and the half-width of its 95% t-interval (nan for one value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, float("nan")
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, _T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def run_once(config, workdir: str, *, rl_marker: str = "reward/mean") -> dict:
  """Trains `config` in `workdir`; the final held-out metrics, wall time and generated tokens."""
  from grpojax import train

  t0 = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rl = [r for r in map(json.loads, f) if rl_marker in r]
  per_step_rows = config.rollout.prompts_per_step * config.rollout.samples_per_prompt
  mean_length = sum(r["response/length"] for r in rl) / max(len(rl), 1)
  k = config.eval.pass_k
  return {
    "greedy_accuracy": final["greedy_accuracy"],
    f"pass@{k}": final[f"pass@{k}"],
    "final": final,
    "wall_s": wall,
    "generated_tokens": _generated_tokens(rl, mean_length * per_step_rows, config.train.steps),
    "last": rl[-1] if rl else {},
    "examples": example_outcomes(os.path.join(workdir, "eval", "examples.jsonl")),
  }


def _generated_tokens(rl_logs: list[dict], per_step_estimate: float, steps: int) -> float:
  """Every token the run sampled: the sum of `rollout/generated_tokens` when every RL step was
  logged, else the logged steps' mean times the steps (or the mean response length times the
  batch's rows, for histories from before the counter)."""
  counts = [r["rollout/generated_tokens"] for r in rl_logs if "rollout/generated_tokens" in r]
  if len(counts) == steps:
    return float(sum(counts))
  return (sum(counts) / len(counts) if counts else per_step_estimate) * steps


def example_outcomes(path: str) -> dict:
  """Per held-out example, from an evaluation's examples.jsonl: `correct` (how many of its n
  samples were right), `greedy` (0/1) and the mean token length of its `right` and `wrong`
  samples (None where it has none), enough for pass@k at every k <= n and accuracy by example."""
  with open(path) as f:
    records = [json.loads(line) for line in f]

  def mean_length(samples):
    return sum(s["length"] for s in samples) / len(samples) if samples else None

  return {
    "n": len(records[0]["samples"]),
    "correct": [sum(s["correct"] for s in r["samples"]) for r in records],
    "greedy": [int(r["greedy"]["correct"]) for r in records],
    "right_length": [mean_length([s for s in r["samples"] if s["correct"]]) for r in records],
    "wrong_length": [mean_length([s for s in r["samples"] if not s["correct"]]) for r in records],
  }


def pass_at_k(examples: dict, k: int) -> float:
  """Mean unbiased pass@k over the examples of an `example_outcomes` record."""
  from grpojax.rl import evaluation

  n = examples["n"]
  return sum(evaluation.pass_at_k(n, c, k) for c in examples["correct"]) / len(examples["correct"])


def load(out: str) -> list[dict]:
  path = os.path.join(out, "results.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def run_grid(
  out: str,
  points: list[dict],
  make_config: Callable[[dict], object],
  *,
  rl_marker: str = "reward/mean",
) -> list[dict]:
  """Runs every point (a dict of its coordinates: arm, seed, ...) not yet in OUT/results.jsonl.

  Returns:
    Every record, old and new: the point's coordinates plus `run_once`'s results.
  """
  os.makedirs(os.path.join(out, "runs"), exist_ok=True)
  results = load(out)
  for point in points:
    if any(all(r.get(k) == v for k, v in point.items()) for r in results):
      continue
    name = "_".join(f"{v}" for v in point.values())
    workdir = tempfile.mkdtemp(prefix=f"study_{name}_")
    record = {**point, **run_once(make_config(point), workdir, rl_marker=rl_marker)}
    shutil.copy(os.path.join(workdir, "metrics.jsonl"), os.path.join(out, "runs", f"{name}.jsonl"))
    shutil.rmtree(workdir, ignore_errors=True)
    results.append(record)
    with open(os.path.join(out, "results.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
    print(
      "RESULT "
      + " ".join(f"{k}={v}" for k, v in point.items())
      + f": greedy {100 * record['greedy_accuracy']:.1f}%, wall {record['wall_s']:.0f} s",
      flush=True,
    )
  return results


def table(results, arms, columns, column_key: str, metric: str, label=str) -> str:
  """A markdown table: one row per arm, one column per setting, cells `mean ± CI (n=...)`."""
  lines = [
    "| arm | " + " | ".join(label(c) for c in columns) + " |",
    "|---|" + "---|" * len(columns),
  ]
  for arm in arms:
    cells = []
    for col in columns:
      vals = [100 * r[metric] for r in results if r["arm"] == arm and r[column_key] == col]
      if not vals:
        cells.append("")
        continue
      mean, half = interval(vals)
      ci = "" if math.isnan(half) else f" ± {half:.1f}"
      cells.append(f"{mean:.1f}{ci} (n={len(vals)})")
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(results, arms, columns, column_key: str, metric: str, path: str, *, xlabel, title):
  """Mean and 95% interval of `metric` per arm against the setting (numeric or categorical)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  numeric = all(isinstance(c, (int, float)) for c in columns)
  for i, arm in enumerate(arms):
    xs, ys, es = [], [], []
    for j, col in enumerate(columns):
      vals = [100 * r[metric] for r in results if r["arm"] == arm and r[column_key] == col]
      if vals:
        mean, half = interval(vals)
        xs.append(col if numeric else j + 0.1 * (i - (len(arms) - 1) / 2))
        ys.append(mean)
        es.append(0.0 if math.isnan(half) else half)
    if xs:
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm, ls="-" if numeric else "")
  if not numeric:
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
  ax.set_xlabel(xlabel)
  ax.set_ylabel(f"held-out {metric.replace('_', ' ')} (%)")
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
