"""The one jitted update of an RL step, and the supervised warm-start update.

  update(state, batch, key) -> (state, metrics)

holds everything between a finished rollout and the next one: the pre-update scoring (when the
recipe needs the old log-probs before updating, or when the policy moves within the step), the
reference policy's log-probs, the advantages, `epochs x minibatches` optimiser steps each over a
`lax.scan` of micro-batches (gradients, loss sums and denominators summed exactly), global-norm
clipping + AdamW, the non-finite guard (a non-finite gradient leaves parameters and optimiser
state as they were and is counted) and the objective's once-per-step `finalize`. The trainer
jits it once with in/out shardings and donates the state (`train.build`); the dry run and the
benchmarks compile the same function.

Micro-batches are contiguous row slices: minibatch u holds rows [u·B/M, (u+1)·B/M), micro-batch
k of it the k-th slice of `microbatch_rows` rows, each split over the batch axes of the mesh.
The randomness of micro-batch (update u, first row r) is `fold_in(key, 1 + u·B + r)`.
With `length_buckets` the gradient is computed on micro-batches of the minibatch's rows sorted by
completion length, each cut to a static bucket length (`rl.length_buckets`, where the exactness
argument is); loss, objective state and metrics still come from these contiguous micro-batches.

With one optimiser step per rollout the old log-probs are the current policy's, so they come
out of the update's own forward pass (detached), as TRL does; otherwise the rollout is scored
first. Metrics are device arrays: nothing here waits for the host.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import models, objectives, types
from grpojax.objectives import aggregation, gae, masked
from grpojax.rl import length_buckets, turn_update


class TrainState(NamedTuple):
  """Everything a resumed run needs, as one checkpointable pytree.

  Attributes:
    step: the global step (warm-start steps, then RL steps).
    params: the policy's whole NNX state (decoder, heads, frozen quantised bases, adapters).
    opt_state: optimiser state over the trainable part of `params`.
    objective_state: the objective's `ObjectiveState`.
    ref_params: a frozen reference policy (only when the objective reads its log-probs).
    data: the data side's state (`rl.source.DataState`): where the prompt stream is, replay.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  objective_state: Any
  ref_params: Any
  data: Any


class Batch(NamedTuple):
  """What an RL update consumes: P groups of G rows, prompt-major.

  Attributes:
    seqs: trainer rows; `completion_mask` is 0 on groups kept only to fill the batch.
    sampler_logprobs: [B, N] log-probs under the distribution the sampler drew from.
    rewards: [B] scalar rewards.
    stream: [B] int32, 1 on rows branched from a pivot of another row (`rl.pivots`), 0 on rows
      sampled from the prompt; None: all 0.
    temperature_logprobs: [B, N] log-density of each token's temperature under the sampler's
      temperature head (head-driven sampling, IntroLLM), or None.
    turns: [B, N] int32 turn of each completion token in a multi-turn episode (1 .. T: the
      policy's turn-k tokens and the environment's reply to them carry k; 0 on padding), or
      None for single-turn rollouts.
  """

  seqs: types.Sequences
  sampler_logprobs: jax.Array
  rewards: jax.Array
  stream: jax.Array | None = None
  temperature_logprobs: jax.Array | None = None
  turns: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """The static shape of an update.

  Attributes:
    group_size: G, samples per prompt.
    epochs: passes over the rollout.
    minibatches: optimiser steps per pass.
    microbatch_rows: rows per forward/backward.
    temperature: the sampling temperature; the trainer scores at the same one.
    seq_chunk, vocab_chunk: chunking of the log-prob computation.
    max_tis_ratio: the cap reported by `mismatch/beyond_tis_frac`.
    temperature_policy: None, or the `sampling.HeadTemperature` the rollouts were drawn with:
      the update then re-evaluates each token's temperature log-density under the current
      temperature head (`LossInputs.temperature_logprobs`).
    max_turns: T, the turns an objective with a turn schedule updates (`env.max_turns`).
    length_buckets: 0, or the number of static completion lengths a micro-batch's
      forward/backward may be cut to (`rl.length_buckets`); rows are then grouped into
      micro-batches by length within each minibatch.
  """

  group_size: int
  epochs: int = 1
  minibatches: int = 1
  microbatch_rows: int = 256
  temperature: float = 1.0
  seq_chunk: int = 1024
  vocab_chunk: int | None = None
  max_tis_ratio: float = 2.0
  temperature_policy: Any = None
  max_turns: int = 1
  length_buckets: int = 0


def split_trainable(params, trainable=nnx.Param):
  """(the variables the optimiser updates, the frozen rest) of a model's state."""
  return nnx.split_state(params, trainable, ...)


def fuses_old_logprobs(objective: objectives.Objective, cfg: UpdateConfig) -> bool:
  """Whether the old log-probs come out of the update's own forward pass: exact when the policy
  takes one optimiser step per rollout and the advantages need neither them nor the values first
  (a turn schedule updates once per turn, so it never fuses)."""
  return (
    cfg.epochs * cfg.minibatches == 1
    and objective.turn_schedule is None
    and not objective.advantages_need_old_logprobs
    and not objective.advantages_need_values
  )


def buckets_lengths(objective: objectives.Objective, cfg: UpdateConfig, max_new_tokens: int):
  """The static completion lengths of the length-bucketed update, or None where it runs
  unbucketed: `length_buckets` 0; an objective whose loss reads statistics over a micro-batch's
  tokens (the grouping by length would change its gradient); a turn schedule (its per-turn
  re-scoring and masks run the plain path)."""
  if cfg.length_buckets == 0 or objective.micro_batch_statistics:
    return None
  if objective.turn_schedule is not None:
    return None
  return length_buckets.bucket_lengths(max_new_tokens, cfg.length_buckets)


def mismatch_metrics(trainer_lp, sampler_lp, mask, *, tis_cap: float = 2.0):
  """How far the sampler's log-probs are from the trainer's on the same tokens (device scalars).

  Returns:
    `mismatch/abs_logprob` (mean |Δ log p|), `mismatch/k3_kl` (the k3 estimate of
    KL(sampler ‖ trainer) per token) and `mismatch/beyond_tis_frac` (the fraction of tokens whose
    ratio π_trainer/π_sampler lies outside [1/tis_cap, tis_cap]: what TIS/MIS with that cap
    would clip).
  """
  valid = mask > 0
  delta = jnp.where(valid, trainer_lp - sampler_lp, 0.0)
  log_r = jnp.clip(delta, -20.0, 20.0)
  k3 = jnp.expm1(log_r) - log_r
  beyond = (jnp.abs(delta) > np.log(tis_cap)).astype(jnp.float32)
  return {
    "mismatch/abs_logprob": masked.masked_mean(jnp.abs(delta), valid),
    "mismatch/k3_kl": masked.masked_mean(k3, valid),
    "mismatch/beyond_tis_frac": masked.masked_mean(beyond, valid),
  }


def merge_metrics(metrics_k: dict, weights_k: jax.Array) -> dict:
  """Combines metrics stacked over micro-batches (leading axes): `*_max` take the max, `*_min`
  the min, every other metric (a mean over its micro-batch's tokens) the token-weighted mean."""
  weights = weights_k.reshape(-1)
  total = jnp.maximum(jnp.sum(weights), 1.0)
  out = {}
  for name, values in metrics_k.items():
    values = values.reshape(-1)
    if name.endswith("_max"):
      out[name] = jnp.max(values)
    elif name.endswith("_min"):
      out[name] = jnp.min(values)
    else:
      out[name] = jnp.sum(values * weights) / total
  return out


def _apply_gradients(optimizer, split, params, opt_state, grad_sum, denominator, scale=None):
  """One optimiser step on Σ grads / Σ denominators; a non-finite gradient changes nothing.

  `scale` (a scalar, e.g. VCPO's ESS learning-rate scale) multiplies the optimiser's update: the
  step runs at `scale` times the learning rate, the optimiser's moments see the full gradient.
  """
  grads = jax.tree.map(lambda g: g / jnp.maximum(denominator, 1e-8), grad_sum)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(grad_norm)
  train_params, frozen = split(params)
  updates, new_opt_state = optimizer.update(grads, opt_state, train_params)
  if scale is not None:
    updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
  new_params = nnx.merge_state(optax.apply_updates(train_params, updates), frozen)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  return keep(new_params, params), keep(new_opt_state, opt_state), grad_norm, finite


def _micro(tree, k: int, rows: int, constrain):
  """[B, ...] leaves -> [B / rows, rows, ...] (contiguous), each micro-batch on every device."""
  return jax.tree.map(lambda x: constrain(x.reshape(k, rows, *x.shape[1:])), tree)


def _rows(tree):
  """[K, rows, ...] -> [K·rows, ...]."""
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)


def build_update(
  graphdef,
  objective: objectives.Objective,
  optimizer: optax.GradientTransformation,
  cfg: UpdateConfig,
  *,
  trainable=nnx.Param,
  use_reference: bool = False,
  constrain: Callable = lambda x: x,
) -> Callable:
  """The RL update `update(state, batch, key) -> (state, metrics)` (not yet jitted).

  Args:
    graphdef: the policy's NNX graph definition.
    objective: the objective (`objectives.make`).
    optimizer: applied to the gradient of the batch loss w.r.t. the trainable parameters.
    cfg: the update's static shape.
    trainable: an NNX filter of what the optimiser updates (full fine-tuning: `nnx.Param`;
      LoRA: adapters and heads; a critic warm-up: the heads alone). The rest is bit-identical
      after the update.
    use_reference: whether `state.ref_params` holds a reference policy to score.
    constrain: applied to every [K, rows, ...] micro-batch stack (the trainer pins rows to the
      batch axes of its mesh with a sharding constraint).

  Returns:
    The update function; metrics are float32 device scalars: `objective/*` (merged over
    micro-batches), `loss`, `grad_norm` (means over optimiser steps), `entropy/mean`,
    `mismatch/*` (old vs sampler log-probs over the whole batch), `update/nonfinite` (skipped
    optimiser steps).
  """
  split = lambda params: split_trainable(params, trainable)
  fused = fuses_old_logprobs(objective, cfg)
  score_kw = dict(temperature=cfg.temperature, seq_chunk=cfg.seq_chunk, vocab_chunk=cfg.vocab_chunk)
  num_updates = cfg.epochs * cfg.minibatches
  needs_prompt = "prompt_logprobs" in objective.advantage.requires

  def score_all(params, seqs, k, buckets=None):
    """Old (or reference) log-probs, entropy, value-head outputs (None without a value head) and
    prompt-token log-probs (None unless the advantages read them, as ProGRPO's c(q) does) of
    every row, micro-batch by micro-batch; with `buckets`, of micro-batches of rows sorted by
    length, each cut to its bucket (a forward pass only: the switch needs no residuals)."""

    def outputs(seqs_m, keep=None):
      n = seqs_m.completion_mask.shape[1]
      out = models.split_and_score(
        graphdef,
        params,
        seqs_m if keep is None else length_buckets.cut(seqs_m, keep),
        compute_entropy=True,
        compute_prompt_logprobs=needs_prompt,
        **score_kw,
      )
      pad = lambda x: length_buckets.pad_back(x, n)
      return pad(out.logprobs), pad(out.entropy), pad(out.values), out.prompt_logprobs

    if buckets is None:
      _, outs = jax.lax.scan(
        lambda _, seqs_m: (None, outputs(seqs_m)),
        None,
        _micro(seqs, k, cfg.microbatch_rows, constrain),
      )
      return tuple(_rows(x) for x in outs)
    lengths = length_buckets.completion_lengths(seqs)
    perm = length_buckets.sort_within(lengths, 1)
    branches = [functools.partial(outputs, keep=keep) for keep in buckets]

    def body(_, xs):
      seqs_m, lengths_m = xs
      return None, jax.lax.switch(length_buckets.bucket_index(lengths_m, buckets), branches, seqs_m)

    seqs_k = _micro(jax.tree.map(lambda x: x[perm], seqs), k, cfg.microbatch_rows, constrain)
    lengths_k = lengths[perm].reshape(k, cfg.microbatch_rows)
    _, outs = jax.lax.scan(body, None, (seqs_k, lengths_k))
    back = length_buckets.inverse_permutation(perm)
    return tuple(None if x is None else _rows(x)[back] for x in outs)

  def row_grad_sq_norms(params, seqs):
    """‖∇_θ Σ_t log π_θ(y_t)‖² of every row over the trainable parameters [B] (VCPO's optimal
    baseline): one backward pass per row, `microbatch_rows` rows at a time under `vmap`."""
    train_params, frozen = split(params)

    def one(seqs_row):
      rows1 = jax.tree.map(lambda x: x[None], seqs_row)

      def total(p):
        out = models.split_and_score(
          graphdef, nnx.merge_state(p, frozen), rows1, compute_entropy=False, **score_kw
        )
        return masked.masked_sum(out.logprobs, rows1.completion_mask > 0)

      g = jax.grad(total)(train_params)
      return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(g))

    return jax.lax.map(one, seqs, batch_size=cfg.microbatch_rows)

  def lr_zeros(mask_m):
    """Zero observations of the objective's learning-rate scaling (None without one)."""
    if objective.lr_scaling is None:
      return None
    like = jax.ShapeDtypeStruct(mask_m.shape, jnp.float32)
    out = jax.eval_shape(objective.lr_scaling.observe, like, like, like)
    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)

  def loss_inputs(train_params, frozen, seqs_m, x_m, key, keep=None):
    """The objective's inputs on micro-batch `seqs_m`, its policy outputs from a forward pass on
    the rows cut to their first `keep` completion positions (None: all) and padded back."""
    n = seqs_m.completion_mask.shape[1]
    seqs_run = seqs_m if keep is None else length_buckets.cut(seqs_m, keep)
    policy = models.split_and_score(
      graphdef, nnx.merge_state(train_params, frozen), seqs_run, compute_entropy=True, **score_kw
    )
    temperature_logprobs = None
    if cfg.temperature_policy is not None:  # log p_φ(τ_t) of the sampled τ under the current head
      temperature_logprobs = cfg.temperature_policy.log_prob(
        policy.temperature, seqs_run.temperature
      )
    pad = lambda x: length_buckets.pad_back(x, n)
    logprobs = pad(policy.logprobs)
    return objectives.LossInputs(
      logprobs=logprobs,
      mask=seqs_m.completion_mask,
      old_logprobs=jax.lax.stop_gradient(logprobs) if fused else x_m["old"],
      sampler_logprobs=x_m["sampler"],
      ref_logprobs=x_m.get("ref"),
      advantages=x_m["adv"],
      entropy=pad(policy.entropy),
      values=pad(policy.values),
      log_z=policy.log_z,
      temperature=pad(policy.temperature),
      temperature_logprobs=pad(temperature_logprobs),
      sampler_temperature_logprobs=x_m.get("tau_sampler"),
      rewards=x_m["rewards"],
      stream=x_m.get("stream"),
      key=key,
    )

  def lr_observation(inputs):
    """The learning-rate scaling's observation of this forward pass (None without one)."""
    if objective.lr_scaling is None:
      return None
    logprobs = jax.lax.stop_gradient(inputs.logprobs)
    return objective.lr_scaling.observe(logprobs, inputs.sampler_logprobs, inputs.mask)

  def micro_loss(train_params, frozen, seqs_m, x_m, obj_state, key):
    inputs = loss_inputs(train_params, frozen, seqs_m, x_m, key)
    loss_sum, denominator, metrics, obj_state = objective.loss(obj_state, inputs)
    entropy = jax.lax.stop_gradient(inputs.entropy)
    # Observed on this forward pass: the step's own policy.
    lr_obs = lr_observation(inputs)
    return loss_sum, (denominator, metrics, obj_state, inputs.old_logprobs, entropy, lr_obs)

  def bucket_grad(keep, train_params, frozen, seqs_m, x_m, obj_state, key):
    """(gradient of the micro-batch's loss sum, its objective inputs without gradient) with the
    forward/backward on the rows cut to `keep` completion positions: one `lax.switch` branch."""

    def loss_sum(p):
      inputs = loss_inputs(p, frozen, seqs_m, x_m, key, keep)
      return objective.loss(obj_state, inputs)[0], inputs

    (_, inputs), grads = jax.value_and_grad(loss_sum, has_aux=True)(train_params)
    inputs = jax.lax.stop_gradient(dataclasses.replace(inputs, key=None))
    return grads, inputs

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def update(state: TrainState, batch: Batch, key):
    seqs, mask = batch.seqs, batch.seqs.completion_mask
    rows = mask.shape[0]
    if rows % (cfg.minibatches * cfg.microbatch_rows) or rows % cfg.group_size:
      raise ValueError(
        f"a batch of {rows} rows does not split into {cfg.minibatches} minibatches of "
        f"micro-batches of {cfg.microbatch_rows} rows and groups of {cfg.group_size}"
      )
    turn_update.check_turns(objective, batch.turns)
    buckets = buckets_lengths(objective, cfg, mask.shape[1])
    k_all = rows // cfg.microbatch_rows
    mb_rows = rows // cfg.minibatches
    k_mb = mb_rows // cfg.microbatch_rows
    per_row = {"sampler": batch.sampler_logprobs, "rewards": batch.rewards}
    if batch.stream is not None:
      per_row["stream"] = batch.stream
    if batch.temperature_logprobs is not None:
      per_row["tau_sampler"] = batch.temperature_logprobs
    old_lp = entropy = old_values = prompt_lp = None
    if not fused:
      old_lp, entropy, old_values, prompt_lp = score_all(state.params, seqs, k_all, buckets)
      per_row["old"] = old_lp
    if use_reference:
      per_row["ref"] = score_all(state.ref_params, seqs, k_all, buckets)[0]
    rewards_pg = batch.rewards.reshape(rows // cfg.group_size, cfg.group_size)
    grad_sq_norms = None
    if "grad_sq_norms" in objective.advantage.requires:
      grad_sq_norms = row_grad_sq_norms(state.params, seqs)
    prompt_mask = None
    if prompt_lp is not None:
      prompt_mask = models.prompt_token_mask(seqs.attn_mask, prompt_lp.shape[1])
    group_inputs = objectives.GroupInputs(
      mask=mask,
      old_logprobs=old_lp,
      values=old_values,
      sampler_logprobs=batch.sampler_logprobs,
      grad_sq_norms=grad_sq_norms,
      prompt_logprobs=prompt_lp,
      prompt_mask=prompt_mask,
    )

    def stack(tree):
      """[B, ...] leaves -> [M, K, rows, ...]: minibatch u's micro-batches, each split over the
      batch axes."""
      return jax.tree.map(
        lambda x: constrain(x.reshape(cfg.minibatches, k_mb, cfg.microbatch_rows, *x.shape[1:])),
        tree,
      )

    def run_steps(carry, seqs, per_row, key):
      """`epochs x minibatches` optimiser steps on `seqs` with the inputs `per_row`."""
      mb_seqs = stack((seqs, per_row))
      by_length = None
      if buckets is not None:  # the same rows, sorted by length within each minibatch
        lengths = length_buckets.completion_lengths(seqs)
        perm = length_buckets.sort_within(lengths, cfg.minibatches)
        rows_back = length_buckets.inverse_permutation(perm).reshape(cfg.minibatches, mb_rows)
        rows_back = rows_back - jnp.arange(cfg.minibatches, dtype=jnp.int32)[:, None] * mb_rows
        take = lambda tree: jax.tree.map(lambda x: x[perm], tree)
        by_length = (stack(take((seqs, per_row, lengths))), rows_back)
      one_step = functools.partial(optimizer_step, mb_seqs, by_length, key)
      if num_updates == 1:
        carry, outs = one_step(carry, jnp.int32(0))
        return carry, jax.tree.map(lambda x: x[None], outs)
      return jax.lax.scan(one_step, carry, jnp.arange(num_updates))

    def micro_key(key, u, mb, k):
      """The randomness of micro-batch k of minibatch mb in optimiser step u."""
      first_row = mb * mb_rows + k * cfg.microbatch_rows
      return jax.random.fold_in(key, 1 + u * rows + first_row)

    def scan_micro(body, acc, xs):
      """`lax.scan` over the K micro-batches (a plain call for one)."""
      if k_mb == 1:
        acc, out = body(acc, jax.tree.map(lambda x: x[0], xs))
        return acc, jax.tree.map(lambda x: x[None], out)
      return jax.lax.scan(body, acc, xs)

    def plain_micro_steps(train_params, frozen, obj_state, seqs_k, x_k, key, u, mb):
      def micro_step(acc, xs):
        grads, loss_sum, denominator, obj_state, lr_acc = acc
        seqs_m, x_m, k = xs
        key_m = micro_key(key, u, mb, k)
        (ls, (dn, metrics, obj_state, old, ent, lr_obs)), g = grad_fn(
          train_params, frozen, seqs_m, x_m, obj_state, key_m
        )
        grads = jax.tree.map(jnp.add, grads, g)
        lr_acc = jax.tree.map(jnp.add, lr_acc, lr_obs)
        weight = jnp.sum((seqs_m.completion_mask > 0).astype(jnp.float32))
        acc = (grads, loss_sum + ls, denominator + dn, obj_state, lr_acc)
        return acc, (metrics, weight, old, ent)

      zeros = jax.tree.map(jnp.zeros_like, train_params)
      acc = (zeros, jnp.float32(0.0), jnp.float32(0.0), obj_state, lr_zeros(mask[:1]))
      return scan_micro(micro_step, acc, (seqs_k, x_k, jnp.arange(k_mb)))

    def bucketed_micro_steps(train_params, frozen, obj_state, by_length_k, rows_back, key, u, mb):
      """`plain_micro_steps` with the gradient from micro-batches of rows sorted by length,
      each cut to its bucket; loss sums, denominators, state and metrics from the objective
      re-run, without gradients, on the plain micro-batches (see `rl.length_buckets`)."""
      branches = [functools.partial(bucket_grad, keep) for keep in buckets]

      def grad_step(grads, xs):
        seqs_m, x_m, lengths_m, k = xs
        branch = length_buckets.bucket_index(lengths_m, buckets)
        key_m = micro_key(key, u, mb, k)
        g, inputs = jax.lax.switch(
          branch, branches, train_params, frozen, seqs_m, x_m, obj_state, key_m
        )
        return jax.tree.map(jnp.add, grads, g), inputs

      zeros = jax.tree.map(jnp.zeros_like, train_params)
      grads, inputs_k = scan_micro(grad_step, zeros, (*by_length_k, jnp.arange(k_mb)))
      # Back to the rows of the plain micro-batches.
      inputs_k = jax.tree.map(lambda x: _rows(x)[rows_back].reshape(x.shape), inputs_k)

      def objective_step(acc, xs):
        loss_sum, denominator, obj_state, lr_acc = acc
        inputs, k = xs
        inputs = dataclasses.replace(inputs, key=micro_key(key, u, mb, k))
        ls, dn, metrics, obj_state = objective.loss(obj_state, inputs)
        lr_acc = jax.tree.map(jnp.add, lr_acc, lr_observation(inputs))
        weight = jnp.sum((inputs.mask > 0).astype(jnp.float32))
        acc = (loss_sum + ls, denominator + dn, obj_state, lr_acc)
        return acc, (metrics, weight, inputs.old_logprobs, inputs.entropy)

      acc = (jnp.float32(0.0), jnp.float32(0.0), obj_state, lr_zeros(mask[:1]))
      acc, out = scan_micro(objective_step, acc, (inputs_k, jnp.arange(k_mb)))
      return (grads, *acc), out

    def optimizer_step(mb_seqs, by_length, key, carry, u):
      params, opt_state, obj_state = carry
      mb = u % cfg.minibatches
      train_params, frozen = split(params)
      if by_length is None:
        seqs_k, x_k = jax.tree.map(lambda x: x[mb], mb_seqs)
        acc, out = plain_micro_steps(train_params, frozen, obj_state, seqs_k, x_k, key, u, mb)
      else:
        stacks, rows_back = by_length
        by_length_k = jax.tree.map(lambda x: x[mb], stacks)
        acc, out = bucketed_micro_steps(
          train_params, frozen, obj_state, by_length_k, rows_back[mb], key, u, mb
        )
      grads, loss_sum, denominator, obj_state, lr_acc = acc
      scale, scale_metrics = None, {}
      if objective.lr_scaling is not None:
        scale, scale_metrics = objective.lr_scaling.scale(lr_acc)
      params, opt_state, grad_norm, finite = _apply_gradients(
        optimizer, split, params, opt_state, grads, denominator, scale
      )
      loss = aggregation.finalize(loss_sum, denominator)
      step_out = (out, loss, grad_norm, finite, scale_metrics)
      return (params, opt_state, obj_state), step_out

    obj_state, turn_metrics = state.objective_state, {}
    if objective.turn_schedule is None:
      adv, obj_state = objective.advantages(rewards_pg, obj_state, group_inputs)
      per_row["adv"] = adv
      carry, outs = run_steps((state.params, state.opt_state, obj_state), seqs, per_row, key)
    else:  # one turn at a time, each with its own advantages and optimiser steps
      carry, outs, turn_metrics = turn_update.run(
        objective,
        cfg.max_turns,
        run_steps=run_steps,
        score_logprobs=lambda params, seqs: score_all(params, seqs, k_all)[0],
        carry=(state.params, state.opt_state, obj_state),
        seqs=seqs,
        turns_bn=batch.turns,
        rewards_pg=rewards_pg,
        group_inputs=group_inputs,
        per_row=per_row,
        before_lp=old_lp,
        key=key,
      )
    params, opt_state, obj_state = carry
    (metrics_uk, weights_uk, old_uk, ent_uk), losses, grad_norms, finite, scale_uk = outs
    if fused:  # one optimiser step: its forward pass gave the old log-probs and entropy
      old_lp, entropy = _rows(old_uk[0]), _rows(ent_uk[0])
    metrics = {f"objective/{k}": v for k, v in merge_metrics(metrics_uk, weights_uk).items()}
    metrics["loss"] = jnp.mean(losses)
    metrics["grad_norm"] = jnp.mean(grad_norms)
    for name, values in scale_uk.items():  # the learning-rate scale: mean and min over steps
      metrics[f"update/{name}"] = jnp.mean(values)
      metrics[f"update/{name}_min"] = jnp.min(values)
    metrics["update/nonfinite"] = jnp.sum(~finite).astype(jnp.float32)
    metrics.update(turn_metrics)
    metrics["entropy/mean"] = masked.masked_mean(entropy, mask > 0)
    if old_values is not None:  # the critic before this step, on returns it has not trained on
      returns = gae.monte_carlo_returns(batch.rewards, mask)
      metrics["value/explained_variance"] = gae.explained_variance(old_values, returns, mask)
      metrics["value/mean"] = masked.masked_mean(old_values, mask > 0)
    metrics.update(
      mismatch_metrics(old_lp, batch.sampler_logprobs, mask, tis_cap=cfg.max_tis_ratio)
    )
    new_state = state._replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      objective_state=objective.finalize(obj_state),
    )
    return new_state, metrics

  return update


def build_sft_update(
  graphdef, optimizer: optax.GradientTransformation, *, seq_chunk: int, trainable=nnx.Param
) -> Callable:
  """The warm-start update `sft_update(state, seqs) -> (state, metrics)`: one optimiser step on
  the token-mean negative log-likelihood of the completions (the reference solutions)."""
  split = lambda params: split_trainable(params, trainable)

  def nll(train_params, frozen, seqs):
    out = models.split_and_score(
      graphdef,
      nnx.merge_state(train_params, frozen),
      seqs,
      temperature=1.0,
      compute_entropy=False,
      seq_chunk=seq_chunk,
      vocab_chunk=None,
    )
    return -masked.masked_sum(out.logprobs, seqs.completion_mask)

  def sft_update(state: TrainState, seqs: types.Sequences):
    loss_sum, grads = jax.value_and_grad(nll)(*split(state.params), seqs)
    count = jnp.sum(seqs.completion_mask).astype(jnp.float32)
    params, opt_state, grad_norm, finite = _apply_gradients(
      optimizer, split, state.params, state.opt_state, grads, count
    )
    metrics = {
      "sft/nll": loss_sum / jnp.maximum(count, 1.0),
      "sft/grad_norm": grad_norm,
      "update/nonfinite": (~finite).astype(jnp.float32),
    }
    return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return sft_update
