"""A brand-new variant, written here outside grpojax by chaining existing transforms with one new
function, trains end to end through `train_and_evaluate`, picked by config alone."""

import os
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np

from grpojax import checkpoint as checkpoint_lib
from grpojax import objectives, train
from grpojax.objectives import advantages, aggregation, surrogates
from grpojax.objectives import transforms as t

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sign_advantages(rewards_pg, valid_pg=None):
  """The new piece: the sign of the group-centred reward (+1 better than the group, −1 worse)."""
  return jnp.sign(advantages.dr_grpo_advantages(rewards_pg, valid_pg))


def sign_ppo(*, epsilon: float = 0.2, entropy_coef: float = 0.01) -> objectives.Objective:
  """Sign advantages -> PPO clip -> entropy bonus -> token mean."""
  return objectives.Objective(
    advantage=t.group_advantages(sign_advantages),
    terms=objectives.chain(
      t.policy_loss(surrogates.ppo_clip, epsilon_low=epsilon, epsilon_high=epsilon),
      t.entropy_bonus(entropy_coef=entropy_coef),
    ),
    aggregate=aggregation.token_mean,
  )


def test_a_recipe_from_a_users_module_trains_for_two_steps(tmp_path):
  sys.path.insert(0, REPO)
  from configs import default

  config = default.get_config("local")
  with config.unlocked():
    config.objective = ml_collections.ConfigDict(
      {"recipe": "tests.test_user_variant:sign_ppo", "epsilon": 0.3}
    )
  final = train.train_and_evaluate(config, str(tmp_path))
  assert set(final) >= {"greedy_accuracy", "pass@4"}
  ckpt = checkpoint_lib.Checkpointer(os.path.join(tmp_path, "checkpoints"))
  state = ckpt._manager.restore(ckpt.latest_step())["state"]
  ckpt.close()
  assert int(np.asarray(state["step"])) == 4  # two warm-start and two RL steps
  lines = open(os.path.join(tmp_path, "metrics.jsonl")).read()
  assert "objective/clip_frac_high" in lines and "objective/entropy_mean" in lines
