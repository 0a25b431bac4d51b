"""SeeUPO (arXiv 2602.06554) on the calculator task: per-turn sequential updates, turn T first.

  python -m grpojax.main --config=configs/seeupo.py --workdir=/tmp/grpojax_seeupo

The run of `configs/calculator.py` (a multi-turn episode: a tool call, the environment's reply,
the answer) with the objective replaced by the `seeupo` recipe: per turn, GRPO advantages
without the group std, batch-normalised and clamped to [-3, 3], times the accumulated ratio M
of the turns already updated; GSPO (clip 0.2) on that turn's tokens; then re-scoring for the
turn's ratio. The authors' BFCL defaults are in `config.objective` (see
`grpojax/objectives/seeupo.py`); override any with `--config.objective.FIELD=VALUE`. One
optimiser step per turn (the authors' `override_ppo_mini_batch_num: 1`, one epoch). The
trajectory-level baseline is `configs/calculator.py` (GRPO over whole episodes); the comparison
is in the README's multi-turn section.

`--config=configs/seeupo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import calculator, common
from grpojax import objectives


def get_config(arg: str | None = None):
  c = calculator.get_config()
  c.unlock()
  c.objective = objectives.default_config("seeupo")
  c.train.epochs = 1
  c.train.minibatches = 1
  return common.finish(c, arg)
