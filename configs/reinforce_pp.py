"""REINFORCE++ (arXiv 2501.03262) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/reinforce_pp.py --workdir=/tmp/grpojax_reinforce_pp

The run of `configs/default.py` with the objective replaced by the `reinforce_pp` recipe: rewards
whitened over the whole batch (`--config.objective.baseline=True`: after subtracting the group
mean), PPO clip, token-mean. Every knob of the recipe is in `config.objective` with the paper's
defaults (see `grpojax/objectives/README.md`); override any with `--config.objective.FIELD=VALUE`.
Expect about the default's run time (a few minutes on a 2-core CPU); this recipe's final accuracy on
the task has not been measured yet.

`--config=configs/reinforce_pp.py:local` shrinks it to a seconds-long smoke run."""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("reinforce_pp"), arg)
