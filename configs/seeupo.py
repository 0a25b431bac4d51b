"""SeeUPO (arXiv 2602.06554): per-turn sequential updates of a multi-turn agent, turn T first.

  python -m grpojax.main --config=configs/seeupo.py --workdir=/tmp/grpojax_seeupo

The run of `configs/default.py` with the objective replaced by the `seeupo` recipe: per turn,
GRPO advantages without the group std, batch-normalised and clamped to [-3, 3], times the
accumulated ratio M of the turns already updated; GSPO (clip 0.2) on that turn's tokens; then
re-scoring for the turn's ratio. The authors' BFCL defaults are in `config.objective` (see
`grpojax/objectives/seeupo.py`); override any with `--config.objective.FIELD=VALUE`. One
optimiser step per turn (the authors' `override_ppo_mini_batch_num: 1`, one epoch). It needs
multi-turn rollouts (`Batch.turns`): on a single-turn task the update stops with an error naming
`objective.recipe`. Its accuracy has not been measured yet.

`--config=configs/seeupo.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  c = common.base("seeupo")
  c.train.epochs = 1
  c.train.minibatches = 1
  return common.finish(c, arg)
