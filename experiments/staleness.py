"""Held-out accuracy against rollout staleness: the small-scale counterpart of VESPO's table.

VESPO (arXiv 2602.10693) trains with rollouts k updates old and reports GRPO falling from 57 to
44.7 and SAPO collapsing (52 -> 18.4) between staleness 16 and 64 while VESPO holds (58 -> 58.5).
Here every arm starts from the same warm-started policy, reads the same prompts in the same order
and trains `--steps` RL steps with the `stale(k)` pipeline (grpojax/rl/pipeline.py: step t trains
on the rollout sampled by the policy after update t - k, reproducibly); seeds vary the sampling.
Two optimiser steps per rollout (`train.minibatches=2`), so the ratio to the pre-update policy
is not identically 1 and the clipped / gated surrogates differ from the plain policy gradient.

Arms (the correction each one has against the behaviour policy):
  grpo      GRPO (PPO clip), no correction (`rollout.pipeline.correction="none"`)
  grpo_tis  GRPO with token TIS, cap 2 (`objective.correction.name="tis"`)
  sapo      SAPO's soft gate, no correction
  vespo     VESPO's kernel with the sampler ratio folded in (`include_sampler_ratio=True`)
  vcpo      VCPO: sequence IS truncated at 8 and the ESS learning-rate scale
  oapl      OAPL: regression against the lagged (sampling) policy

  python experiments/staleness.py --warm_start=WORKDIR/policy   # the main job's exported policy
  python experiments/staleness.py --smoke                       # seconds, on the local config

Results are appended to OUT/results.jsonl as each arm finishes (a rerun skips finished arms),
then OUT/staleness.md (mean and 95% t-interval over seeds) and OUT/staleness.png are written.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ARMS = ("grpo", "grpo_tis", "sapo", "vespo", "vcpo", "oapl")
# Two-sided 95% Student-t quantiles by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def arm_config(base, arm: str, staleness: int, seed: int):
  """The run config of one arm at one staleness and seed."""
  from grpojax import objectives

  c = base.copy_and_resolve_references()
  c.unlock()
  c.seed = seed
  recipe = {"grpo_tis": "grpo"}.get(arm, arm)
  c.objective = objectives.default_config(recipe)
  if arm == "grpo_tis":
    c.objective.correction.name = "tis"
  if arm == "vespo":
    c.objective.include_sampler_ratio = True
  c.rollout.pipeline.mode = "stale"
  c.rollout.pipeline.staleness = staleness
  c.rollout.pipeline.correction = "none"  # each arm has exactly the correction listed above
  c.lock()
  return c


def base_config(args):
  from configs import default

  c = default.get_config("local" if args.smoke else None)
  c.unlock()
  if args.warm_start:
    c.model.checkpoint = args.warm_start
    c.warm_start.steps = 0
  c.train.steps = args.steps
  c.train.minibatches = 2
  c.rollout.prompts_per_step = max(c.rollout.prompts_per_step, 2)
  c.train.microbatch_rows = min(
    c.train.microbatch_rows, c.rollout.prompts_per_step * c.rollout.samples_per_prompt // 2
  )
  c.eval.every = 10**6  # evaluated once, at the end
  c.checkpoint.every = 10**6
  c.metrics.writers = ("jsonl",)
  c.log_every = max(1, args.steps // 4)
  return c


def run_arm(config, workdir: str) -> dict:
  from grpojax import train

  t0 = time.perf_counter()
  final = train.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t0
  tokens = 0.0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if "rollout/staleness" in r]
  tokens = sum(r["response/length"] for r in rl)  # mean length per step
  per_step_rows = config.rollout.prompts_per_step * config.rollout.samples_per_prompt
  return {
    "greedy_accuracy": final["greedy_accuracy"],
    f"pass@{config.eval.pass_k}": final[f"pass@{config.eval.pass_k}"],
    "wall_s": wall,
    # response/length is logged every log_every steps: the mean over those, times every step.
    "generated_tokens": tokens / max(len(rl), 1) * per_step_rows * config.train.steps,
    "mismatch_k3_last": rl[-1].get("mismatch/k3_kl", float("nan")) if rl else float("nan"),
  }


def interval(values: list[float]) -> tuple[float, float]:
  """Mean and the half-width of its 95% t-interval (nan for one value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, float("nan")
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, _T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def summarize(results: list[dict], arms, stalenesses, metric: str) -> str:
  header = "| arm | " + " | ".join(f"staleness {k}" for k in stalenesses) + " |"
  lines = [header, "|---|" + "---|" * len(stalenesses)]
  for arm in arms:
    cells = []
    for k in stalenesses:
      vals = [100 * r[metric] for r in results if r["arm"] == arm and r["staleness"] == k]
      if not vals:
        cells.append("")
        continue
      mean, half = interval(vals)
      cells.append(
        f"{mean:.1f}" + ("" if math.isnan(half) else f" ± {half:.1f}") + f" (n={len(vals)})"
      )
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(results, arms, stalenesses, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for arm in arms:
    xs, ys, es = [], [], []
    for k in stalenesses:
      vals = [
        100 * r["greedy_accuracy"] for r in results if r["arm"] == arm and r["staleness"] == k
      ]
      if vals:
        mean, half = interval(vals)
        xs.append(k), ys.append(mean), es.append(0 if math.isnan(half) else half)
    if xs:
      ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm)
  ax.set_xlabel("staleness k (updates behind)")
  ax.set_ylabel("held-out greedy accuracy (%)")
  ax.set_title("accuracy vs rollout staleness (mean, 95% CI over seeds)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--warm_start", default="", help="an exported policy directory")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--staleness", default="0,4,16")
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "staleness"))
  parser.add_argument("--smoke", action="store_true", help="local config, 2 steps, 2 arms")
  args = parser.parse_args(argv)
  if args.smoke:
    args.steps, args.seeds, args.staleness, args.arms = 3, "0", "0,2", "grpo,oapl"
    args.out = tempfile.mkdtemp(prefix="staleness_smoke_")
  arms = [a for a in args.arms.split(",") if a]
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    parser.error(f"--arms: unknown {unknown}; choose from {ARMS}")
  seeds = [int(s) for s in args.seeds.split(",")]
  stalenesses = [int(k) for k in args.staleness.split(",")]
  os.makedirs(args.out, exist_ok=True)
  results_path = os.path.join(args.out, "results.jsonl")
  results = []
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = [json.loads(line) for line in f]
  base = base_config(args)
  for seed in seeds:
    for k in stalenesses:
      for arm in arms:
        if any(r["arm"] == arm and r["staleness"] == k and r["seed"] == seed for r in results):
          continue
        workdir = tempfile.mkdtemp(prefix=f"staleness_{arm}_k{k}_s{seed}_")
        out = run_arm(arm_config(base, arm, k, seed), workdir)
        # Keep each run's metric history; drop its checkpoints and exported policy.
        runs = os.path.join(args.out, "runs")
        os.makedirs(runs, exist_ok=True)
        shutil.copy(
          os.path.join(workdir, "metrics.jsonl"), os.path.join(runs, f"{arm}_k{k}_s{seed}.jsonl")
        )
        shutil.rmtree(workdir, ignore_errors=True)
        record = {"arm": arm, "staleness": k, "seed": seed, "steps": args.steps, **out}
        results.append(record)
        with open(results_path, "a") as f:
          f.write(json.dumps(record) + "\n")
        print(
          f"RESULT {arm} staleness={k} seed={seed}: greedy "
          f"{100 * out['greedy_accuracy']:.1f}%, wall {out['wall_s']:.0f} s",
          flush=True,
        )
  pass_key = next(k for k in results[0] if k.startswith("pass@"))
  table = summarize(results, arms, stalenesses, "greedy_accuracy")
  pass_table = summarize(results, arms, stalenesses, pass_key)
  with open(os.path.join(args.out, "staleness.md"), "w") as f:
    f.write(f"Held-out greedy accuracy (%), {args.steps} RL steps:\n\n{table}\n\n")
    f.write(f"{pass_key} (%):\n\n{pass_table}\n")
  plot(results, arms, stalenesses, os.path.join(args.out, "staleness.png"))
  print(table)
  print(f"wrote {os.path.join(args.out, 'staleness.md')} and staleness.png", flush=True)


if __name__ == "__main__":
  main()
