"""The arms of the scratchpad studies and the setup they share.

Every study that compares methods on the scratchpad task (`entropy.py`, `diversity.py`,
`difficulty.py`, `selection.py`, `exploration.py`, `critic.py`) takes its arms from `ARMS`, so an
arm is the same run in every study, and one run serves every study that includes it: they all
write to one OUT (default `experiments/scratchpad/`) whose `results.jsonl` is keyed by arm and
seed, and a study whose arms have run already only summarises.

The setup (`base_config`), identical for every arm:
- the scratchpad task (`configs/scratchpad.py`: three operations on one-digit numbers, a written
  scratchpad of 19-31 tokens, two to six valid orders for most problems);
- its warm-started policy: configs/scratchpad.py's 600 supervised steps, made once with
  `python -m grpojax.main --config=configs/scratchpad.py --workdir=W --config.train.steps=0`
  and passed as `--warm_start=W/policy` (held-out greedy 31.2%, pass@8 49.2%);
- `--steps` RL steps of 16 prompts x 8 samples, read in the same order by every arm but the
  curricula (choosing prompts is their method); seeds vary the sampling;
- each rollout trained for two epochs of four minibatches, eight optimiser steps, so the policy
  moves away from the one that sampled it and trust regions, clipping and masking act (GRPO,
  per-step means over 3 seeds: 0.31% of tokens clipped low and 0.08% high, ratios from 0.51 to
  1.85, approximate KL 1.4e-3); with one optimiser step per rollout the ratio is exactly 1 and
  most surrogates coincide;
- the final evaluation on 256 held-out problems, greedy plus 32 samples at temperature 1 each
  (pass@k for every k <= 32 from the per-example counts, `study.example_outcomes`).

Method settings are each paper's defaults as `grpojax.objectives.default_config` and the method's
config file have them, except where an arm's docstring line says what was scaled to this task and
why; no arm was tuned.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  (experiments/study.py, next to this script)

OUT = os.path.join(REPO, "experiments", "scratchpad")
# Metrics whose per-step mean shows whether an arm's objective differs from the plain gradient.
DIVERGENCE_KEYS = (
  "objective/clip_frac_low",
  "objective/clip_frac_high",
  "objective/masked_frac",
  "objective/ratio_min",
  "objective/ratio_max",
  "objective/approx_kl",
)


def _recipe(c, name: str, **overrides):
  from grpojax import objectives

  c.objective = objectives.default_config(name)
  for k, v in overrides.items():
    c.objective[k] = v


def grpo(c):
  """GRPO (PPO clip 0.2, group-normalised advantages, sequence-mean loss)."""
  _recipe(c, "grpo")


def clip_higher(c):
  """DAPO's objective: clip-higher (0.2 / 0.28) and the token-mean loss; no dynamic sampling."""
  _recipe(c, "dapo")


def stapo(c):
  """STAPO: GRPO with spurious tokens (positive advantage, low probability, low entropy)
  masked."""
  _recipe(c, "stapo")


def sapo(c):
  """SAPO's soft, temperature-controlled gate in place of the hard clip."""
  _recipe(c, "sapo")


def clip_cov(c):
  """Clip-Cov: gradients detached on a random few tokens of high log-prob x advantage
  covariance."""
  _recipe(c, "clip_cov")


def kl_cov(c):
  """KL-Cov: a KL penalty on the tokens of highest covariance."""
  _recipe(c, "kl_cov")


def entropy_bonus(c):
  """GRPO plus an entropy bonus of 0.01 per token (the usual PPO coefficient; not tuned)."""
  _recipe(c, "grpo", entropy_coef=0.01)


def progrpo(c):
  """ProGRPO's probability-regularised advantages."""
  _recipe(c, "progrpo")


def progrpo_group_confidence(c):
  """ProGRPO with c(q) read as the group's mean answer confidence instead of the prompt tokens'
  (`prompt_confidence=False`): the confidence shift then averages zero within a group."""
  _recipe(c, "progrpo", prompt_confidence=False)


def dr_grpo(c):
  """Dr. GRPO: no group std, no length normalisation (a constant normaliser)."""
  _recipe(c, "dr_grpo")


def dynamic_sampling(c):
  """GRPO with DAPO's dynamic sampling: only groups with mixed correctness, refilled from up to
  10 generation batches a step."""
  _recipe(c, "grpo")
  c.rollout.refill.enabled = True


def goldilocks(c):
  """GRPO with the Goldilocks teacher choosing prompts of intermediate predicted success."""
  _recipe(c, "grpo")
  c.curriculum.name = "goldilocks"


def flowrl(c):
  """FlowRL: trajectory balance against a learned log-partition head (beta 15)."""
  _recipe(c, "flowrl")


def paced_rl(c):
  """PACED-RL: FlowRL with the reward as its log-reward, prompts chosen by the log-partition
  head's predicted accuracy (compare with `flowrl`, its uniform-sampling counterpart)."""
  _recipe(c, "flowrl", log_reward="reward")
  c.curriculum.name = "paced"


def deep_grpo(c):
  """DEEP-GRPO: up to 16 branch groups a step from pivots on failed chains; nodes of 4 tokens
  (the authors' 50 scaled to 19-31-token solutions)."""
  _recipe(c, "deep_grpo")
  c.rollout.branch.enabled = True
  c.rollout.branch.tokens_per_node = 4


def introllm(c):
  """IntroLLM: a learned per-token temperature in [0.5, 1.5] (its temperature head trained
  alongside the policy, KL 0.04 to the reference as its recipe has it)."""
  _recipe(c, "introllm")
  c.rollout.temperature_policy.enabled = True


def temperature_0_7(c):
  """GRPO sampling at a fixed temperature 0.7."""
  _recipe(c, "grpo")
  c.rollout.temperature = 0.7


def temperature_1_3(c):
  """GRPO sampling at a fixed temperature 1.3."""
  _recipe(c, "grpo")
  c.rollout.temperature = 1.3


def _qerl(c, noise: bool):
  _recipe(c, "grpo")
  c.precision.base_format = "nvfp4"
  c.precision.lora.rank = 16
  c.precision.lora.alpha = 16.0
  c.precision.aqn.enabled = noise
  c.optim.learning_rate = 2e-3  # configs/qerl.py's LoRA learning rate


def qerl_aqn(c):
  """QeRL: NVFP4 base weights, a rank-16 LoRA (lr 2e-3), adaptive quantisation noise."""
  _qerl(c, noise=True)


def qerl_no_noise(c):
  """QeRL's setting without the noise: NVFP4 base, rank-16 LoRA, lr 2e-3."""
  _qerl(c, noise=False)


def vapo(c):
  """VAPO: a value head (critic-only warm-up for a sixth of the RL steps, 10 of 60: the
  paper's 50 of ~5,000 scaled up so the critic sees some data first), decoupled and
  length-adaptive GAE, clip-higher, NLL on correct samples."""
  _recipe(c, "vapo")
  c.train.critic_warmup_steps = max(1, c.train.steps // 6)
  c.optim.head_learning_rate = 1e-3


def vapo_fixed_lambda(c):
  """VAPO with a fixed λ_policy = 0.95 in place of the length-adaptive 1 − 1/(αl), which is
  0.17 for this task's 24-token solutions (α = 0.05)."""
  vapo(c)
  c.objective.adaptive_lambda = False


ARMS = {
  f.__name__: f
  for f in (
    grpo,
    clip_higher,
    stapo,
    sapo,
    clip_cov,
    kl_cov,
    entropy_bonus,
    progrpo,
    progrpo_group_confidence,
    dr_grpo,
    dynamic_sampling,
    goldilocks,
    flowrl,
    paced_rl,
    deep_grpo,
    introllm,
    temperature_0_7,
    temperature_1_3,
    qerl_aqn,
    qerl_no_noise,
    vapo,
    vapo_fixed_lambda,
  )
}


def base_config(warm_start: str, steps: int, smoke: bool):
  """The setup every arm shares (see the module docstring)."""
  from configs import scratchpad

  c = scratchpad.get_config("local" if smoke else None)
  c.unlock()
  if warm_start:
    c.model.checkpoint = warm_start
    c.warm_start.steps = 0
  c.train.steps = steps
  c.train.epochs = 2
  c.train.minibatches = 4
  if smoke:  # a minibatch holds whole groups
    c.rollout.prompts_per_step = 4
  rows = c.rollout.prompts_per_step * c.rollout.samples_per_prompt
  c.train.microbatch_rows = rows // c.train.minibatches
  if not smoke:
    c.eval.samples = 32
  c.eval.every = 10**6  # evaluated once, at the end
  c.checkpoint.every = 10**6
  c.metrics.writers = ("jsonl",)
  c.log_every = 1  # every step: exact generated-token counts and full curves
  return c


def arm_config(base, arm: str, seed: int):
  c = base.copy_and_resolve_references()
  c.unlock()
  c.seed = seed
  ARMS[arm](c)
  c.lock()
  return c


def parser(doc: str, arms: tuple[str, ...], smoke_arms: tuple[str, ...]):
  """The command line every study shares; `smoke_arms` are what `--smoke` runs."""
  p = argparse.ArgumentParser(description=doc.split("\n")[0])
  p.add_argument("--warm_start", default="", help="the scratchpad warm start's policy directory")
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--arms", default=",".join(arms))
  p.add_argument("--out", default="", help=f"default {OUT} (a new temporary one with --smoke)")
  p.add_argument("--smoke", action="store_true", help="the local config, 2 steps, one seed")
  p.set_defaults(smoke_arms=smoke_arms)
  return p


def run(args) -> tuple[list[str], list[dict]]:
  """Runs the arms not yet in OUT; returns the arms and their records."""
  if args.smoke:
    args.steps, args.seeds, args.arms = 2, "0", ",".join(args.smoke_arms)
    args.out = args.out or tempfile.mkdtemp(prefix="scratchpad_smoke_")
  elif not args.warm_start:
    sys.exit("--warm_start: the scratchpad warm start's policy directory is required")
  elif not os.path.isfile(os.path.join(args.warm_start, "config.json")):
    sys.exit(
      f"--warm_start: {args.warm_start!r} is not an exported policy (no config.json); make one "
      "with python -m grpojax.main --config=configs/scratchpad.py --workdir=W "
      "--config.train.steps=0 and pass W/policy"
    )
  args.out = args.out or OUT
  arms = [a for a in args.arms.split(",") if a]
  unknown = sorted(set(arms) - set(ARMS))
  if unknown:
    sys.exit(f"--arms: unknown {unknown}; choose from {sorted(ARMS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  base = base_config(args.warm_start, args.steps, args.smoke)
  points = [{"arm": arm, "seed": seed} for seed in seeds for arm in arms]
  records = study.run_grid(args.out, points, lambda p: arm_config(base, p["arm"], p["seed"]))
  return arms, [r for r in records if r["arm"] in arms and r["seed"] in seeds]


def main(doc: str, study_arms, smoke_arms, report, argv=None) -> None:
  """A study's command line: run its arms not yet in OUT, then `report(args, arms, records)`."""
  args = parser(doc, study_arms, smoke_arms).parse_args(argv)
  names, records = run(args)
  report(args, names, records)


def history(out: str, record: dict) -> list[dict]:
  """The logged RL steps of one run (OUT/runs/ARM_SEED.jsonl)."""
  with open(os.path.join(out, "runs", f"{record['arm']}_{record['seed']}.jsonl")) as f:
    return [r for r in map(json.loads, f) if "reward/mean" in r]


def run_mean(out: str, record: dict, key: str) -> float | None:
  """The mean of `key` over a run's logged RL steps (None when the run never logs it)."""
  vals = [r[key] for r in history(out, record) if key in r]
  return sum(vals) / len(vals) if vals else None


def steps_mean(out: str, key: str, which: str = "last", count: int = 5):
  """value(record): the mean of `key` over a run's first or last `count` steps that log it."""

  def value(record):
    vals = [h[key] for h in history(out, record) if key in h]
    vals = vals[:count] if which == "first" else vals[-count:]
    return sum(vals) / len(vals) if vals else None

  return value


def cells(records, arms, value) -> dict[str, tuple[float, float, int]]:
  """Per arm: mean, 95% half-width and count of value(record) over its seeds."""
  out = {}
  for arm in arms:
    vals = [value(r) for r in records if r["arm"] == arm]
    vals = [v for v in vals if v is not None]
    if vals:
      mean, half = study.interval(vals)
      out[arm] = (mean, half, len(vals))
  return out


def fmt(cell, digits: int | str = 1) -> str:
  """`mean ± half-width`, fixed-point with `digits` decimals or in "e" notation."""
  if cell is None:
    return ""
  mean, half, _ = cell
  spec = ".2e" if digits == "e" else f".{digits}f"
  return f"{mean:{spec}}" + ("" if half != half else f" ± {half:{spec}}")


def markdown_table(records, arms, columns: dict) -> str:
  """One row per arm; `columns` maps a header to (value(record), digits)."""
  lines = [
    "| arm | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
  ]
  per_col = {h: cells(records, arms, fn) for h, (fn, _) in columns.items()}
  for arm in arms:
    row = [fmt(per_col[h].get(arm), d) for h, (_, d) in columns.items()]
    lines.append(f"| {arm} | " + " | ".join(row) + " |")
  return "\n".join(lines)


def outcome_columns(records) -> dict:
  """The columns every study reports: held-out greedy accuracy, avg@n and pass@min(8, n) over
  n samples, wall time, generated tokens."""
  n = records[0]["examples"]["n"]
  k = min(8, n)
  return {
    "greedy %": (lambda r: 100 * r["greedy_accuracy"], 1),
    f"avg@{n} %": (lambda r: 100 * study.pass_at_k(r["examples"], 1), 1),
    f"pass@{k} %": (lambda r: 100 * study.pass_at_k(r["examples"], k), 1),
    "wall s": (lambda r: r["wall_s"], 0),
    "generated tokens (k)": (lambda r: r["generated_tokens"] / 1000, 0),
  }


def divergence_columns(out: str) -> dict:
  """Per-step means of the clip, mask and ratio metrics, in percent or as logged."""
  pct = {"objective/clip_frac_low", "objective/clip_frac_high", "objective/masked_frac"}
  columns = {}
  for key in DIVERGENCE_KEYS:
    scale = 100 if key in pct else 1
    name = key.split("/")[1] + (" %" if key in pct else "")

    def value(r, key=key, scale=scale):
      m = run_mean(out, r, key)
      return None if m is None else scale * m

    columns[name] = (value, 2 if key in pct else "e" if key.endswith("kl") else 3)
  return columns


def axes(width: float = 6):
  """A new figure's axes (matplotlib on its file-only backend)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt.subplots(figsize=(width, 4))[1]


def save(ax, path: str, *, xlabel: str | None, ylabel: str, title: str, legend: int = 8) -> None:
  """Labels, legend, then the PNG at `path`; the figure is closed."""
  import matplotlib.pyplot as plt

  if xlabel is not None:
    ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=legend)
  ax.figure.tight_layout()
  ax.figure.savefig(path, dpi=120)
  plt.close(ax.figure)


def curve_plot(out, records, arms, key: str, path: str, *, ylabel: str, title: str) -> None:
  """The seed-mean of a logged metric against the RL step, one line per arm."""
  ax = axes()
  for arm in arms:
    runs = [history(out, r) for r in records if r["arm"] == arm]
    steps = sorted({h["step"] for run in runs for h in run if key in h})
    if not steps:
      continue
    ys = []
    for s in steps:
      vals = [h[key] for run in runs for h in run if h["step"] == s and key in h]
      ys.append(sum(vals) / len(vals))
    ax.plot([s - steps[0] + 1 for s in steps], ys, label=arm)
  save(ax, path, xlabel="RL step", ylabel=ylabel, title=title, legend=7)


def write_report(args, name: str, text: str) -> str:
  path = os.path.join(args.out, f"{name}.md")
  with open(path, "w") as f:
    f.write(text)
  print(text)
  print(f"wrote {path}", flush=True)
  return path


def errorbar_plot(records, arms, metrics: dict, path: str, *, ylabel: str, title: str) -> None:
  """Per arm, the mean and 95% interval over seeds of each metric (label -> value(record))."""
  ax = axes(max(6, 0.8 * len(arms) + 2))
  width = 0.8 / len(metrics)
  for j, (label, fn) in enumerate(metrics.items()):
    per_arm = cells(records, arms, fn)
    xs = [i + (j - (len(metrics) - 1) / 2) * width for i, a in enumerate(arms) if a in per_arm]
    ys = [per_arm[a][0] for a in arms if a in per_arm]
    es = [0.0 if per_arm[a][1] != per_arm[a][1] else per_arm[a][1] for a in arms if a in per_arm]
    ax.bar(xs, ys, width, yerr=es, capsize=3, label=label)
  ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
  save(ax, path, xlabel=None, ylabel=ylabel, title=title)


def warm_start_outcomes(args) -> dict:
  """The warm-started policy's own evaluation (`study.example_outcomes`), made once per OUT
  with the arms' evaluation settings: every study's starting point and difficulty scale."""
  path = os.path.join(args.out, "warm_start.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  from grpojax import eval_run

  config = base_config(args.warm_start, args.steps, args.smoke)
  report = tempfile.mkdtemp(prefix="warm_start_eval_")
  checkpoint = args.warm_start
  if args.smoke:  # no warm start to read: the local config's own, exported first
    from grpojax import train

    config.unlock()
    config.train.steps = 0  # the local config's two warm-start steps
    train.train_and_evaluate(config, report)
    checkpoint = os.path.join(report, "policy")
  summary = eval_run.run_evaluation(config, checkpoint, report)
  outcomes = {
    "metrics": summary["metrics"],
    **study.example_outcomes(os.path.join(report, "examples.jsonl")),
  }
  shutil.rmtree(report, ignore_errors=True)
  with open(path + ".tmp", "w") as f:
    json.dump(outcomes, f)
  os.replace(path + ".tmp", path)
  return outcomes
