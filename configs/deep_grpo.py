"""DEEP-GRPO (arXiv 2602.14169, the paper's branch-expansion variant) on two-digit addition.

  python -m grpojax.main --config=configs/deep_grpo.py --workdir=/tmp/grpojax_deep_grpo

The run of `configs/default.py` with the `deep_grpo` recipe (group z-score advantages, PPO clip
0.2, zero-advantage tokens filtered, the dual-stream token mean with λ_branch = 1, no KL) and
pivot branching switched on (`rollout.branch`, see `grpojax/rl/pivots.py`): every step, up to
16 failed root chains are cut into one-token nodes, one pivot per chain is drawn by
P_φ(success | depth)·depth^2 (an online logistic fit over a sliding window of past pivots), and
each pivot is branched 8 times from its forked key/value cache. The 16 branch groups follow
the 32 root groups in the batch (384 rows, micro-batches of 128); the branches of a pivot are
one group, so their advantages have a local baseline, and their shared prefix is masked out.

`--config=configs/deep_grpo.py:local` shrinks it to a seconds-long smoke run (2 branch groups).
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("deep_grpo")
  config.rollout.branch.enabled = True
  config.train.microbatch_rows = 128  # (32 root + 16 branch groups) x 8 rows = 384 rows
  if arg == "local":
    config.rollout.branch.max_pivots = 2  # (2 + 2) groups x 4 rows = 16 rows
  return common.finish(config, arg)
