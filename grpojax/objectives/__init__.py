"""Objectives: advantages, surrogates, corrections, regularisers and aggregation as pure functions.

`make(config)` composes them into one objective (`recipes`, `compose`); see README.md here.
"""

from grpojax.objectives.compose import LossBatch, Objective, ObjectiveState, PolicyOutputs
from grpojax.objectives.recipes import RECIPES, default_config, make, resolve

__all__ = [
  "RECIPES",
  "LossBatch",
  "Objective",
  "ObjectiveState",
  "PolicyOutputs",
  "default_config",
  "make",
  "resolve",
]
