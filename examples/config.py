"""The task, reward and recipe of this directory, by config alone (run from the repository root):

  python -m grpojax.main --config=examples/config.py --workdir=/tmp/grpojax_example

The task doubles three-digit numbers (examples/tasks.py), the reward adds a brevity term to the
task's own verifier (examples/rewards.py), and the objective is GRPO with clipped advantages
(examples/recipes.py). `:local` shrinks it to a seconds-long smoke run.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  config = common.base("examples.recipes:clipped_grpo")
  config.task.name = "examples.tasks:make_task"
  config.task.kwargs = ml_collections.ConfigDict(dict(digits=3, heldout_size=64))
  config.reward.fns = ("task", "examples.rewards:brevity")
  config.reward.weights = (1.0, 0.1)
  config.eval.num_prompts = 64
  return common.finish(config, arg)
