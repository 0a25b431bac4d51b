"""Pass@k training (arXiv 2508.10751) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/pass_at_k.py --workdir=/tmp/grpojax_pass_at_k

The run of `configs/default.py` with the objective replaced by the `pass_at_k` recipe: the
analytical pass@k advantage (k = 4 of the 8 samples), PPO clip. Every knob of the recipe is in
`config.objective` with the paper's defaults (see `grpojax/objectives/README.md`); override any with
`--config.objective.FIELD=VALUE`. Expect about the default's run time (a few minutes on a 2-core
CPU); this recipe's final accuracy on the task has not been measured yet.

`--config=configs/pass_at_k.py:local` shrinks it to a seconds-long smoke run."""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("pass_at_k"), arg)
