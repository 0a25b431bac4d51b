"""Objectives as optax-style transforms: advantages, corrections, filters, surrogates,
regularisers and aggregations as pure functions, chained into recipes (see README.md here).

  objective = objectives.make(objectives.default_config("dapo"))
  state = objective.init()
  adv_bt, state = objective.advantages(rewards_pg, state, objectives.GroupInputs(mask=mask_bt))
  loss_sum, denominator, metrics, state = objective.loss(state, objectives.LossInputs(...))
  state = objective.finalize(state)          # once per RL step
"""

from grpojax.objectives.base import (
  GroupInputs,
  GroupTransform,
  LossInputs,
  LossTransform,
  Objective,
  ObjectiveState,
  Terms,
  chain,
  named_chain,
  with_terms,
)
from grpojax.objectives.config import ConfigError, default_config, make
from grpojax.objectives.recipes import CORRECTIONS, RECIPES

__all__ = [
  "CORRECTIONS",
  "RECIPES",
  "ConfigError",
  "GroupInputs",
  "GroupTransform",
  "LossInputs",
  "LossTransform",
  "Objective",
  "ObjectiveState",
  "Terms",
  "chain",
  "default_config",
  "make",
  "named_chain",
  "with_terms",
]
