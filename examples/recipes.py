"""An objective of one's own: GRPO advantages clipped to [-1, 1], PPO clip, token mean."""

import jax.numpy as jnp

from grpojax import objectives
from grpojax.objectives import advantages, aggregation, surrogates
from grpojax.objectives import transforms as t


def clipped_grpo(*, epsilon: float = 0.2, max_advantage: float = 1.0) -> objectives.Objective:
  """GRPO's z-scored advantages, clipped to ±max_advantage so one lucky row cannot dominate."""
  clip = lambda rewards_pg, valid_pg=None: jnp.clip(
    advantages.grpo_advantages(rewards_pg, valid_pg), -max_advantage, max_advantage
  )
  return objectives.Objective(
    advantage=t.group_advantages(clip),
    terms=objectives.chain(
      t.policy_loss(surrogates.ppo_clip, epsilon_low=epsilon, epsilon_high=epsilon)
    ),
    aggregate=aggregation.token_mean,
  )
