"""RePO (Rephrasing Policy Optimization, arXiv 2602.10819) on the built-in arithmetic task.

  python -m grpojax.main --config=configs/repo.py --workdir=/tmp/grpojax_repo

The run of `configs/default.py` (GRPO) with RePO's rephrase injection switched on
(`rollout.rephrase`, see `grpojax/rl/rephrase.py`): in every group whose rollouts all failed
(`failure_rate` ρ = 1.0), the policy is prompted with the problem, its reference solution and the
problem again (`template`, e.g. "23+58=81\\n23+58=" for the prompt "23+58="; every character is
in the character tokenizer's alphabet), samples `num_replaced` = 1 restatement, and a
restatement the task's verifier accepts replaces the group's worst incorrect rollout, trained as
a completion of the original prompt with behaviour log-probs recomputed under that prompt. Logged
per step: `rephrase/gated_groups`, `rephrase/candidate_accuracy`, `rephrase/injected_rows`,
`rephrase/informative_groups`. The gate, the number replaced and the prompt are grpojax's
reading (the source is an abstract); override any with `--config.rollout.rephrase.FIELD=VALUE`.

`--config=configs/repo.py:local` shrinks it to a seconds-long smoke run (with ρ = 0.5, so the
smoke run's random policy gates groups and exercises the injection).
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("grpo")
  config.rollout.rephrase.enabled = True
  if arg == "local":
    config.rollout.rephrase.failure_rate = 0.5
  return common.finish(config, arg)
