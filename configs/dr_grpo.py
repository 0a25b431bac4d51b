"""Dr. GRPO (arXiv 2503.20783) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/dr_grpo.py --workdir=/tmp/grpojax_dr_grpo

The run of `configs/default.py` with the objective replaced by the `dr_grpo` recipe: mean-centred
advantages (no std), PPO clip, no KL, a constant normaliser instead of per-sequence length. Every
knob of the recipe is in `config.objective` with the paper's defaults (see
`grpojax/objectives/README.md`); override any with `--config.objective.FIELD=VALUE`. Measured on a
2-core CPU (about 2 minutes): `held-out accuracy: warm start 58.6%, after RL 93.0%, pass@8 95.7%`.

`--config=configs/dr_grpo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("dr_grpo"), arg)
