"""The parts recipes share: the regularisers every recipe offers, GRPO's group z-score and
PPO's clip, and the convention that an infinite bound in a config means no bound."""

import math

from grpojax.objectives import advantages as adv_lib
from grpojax.objectives import base, surrogates
from grpojax.objectives import regularizers as regularizers_lib
from grpojax.objectives import transforms as t

INF = math.inf


def none_if_inf(value):
  """Config values are never None: an infinite bound is 'no bound' (the piece's None)."""
  return None if value == INF else value


def objective(advantage, policy_terms, aggregate, *, kl_coef, kl_kind, entropy_coef, kl_target=0.0):
  """advantage -> policy terms -> KL to the reference -> entropy bonus -> aggregation."""
  regularizers = []
  if kl_target > 0:
    regularizers.append(
      t.adaptive_kl_penalty(kl_coef=kl_coef, kl_target=kl_target, kl_kind=kl_kind)
    )
  elif kl_coef > 0:
    regularizers.append(t.kl_penalty(kl_coef=kl_coef, kl_kind=kl_kind))
  else:
    regularizers_lib.check_kl(kl_coef, kl_kind)
  if entropy_coef > 0:
    regularizers.append(t.entropy_bonus(entropy_coef=entropy_coef))
  elif entropy_coef < 0 or not math.isfinite(entropy_coef):
    raise ValueError(f"entropy_coef must be >= 0 and finite, got {entropy_coef!r}.")
  return base.Objective(
    advantage=advantage, terms=base.chain(*policy_terms, *regularizers), aggregate=aggregate
  )


def zscore(eps, ddof):
  return t.group_advantages(adv_lib.grpo_advantages, eps=eps, ddof=ddof)


def ppo_clip(epsilon_low, epsilon_high, dual_clip_c):
  return t.policy_loss(
    surrogates.ppo_clip,
    epsilon_low=epsilon_low,
    epsilon_high=epsilon_high,
    dual_clip_c=none_if_inf(dual_clip_c),
  )
