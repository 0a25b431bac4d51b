"""RL steps per second with the rollout pipeline in `sync` and in `async` mode, in one run.

`async` (grpojax/rl/pipeline.py) overlaps sampling with the update by running a producer thread
next to the trainer. On an accelerator the two compete for one chip (or run on separate ones);
on a CPU they compete for the same cores, so little gain is expected where XLA already keeps
every core busy. Each mode trains the same config for `--steps` RL steps from the same policy;
the first `--skip` steps (compilation, the producer's start) are left out of the rate.

  python experiments/bench_pipeline.py --warm_start=WORKDIR/policy   # the main job's policy
  python experiments/bench_pipeline.py --smoke
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODES = (("sync", {}), ("async", {"max_staleness": 1, "on_stale": "wait"}))


def steps_per_second(config, skip: int) -> tuple[float, dict[int, int], float]:
  """Trains `config`; (RL steps per second after `skip` steps, staleness counts, final acc)."""
  from grpojax import train

  workdir = tempfile.mkdtemp(prefix="bench_pipeline_")
  try:
    final = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rl = [r for r in map(json.loads, f) if "rollout/staleness" in r]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  timed = rl[skip:]
  hist: dict[int, int] = {}
  for r in rl:
    hist[int(r["rollout/staleness"])] = hist.get(int(r["rollout/staleness"]), 0) + 1
  return len(timed) / sum(r["time/step_s"] for r in timed), hist, final["greedy_accuracy"]


def main(argv=None):
  from configs import default

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--warm_start", default="", help="an exported policy directory")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--skip", type=int, default=5)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args(argv)
  if args.smoke:
    args.steps, args.skip = 4, 1
  rates = {}
  for mode, fields in MODES:
    c = default.get_config("local" if args.smoke else None)
    c.unlock()
    if args.warm_start:
      c.model.checkpoint, c.warm_start.steps = args.warm_start, 0
    c.train.steps = args.steps
    c.log_every = 1
    c.eval.every = c.checkpoint.every = 10**6
    c.metrics.writers = ("jsonl",)
    c.rollout.pipeline.mode = mode
    c.rollout.pipeline.update(fields)
    rate, hist, acc = steps_per_second(c, args.skip)
    rates[mode] = rate
    settings = ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"
    staleness = dict(sorted(hist.items()))
    print(
      f"pipeline {mode:5s} ({settings}): {rate:.3f} RL steps/s, staleness {staleness}, "
      f"held-out greedy {100 * acc:.1f}%",
      flush=True,
    )
  print(f"ratio async/sync: {rates['async'] / rates['sync']:.2f}x", flush=True)


if __name__ == "__main__":
  main()
