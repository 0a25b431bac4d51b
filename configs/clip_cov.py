"""Clip-Cov (arXiv 2505.22617) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/clip_cov.py --workdir=/tmp/grpojax_clip_cov

The run of `configs/default.py` with the objective replaced by the `clip_cov` recipe:
high-covariance tokens' gradients detached, with the PPO clip loosened to ratio bounds [0, 2] as
in the authors' script. Every knob of the recipe is in `config.objective` with
the authors' defaults (see `grpojax/objectives/README.md`); override any with
`--config.objective.FIELD=VALUE`. Expect about the default's run time (a few minutes on a 2-core
CPU); this recipe's final accuracy on the task has not been measured yet.

`--config=configs/clip_cov.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("clip_cov"), arg)
