"""CISPO (arXiv 2506.13585) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/cispo.py --workdir=/tmp/grpojax_cispo

The run of `configs/default.py` with the objective replaced by the `cispo` recipe: a clipped,
stop-gradient importance weight on REINFORCE, so no token loses its gradient. Every knob of the
recipe is in `config.objective` with the paper's defaults (see `grpojax/objectives/README.md`);
override any with `--config.objective.FIELD=VALUE`. Expect about the default's run time (a few
minutes on a 2-core CPU); this recipe's final accuracy on the task has not been measured yet.

`--config=configs/cispo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("cispo"), arg)
