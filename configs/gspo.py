"""GSPO (arXiv 2507.18071) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/gspo.py --workdir=/tmp/grpojax_gspo

The run of `configs/default.py` with the objective replaced by the `gspo` recipe: a sequence-level
importance ratio clipped to a narrow band (3e-4/4e-4). Every knob of the recipe is in
`config.objective` with the paper's defaults (see `grpojax/objectives/README.md`); override any
with `--config.objective.FIELD=VALUE`. Expect about the default's run time (a few minutes on a
2-core CPU); this recipe's final accuracy on the task has not been measured yet.

`--config=configs/gspo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("gspo"), arg)
