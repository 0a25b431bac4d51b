"""The per-turn update of a multi-turn batch, for objectives with a turn schedule (SeeUPO).

  (params, opt_state, obj_state), outs, metrics = run(objective, max_turns, ...)

replaces the update's plain run of optimiser steps when `objective.turn_schedule` is set. It is a
`lax.scan` over the turns in the schedule's order (T -> 1 for SeeUPO, arXiv 2602.06554), so the
update compiles once whatever the number of turns. For turn k:

  1. advantages from the objective's advantage transform on the turn-k mask (the completion
     mask where `Batch.turns == k`), times the accumulated ratio M of each row;
  2. the update's own `epochs x minibatches` optimiser steps (`run_steps`) with the loss on the
     turn-k tokens only and π_old = the policy before this turn's update;
  3. the whole batch re-scored under the new policy: ρ_k from its turn-k log-probs,
     M <- clip(M ρ_k), and the log-probs are π_old of the next turn.

A turn with no tokens in the batch leaves the parameters, the optimiser state (AdamW would move
the weights even on a zero gradient) and the objective state bit-identical. The pure pieces (ρ,
M, the order) are in `objectives.seeupo`. Legend: B rows, N completion tokens, U optimiser steps
per turn, T turns.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from grpojax import objectives
from grpojax.objectives import masked
from grpojax.objectives import seeupo as seeupo_lib


def check_turns(objective: objectives.Objective, turns_bn) -> None:
  """A ValueError when an objective with a turn schedule gets a batch without turns."""
  if objective.turn_schedule is not None and turns_bn is None:
    raise ValueError(
      "objective.recipe: the objective updates turn by turn, but the batch has no turns "
      "(Batch.turns is None: a single-turn rollout); it needs a multi-turn environment "
      "(env.name)."
    )


def _keep_if(cond, new, old):
  """`new` where `cond` holds, else `old`, leaf by leaf (bit-identical when not)."""
  return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def run(
  objective: objectives.Objective,
  max_turns: int,
  *,
  run_steps: Callable,
  score_logprobs: Callable,
  carry,
  seqs,
  turns_bn,
  rewards_pg,
  group_inputs: objectives.GroupInputs,
  per_row: dict,
  before_lp,
  key,
):
  """The turn-by-turn update.

  Args:
    objective: an objective whose `turn_schedule` is a `seeupo.TurnSchedule`.
    max_turns: T, static: turns 1..T are updated (tokens of later turns are not trained on;
      `turn/untrained_frac` counts them).
    run_steps: `run_steps(carry, seqs, per_row, key) -> (carry, outs)`, the update's optimiser
      steps on one set of rows and advantages (outs stacked over its U steps, `outs[1]` the
      losses, `outs[2]` the gradient norms).
    score_logprobs: `score_logprobs(params, seqs) -> [B, N]` log-probs of every token.
    carry: (params, opt_state, obj_state) before the update.
    seqs: the batch's `types.Sequences`.
    turns_bn: [B, N] int32 turn of each completion token (0 on padding).
    rewards_pg: [P, G] rewards.
    group_inputs: the `GroupInputs` of the whole batch (its mask is replaced by each turn's).
    per_row: [B, ...] inputs of `run_steps` (sampler log-probs, rewards, reference log-probs);
      "old" and "adv" are set per turn.
    before_lp: [B, N] log-probs of the policy before the update.
    key: PRNG key of the update; turn k uses `fold_in(key, k)`.

  Returns:
    (carry after the last turn, outs stacked [T, U, ...] in update order, metrics):
    `turn/loss_{k}` (mean over turn k's optimiser steps), `turn/rho_mean` (over the rows and
    turns that had tokens), `turn/m_mean` (the final M over rows with completion tokens),
    `turn/active` (turns with tokens), `turn/untrained_frac`, and `loss` and `grad_norm` as
    means over the optimiser steps of turns with tokens.
  """
  schedule = objective.turn_schedule
  order = seeupo_lib.turn_order(schedule.order, max_turns)
  mask = seqs.completion_mask
  rows = mask.shape[0]
  ratio_kw = dict(ratio_low=schedule.ratio_low, ratio_high=schedule.ratio_high)

  def one_turn(loop_carry, turn):
    carry, m_b, before_lp = loop_carry
    mask_k = seeupo_lib.turn_mask(mask, turns_bn, turn)
    has_tokens_b = jnp.any(mask_k > 0, axis=-1)
    active = jnp.any(has_tokens_b)
    valid_pg = None
    if schedule.stats_rows == "turn":
      valid_pg = has_tokens_b.reshape(rewards_pg.shape)
    inputs = group_inputs._replace(mask=mask_k, valid_pg=valid_pg, old_logprobs=before_lp)
    params, opt_state, obj_state = carry
    adv, obj_state_k = objective.advantages(rewards_pg, obj_state, inputs)
    adv = adv * m_b[:, None]
    x = {**per_row, "old": before_lp, "adv": adv}
    seqs_k = seqs._replace(completion_mask=mask_k.astype(mask.dtype))
    new_carry, outs = run_steps(
      (params, opt_state, obj_state_k), seqs_k, x, jax.random.fold_in(key, turn)
    )
    new_carry = _keep_if(active, new_carry, carry)
    after_lp = jax.lax.stop_gradient(score_logprobs(new_carry[0], seqs))
    rho_b = seeupo_lib.turn_ratio(after_lp, before_lp, mask_k, **ratio_kw)
    m_b = seeupo_lib.accumulate_ratio(m_b, rho_b, **ratio_kw)
    turn_out = (outs, active, jnp.sum(jnp.where(has_tokens_b, rho_b, 0.0)), jnp.sum(has_tokens_b))
    return (new_carry, m_b, after_lp), turn_out

  m0 = jnp.ones((rows,), jnp.float32)
  (carry, m_b, _), (outs, active_t, rho_sum_t, rho_count_t) = jax.lax.scan(
    one_turn, (carry, m0, before_lp), jnp.asarray(order, jnp.int32)
  )
  losses_tu, grad_norms_tu = outs[1], outs[2]
  steps_t = active_t.astype(jnp.float32) * losses_tu.shape[1]
  valid = mask > 0
  metrics = {f"turn/loss_{k}": jnp.mean(losses_tu[i]) for i, k in enumerate(order)}
  metrics["turn/rho_mean"] = jnp.sum(rho_sum_t) / jnp.maximum(jnp.sum(rho_count_t), 1)
  metrics["turn/m_mean"] = masked.masked_mean(m_b, jnp.any(valid, axis=-1))
  metrics["turn/active"] = jnp.sum(active_t).astype(jnp.float32)
  trained = (turns_bn >= 1) & (turns_bn <= max_turns)
  metrics["turn/untrained_frac"] = masked.masked_mean((~trained).astype(jnp.float32), valid)
  total_steps = jnp.maximum(jnp.sum(steps_t), 1.0)
  metrics["loss"] = jnp.sum(losses_tu * active_t[:, None]) / total_steps
  metrics["grad_norm"] = jnp.sum(grad_norms_tu * active_t[:, None]) / total_steps
  return carry, outs, metrics
