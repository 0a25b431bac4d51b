"""VCPO (arXiv 2602.17616) on the built-in two-digit arithmetic task, with off-policy minibatches.

  python -m grpojax.main --config=configs/vcpo.py --workdir=/tmp/grpojax_vcpo

The `vcpo` recipe (mit-han-lab/vcpo `vcpo_k=10.sh`): sequence-level rollout importance weights
truncated at 8 on the policy term, the PPO clip effectively off, seq-mean-token-mean, no KL, and
every optimiser step's update scaled by sqrt(min(1, ρ_ess)) with ρ_ess = (Σw)²/(B·Σw²) over that
step's rows (`update/lr_scale`, `update/ess_ratio` in the metrics). Each rollout is used for
2 epochs x 2 minibatches (4 optimiser steps, 128-row micro-batches), so the later optimiser
steps train on data drawn by an older policy: that drift is what the ESS measures here, as
there are no stale rollouts yet. `--config.objective.optimal_baseline=True` adds the off-policy
optimal baseline (one extra backward pass per row). Expect about twice the default's update
time.

`--config=configs/vcpo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("vcpo")
  config.train.epochs = 2
  config.train.minibatches = 2
  config.train.microbatch_rows = 128
  config = common.finish(config, arg)
  if arg == "local":  # 16 rows: two minibatches of one 8-row micro-batch
    config.rollout.prompts_per_step = 4
  return config
