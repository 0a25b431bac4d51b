"""SeeUPO against trajectory-level GRPO on the multi-turn tasks, from one warm start per task.

SeeUPO (arXiv 2602.06554) updates a multi-turn agent turn by turn in reverse order, each turn's
advantage scaled by the accumulated ratio of the turns already updated, and reports 43-55%
relative gains over its backbone algorithms on AppWorld and BFCL (Qwen3-14B). Here both arms
start from the same warm-started policy of each built-in multi-turn task
(grpojax/tasks/environments.py: `calculator`, a tool call then the answer; `guess`, bisection with
higher/lower replies), read the same prompts in the same order, and train `--steps` RL steps on
whole episodes (token in, token out); seeds vary the sampling. GRPO takes one optimiser step per
rollout on every policy token; SeeUPO one per turn (the authors' schedule).

  python experiments/multiturn.py                 # both tasks, 3 seeds
  python experiments/multiturn.py --tasks=calculator --seeds=0,1,2 --steps=60
  python experiments/multiturn.py --smoke         # seconds, on the local configs

The warm starts are made first (OUT/warm_<task>/policy, reused when present); results go to
OUT/results.jsonl (resumable), OUT/multiturn.md and OUT/multiturn.png.
"""

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  (experiments/study.py, next to this script)

ARMS = ("grpo", "seeupo")
TASKS = ("calculator", "guess")


def task_config(task: str, smoke: bool):
  from configs import calculator, guess

  module = {"calculator": calculator, "guess": guess}[task]
  c = module.get_config("local" if smoke else None)
  c.unlock()
  return c


def warm_start(task: str, out: str, smoke: bool) -> str:
  """The task's warm-started policy (trained once, then reused)."""
  from grpojax import train

  workdir = os.path.join(out, f"warm_{task}")
  policy = os.path.join(workdir, "policy")
  if not os.path.exists(os.path.join(policy, "config.json")):
    c = task_config(task, smoke)
    c.train.steps = 0
    c.metrics.writers = ("jsonl",)
    train.train_and_evaluate(c, workdir)
  return policy


def arm_config(task: str, arm: str, seed: int, *, policy: str, steps: int, smoke: bool):
  from grpojax import objectives

  c = task_config(task, smoke)
  c.seed = seed
  c.model.checkpoint = policy
  c.warm_start.steps = 0
  c.train.steps = steps
  if arm == "seeupo":
    c.objective = objectives.default_config("seeupo")
    c.train.epochs, c.train.minibatches = 1, 1
  c.eval.every = 10**6  # evaluated at the start and the end
  c.checkpoint.every = 10**6
  c.metrics.writers = ("jsonl",)
  c.log_every = max(1, steps // 4)
  c.lock()
  return c


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "multiturn"))
  parser.add_argument("--smoke", action="store_true", help="local configs, 2 steps, one seed")
  args = parser.parse_args(argv)
  if args.smoke:
    args.steps, args.seeds, args.tasks = 2, "0", "calculator"
    args.out = tempfile.mkdtemp(prefix="multiturn_smoke_")
  tasks = [t for t in args.tasks.split(",") if t]
  if set(tasks) - set(TASKS):
    parser.error(f"--tasks: unknown {sorted(set(tasks) - set(TASKS))}; choose from {TASKS}")
  seeds = [int(s) for s in args.seeds.split(",")]
  policies = {task: warm_start(task, args.out, args.smoke) for task in tasks}
  points = [
    {"arm": arm, "task": task, "seed": seed} for seed in seeds for task in tasks for arm in ARMS
  ]
  results = study.run_grid(
    args.out,
    points,
    lambda p: arm_config(
      p["task"], p["arm"], p["seed"], policy=policies[p["task"]], steps=args.steps,
      smoke=args.smoke,
    ),
  )  # fmt: skip
  results = [r for r in results if r["task"] in tasks]
  pass_key = next(k for k in results[0] if k.startswith("pass@"))
  avg_key = next(k for k in results[0]["final"] if k.startswith("avg@"))
  for r in results:  # sampled accuracy: greedy saturates first on these tasks
    r[avg_key] = r["final"][avg_key]
  acc = study.table(results, ARMS, tasks, "task", "greedy_accuracy")
  with open(os.path.join(args.out, "multiturn.md"), "w") as f:
    f.write(f"Held-out greedy accuracy (%), {args.steps} RL steps:\n\n{acc}\n\n")
    for key in (avg_key, pass_key):
      f.write(f"{key} (%):\n\n{study.table(results, ARMS, tasks, 'task', key)}\n\n")
  study.plot(
    results,
    list(ARMS),
    tasks,
    "task",
    avg_key,
    os.path.join(args.out, "multiturn.png"),
    xlabel="task",
    title="SeeUPO vs trajectory GRPO (mean, 95% CI over seeds)",
  )
  print(acc)
  print(f"wrote {os.path.join(args.out, 'multiturn.md')} and multiturn.png", flush=True)


if __name__ == "__main__":
  main()
