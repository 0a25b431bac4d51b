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
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  (experiments/study.py, next to this script)

ARMS = ("grpo", "grpo_tis", "sapo", "vespo", "vcpo", "oapl")


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
  points = [
    {"arm": arm, "staleness": k, "seed": seed}
    for seed in seeds
    for k in stalenesses
    for arm in arms
  ]
  base = base_config(args)
  results = study.run_grid(
    args.out,
    points,
    lambda p: arm_config(base, p["arm"], p["staleness"], p["seed"]),
    rl_marker="rollout/staleness",
  )
  results = [r for r in results if r["arm"] in arms and r["staleness"] in stalenesses]
  pass_key = next(k for k in results[0] if k.startswith("pass@"))
  label = lambda k: f"staleness {k}"
  acc = study.table(results, arms, stalenesses, "staleness", "greedy_accuracy", label)
  passes = study.table(results, arms, stalenesses, "staleness", pass_key, label)
  with open(os.path.join(args.out, "staleness.md"), "w") as f:
    f.write(f"Held-out greedy accuracy (%), {args.steps} RL steps:\n\n{acc}\n\n")
    f.write(f"{pass_key} (%):\n\n{passes}\n")
  study.plot(
    results,
    arms,
    stalenesses,
    "staleness",
    "greedy_accuracy",
    os.path.join(args.out, "staleness.png"),
    xlabel="staleness k (updates behind)",
    title="accuracy vs rollout staleness (mean, 95% CI over seeds)",
  )
  print(acc)
  print(f"wrote {os.path.join(args.out, 'staleness.md')} and staleness.png", flush=True)


if __name__ == "__main__":
  main()
