"""SeeUPO: sequential per-turn updates of a multi-turn policy (arXiv 2602.06554).

Each turn of a multi-turn episode is treated as one agent of a sequential multi-agent bandit and
updated on its own, in reverse order T -> 1 (backward induction). For turn k:

  Â_i     = clip(batch_z(r_i − mean_g r), −3, 3) · M_i       (`advantages.seeupo_advantages`)
  update  GSPO on turn k's tokens (seq-mean-token-mean), one optimiser step per minibatch
  ρ_{k,i} = clip(exp(clip(mean_{t ∈ turn k of row i} (logπ_new − logπ_before), −10, 10)),
                 1 − ε_low, 1 + ε_high)
  M_i     <- clip(M_i · ρ_{k,i}, 1 − ε_low, 1 + ε_high)

as the authors' code does (modelscope/AgentEvolver, branch `seeupo`,
`beyondagent/module/trainer/ba_ray_trainer.py`: `compute_grpo_outcome_advantage_local` with
`special_norm`, `update_ratios`, `get_agent_update_order`). What that code fixes, and what is
ours:

  - "before" is the policy before turn k's update (the authors recompute the old log-probs at
    the start of every turn), not the rollout policy; it is also the GSPO ratio's π_old. The
    log-probs after turn k's update are those before the next turn's, so one scoring per turn
    serves both.
  - M starts at 1 (the authors' `ratios=None`: the first turn's advantages are not scaled).
  - The advantage statistics (group mean, batch std) are over every row, those whose episode
    ended before turn k included: the authors duplicate the outcome reward into every turn's
    sample and pad short episodes with a fully masked copy of their last turn
    (`stats_rows="all"`). `stats_rows="turn"` restricts them to rows that have turn-k tokens
    [ours].
  - A row without turn-k tokens keeps its M (ρ = 1) [ours: the authors' ρ for such a row comes
    from the masked padding copy of its last turn, which has no counterpart here].
  - A turn with no tokens in the whole batch changes neither the parameters nor the optimiser
    state [ours: the authors' batches always have every turn].

The per-turn loop itself lives in `rl.turn_update`; this module holds the recipe and the pure
pieces it needs. Legend: B rows, T tokens.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import advantages as adv_lib
from grpojax.objectives import aggregation, base, surrogates
from grpojax.objectives import recipe_parts as parts
from grpojax.objectives import transforms as t

ORDERS = ("reverse", "sequential")
STATS_ROWS = ("all", "turn")
# The authors clamp the mean log-ratio before exponentiating it, for numerical stability.
LOG_RATIO_CLAMP = 10.0


class TurnSchedule(NamedTuple):
  """How an objective's update walks the turns of a multi-turn batch (`Objective.turn_schedule`).

  Attributes:
    order: "reverse" (T -> 1, SeeUPO's backward induction) or "sequential" (1 -> T).
    ratio_low, ratio_high: ρ and M are clipped to [1 − ratio_low, 1 + ratio_high].
    stats_rows: "all" (advantage statistics over every row) or "turn" (only rows with tokens
      in the turn being updated).
  """

  order: str = "reverse"
  ratio_low: float = 0.2
  ratio_high: float = 0.2
  stats_rows: str = "all"


def turn_order(order: str, max_turns: int) -> tuple[int, ...]:
  """The turns 1..max_turns in the order they are updated."""
  if order not in ORDERS:
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
  if max_turns < 1:
    raise ValueError(f"max_turns must be >= 1, got {max_turns!r}.")
  turns = tuple(range(1, max_turns + 1))
  return turns[::-1] if order == "reverse" else turns


def turn_mask(mask_bt, turns_bt, turn):
  """The completion mask restricted to the tokens of `turn` [B, T] float32."""
  return ((mask_bt > 0) & (turns_bt == turn)).astype(jnp.float32)


def turn_ratio(new_logprobs_bt, old_logprobs_bt, mask_bt, *, ratio_low, ratio_high):
  """ρ_i = clip(exp(clip(mean_t m_t (logπ_new − logπ_old), −10, 10)), 1 − low, 1 + high) [B].

  Rows without tokens in `mask_bt` get ρ = 1 (their M is left as it is).
  """
  valid = mask_bt > 0
  delta = jnp.where(valid, new_logprobs_bt - old_logprobs_bt, 0.0)
  count = jnp.sum(valid, axis=-1)
  mean = jnp.sum(delta, axis=-1) / jnp.maximum(count, 1)
  rho = jnp.exp(jnp.clip(mean, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
  rho = jnp.clip(rho, 1.0 - ratio_low, 1.0 + ratio_high)
  return jax.lax.stop_gradient(jnp.where(count > 0, rho, 1.0))


def accumulate_ratio(m_b, rho_b, *, ratio_low, ratio_high):
  """M <- clip(M · ρ, 1 − low, 1 + high) [B]."""
  return jnp.clip(m_b * rho_b, 1.0 - ratio_low, 1.0 + ratio_high)


def check_multi_turn(objective: base.Objective, env_name: str, *, path="objective.recipe"):
  """Raises a ValueError naming `path` when `objective` needs turns a run will not have.

  Args:
    objective: the run's objective.
    env_name: the run's environment name; "" means single-turn rollouts (no `Batch.turns`).
    path: the config field to name.
  """
  if objective.turn_schedule is not None and not env_name:
    raise ValueError(
      f"{path}: this recipe updates turn by turn and needs multi-turn rollouts (Batch.turns), "
      "but env.name is empty (single-turn); set env.name to a multi-turn environment."
    )


def seeupo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  adv_clip: float = 3.0,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  ratio_low: float = 0.2,
  ratio_high: float = 0.2,
  order: str = "reverse",
  stats_rows: str = "all",
  kl_coef: float = 0.002,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """SeeUPO (arXiv 2602.06554), the authors' BFCL configuration: per-turn updates T -> 1,
  GRPO advantages without the group std, batch-normalised and clamped to [−3, 3], scaled by the
  accumulated ratio M of the turns already updated (ρ and M clipped to [0.8, 1.2]); GSPO on each
  turn's tokens with verl's default clip 0.2 / 0.2 (the authors' yaml leaves it), seq-mean-
  token-mean; low-variance (k3) KL 0.002. `eps` [ours: the authors divide by the batch std when
  it exceeds 1e-6, else only centre]. Needs multi-turn batches (`Batch.turns`).
  """
  if order not in ORDERS:
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}.")
  if stats_rows not in STATS_ROWS:
    raise ValueError(f"stats_rows must be one of {STATS_ROWS}, got {stats_rows!r}.")
  if not 0.0 <= ratio_low < 1.0:
    raise ValueError(f"ratio_low must be in [0, 1), got {ratio_low!r}.")
  if not 0.0 <= ratio_high < float("inf"):
    raise ValueError(f"ratio_high must be >= 0 and finite, got {ratio_high!r}.")
  objective = parts.objective(
    t.group_advantages(adv_lib.seeupo_advantages, clip=adv_clip, eps=eps, ddof=ddof),
    [t.policy_loss(surrogates.gspo, epsilon_low=epsilon_low, epsilon_high=epsilon_high)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  schedule = TurnSchedule(
    order=order, ratio_low=ratio_low, ratio_high=ratio_high, stats_rows=stats_rows
  )
  return objective._replace(turn_schedule=schedule)
