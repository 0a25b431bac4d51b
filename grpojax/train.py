"""The RL run, top to bottom: warm start, then rollout -> reward -> objective -> update, repeated.

One global step counter covers the whole run: steps [0, W) are supervised warm-start steps on
the task's reference solutions (W = `warm_start.steps`, 0 for a pretrained checkpoint), steps
[W, W + R) are RL steps. Every step's randomness is `fold_in(seed, step)` and its data is the
next slice of the task's deterministic example stream, whose position is checkpointed, so a run
killed anywhere and resumed from its last checkpoint ends with the same parameters.
"""

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from grpojax import checkpoint as checkpoint_lib
from grpojax import metrics as metrics_lib
from grpojax import models, objectives
from grpojax.objectives import compose, masked
from grpojax.parallel import host_data
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.parallel import steps as parallel_steps
from grpojax.precision import noise
from grpojax.precision import policy as precision_policy
from grpojax.rl import rollout, setup, steps

_SFT_KEYS = ("sft/nll", "sft/grad_norm", "time/step_s")
_RL_KEYS = (
  "reward/mean",
  "reward/accuracy",
  "loss",
  "entropy/mean",
  "response/length",
  "objective/clip_frac_high",
  "objective/ppo_kl",
  "grad_norm",
  "time/step_s",
)


class TrainState(NamedTuple):
  """Everything a resumed run needs, as one checkpointable pytree."""

  step: jax.Array
  params: Any
  opt_state: Any
  objective_state: Any
  ref_params: Any
  data_position: jax.Array


def _optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW on a warmup + (constant | cosine) schedule."""
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  if cfg.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
      0.0,
      cfg.learning_rate,
      warmup,
      max(total_steps, 1),
      end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )
  else:
    lr = optax.join_schedules(
      [
        optax.linear_schedule(0.0, cfg.learning_rate, max(warmup, 1)),
        optax.constant_schedule(cfg.learning_rate),
      ],
      [warmup],
    )
  return optax.chain(
    optax.clip_by_global_norm(cfg.grad_clip),
    optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
  )


def _micro_slice(layout, tree, start: int, rows: int):
  """Rows [start, start + rows) of every leaf, split over the batch axes."""
  sharding = layout.rows(rows)
  return jax.tree.map(lambda x: jax.device_put(x[start : start + rows], sharding), tree)


def _concat_micro(layout, fn, seqs, micro_rows):
  """Applies `fn` to row slices of `seqs` and concatenates each output along rows."""
  rows = seqs.tokens.shape[0]
  outs = [fn(_micro_slice(layout, seqs, i, micro_rows)) for i in range(0, rows, micro_rows)]
  cat = lambda *xs: (
    None if xs[0] is None else jax.device_put(jnp.concatenate(xs), layout.rows(rows))
  )
  return jax.tree.map(cat, *outs, is_leaf=lambda x: x is None)


def rollout_copier(model, layout):
  """The sampler's graph, and params -> the sampler's copy of them.

  The copy is in the sampling layout (the same arrays when nothing changes), with FP8 kernels
  quantised once (`precision.policy.rollout_converter`) and stored in the compute dtype when
  that changes no number of the rollout (`precision.policy.rollout_copy_dtype`: half the
  memory under bf16 compute). The rollout it produces is bit-identical to sampling the
  trainer's parameters directly.
  """
  graphdef, convert = precision_policy.rollout_converter(model)
  dtype = precision_policy.rollout_copy_dtype(model)
  identity = graphdef == nnx.split(model)[0]

  def copy(params):
    params = convert(params)
    return params if dtype is None else precision_policy.cast_floating_params(params, dtype)

  shardings = layout.sample_shardings(jax.eval_shape(copy, nnx.split(model)[1]))
  if identity and dtype is None:
    return graphdef, lambda params: jax.device_put(params, shardings)
  return graphdef, jax.jit(copy, out_shardings=shardings)


def _rollout_params(config, state: TrainState, to_rollout, rl_step: int, key):
  """The sampler's copy of the policy (`rollout_copier`), with QeRL's Adaptive Quantization
  Noise on its RMSNorm scales when enabled (arXiv 2510.11696; fresh noise on the clean weights
  each step, never accumulated)."""
  params = to_rollout(state.params)
  aqn = config.precision.aqn
  if aqn.enabled:
    sigma = noise.aqn_sigma(
      rl_step,
      config.train.steps,
      num_stages=aqn.num_stages,
      sigma_start=aqn.sigma_start,
      sigma_end=aqn.sigma_end,
    )
    if sigma > 0:
      params = noise.add_norm_noise(params, jax.random.fold_in(key, 7), sigma)
  return params


def uses_fused_old_logprobs(config: ml_collections.ConfigDict) -> bool:
  """Whether the old log-probs come out of the update's own forward pass (`grad_on_policy`):
  exact with one update per rollout. ProGRPO's advantages need them before any update."""
  tr = config.train
  return tr.epochs == 1 and tr.minibatches == 1 and config.objective.advantage.name != "progrpo"


def _rl_step(
  run,
  layout,
  config,
  fns,
  state: TrainState,
  key,
  use_ref: bool,
  to_rollout,
  sample_graphdef,
  rl_step: int,
):
  """One RL step: sample, score, advantages, then epochs x minibatches of updates."""
  ro, tr = config.rollout, config.train
  p, g = ro.prompts_per_step, ro.samples_per_prompt
  t0 = time.perf_counter()
  sample_params = _rollout_params(config, state, to_rollout, rl_step, key)
  ro_batch, position = rollout.sample_groups(
    run,
    layout,
    sample_graphdef,
    sample_params,
    config,
    int(state.data_position),
    jax.random.fold_in(key, 0),
  )
  del sample_params
  seqs = ro_batch.seqs
  t1 = time.perf_counter()
  on_policy = uses_fused_old_logprobs(config)
  old_lp, entropy = (
    (None, None)
    if on_policy
    else _concat_micro(layout, lambda s: fns.score(state.params, s), seqs, tr.microbatch_rows)
  )
  ref_lp = (
    _concat_micro(layout, lambda s: fns.score(state.ref_params, s)[0], seqs, tr.microbatch_rows)
    if use_ref
    else None
  )
  mask = seqs.completion_mask
  adv_pg = run.objective.advantages(
    layout.put_replicated(ro_batch.rewards.reshape(p, g)), logprobs_bt=old_lp, mask_bt=mask
  )
  n = mask.shape[1]
  rows_sharding = layout.rows(p * g)
  batch = objectives.LossBatch(
    old_logprobs=jnp.zeros_like(mask, jnp.float32) if on_policy else old_lp,
    sampler_logprobs=ro_batch.sampler_logprobs,
    ref_logprobs=ref_lp,
    advantages=jax.device_put(
      jnp.broadcast_to(adv_pg.reshape(-1, 1), mask.shape).astype(jnp.float32), rows_sharding
    ),
    mask=mask,
    rewards=layout.put_rows(ro_batch.rewards),
    max_len=n,
  )
  t2 = time.perf_counter()
  params, opt_state = state.params, state.opt_state
  # Every micro-batch sees the step's incoming objective state (a fixed KL coefficient within
  # the step, so the sums stay exact); the states they return are averaged.
  obj_in = state.objective_state
  per_micro, new_states, grad_norms, losses, all_finite = [], [], [], [], True
  fused_old, fused_entropy = [], []
  rows = p * g
  mb_rows = rows // tr.minibatches
  for epoch in range(tr.epochs):
    for mb in range(tr.minibatches):
      grad_sum, loss_sum, denom = None, 0.0, 0.0
      for start in range(mb * mb_rows, (mb + 1) * mb_rows, tr.microbatch_rows):
        micro_key = jax.random.fold_in(key, 1 + (epoch * tr.minibatches + mb) * rows + start)
        args = (
          params,
          _micro_slice(layout, seqs, start, tr.microbatch_rows),
          _micro_slice(layout, batch, start, tr.microbatch_rows),
          obj_in,
          micro_key,
        )
        if on_policy:
          gr, ls, dn, metrics, new_obj, old_mb, ent_mb = fns.grad_on_policy(*args)
          fused_old.append(old_mb)
          fused_entropy.append(ent_mb)
        else:
          gr, ls, dn, metrics, new_obj = fns.grad(*args)
        grad_sum = gr if grad_sum is None else jax.tree.map(jnp.add, grad_sum, gr)
        loss_sum, denom = loss_sum + ls, denom + dn
        per_micro.append(metrics)
        new_states.append(new_obj)
      params, opt_state, gnorm, finite = fns.update(params, opt_state, grad_sum, denom)
      grad_norms.append(float(gnorm))
      losses.append(float(loss_sum / jnp.maximum(denom, 1e-8)))
      all_finite &= bool(finite)
  stack = lambda xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)
  merged_metrics, obj_state = compose.merge_micro_batches(stack(per_micro), stack(new_states))
  t3 = time.perf_counter()
  if on_policy:
    old_lp = jax.device_put(jnp.concatenate(fused_old), rows_sharding)
    entropy = jax.device_put(jnp.concatenate(fused_entropy), rows_sharding)
  logs = dict(ro_batch.metrics)
  logs.update({f"objective/{k}": float(v) for k, v in merged_metrics.items()})
  logs["loss"] = float(np.mean(losses))
  logs["grad_norm"] = float(np.mean(grad_norms))
  logs["entropy/mean"] = float(masked.masked_mean(entropy, mask))
  logs.update(mismatch_metrics(old_lp, ro_batch.sampler_logprobs, mask))
  logs["time/sample_s"], logs["time/score_s"], logs["time/learn_s"] = t1 - t0, t2 - t1, t3 - t2
  logs["time/tokens_per_s"] = float(jnp.sum(seqs.completion_mask)) / max(t1 - t0, 1e-9)
  state = state._replace(
    step=state.step + 1,
    params=params,
    opt_state=opt_state,
    objective_state=obj_state,
    data_position=layout.put_replicated(np.int32(position)),
  )
  return state, logs, all_finite


def _state_shardings(layout, abstract_state: TrainState) -> TrainState:
  """Where each part of the state lives: parameters and optimiser state in the training layout,
  everything small replicated."""
  rep = layout.replicated
  return TrainState(
    step=rep,
    params=layout.train_shardings(abstract_state.params),
    opt_state=layout.train_shardings(abstract_state.opt_state),
    objective_state=jax.tree.map(lambda _: rep, abstract_state.objective_state),
    ref_params=(
      None
      if abstract_state.ref_params is None
      else layout.train_shardings(abstract_state.ref_params)
    ),
    data_position=rep,
  )


def check_mesh_divides(config: ml_collections.ConfigDict, layout) -> None:
  """The trainer's row counts must split evenly over the batch axes; errors name the field."""
  shards = layout.batch_shards
  rows = config.rollout.prompts_per_step * config.rollout.samples_per_prompt
  for field, value in (
    ("train.microbatch_rows", config.train.microbatch_rows),
    ("rollout.prompts_per_step x samples_per_prompt", rows),
  ):
    if value % shards:
      raise ValueError(
        f"config.{field} = {value} does not split over the {shards} devices of the batch axes "
        f"(config.mesh: {dict(layout.mesh.shape)}); make it a multiple of {shards}"
      )


def mismatch_metrics(trainer_lp, sampler_lp, mask, tis_cap: float = 2.0) -> dict[str, float]:
  """How far the sampler's log-probs are from the trainer's on the same tokens.

  Returns:
    mean |Δ log p|, the k3 estimate of KL(sampler || trainer) per token, and the fraction of
    tokens whose ratio π_trainer/π_sampler lies outside [1/tis_cap, tis_cap] (what TIS/MIS
    corrections with that cap would clip).
  """
  delta = trainer_lp - sampler_lp
  log_r = jnp.clip(delta, -20.0, 20.0)
  k3 = jnp.exp(log_r) - 1.0 - log_r
  beyond = (jnp.abs(delta) > np.log(tis_cap)).astype(jnp.float32)
  return {
    "mismatch/abs_logprob": float(masked.masked_mean(jnp.abs(delta), mask)),
    "mismatch/k3_kl": float(masked.masked_mean(k3, mask)),
    "mismatch/beyond_tis_frac": float(masked.masked_mean(beyond, mask)),
  }


def _rollout_model(model, config):
  """The model whose graph the sampler runs: the trainer's, or (naive FP8 rollout) a copy with
  another matmul precision over the same parameters."""
  matmul = config.precision.rollout_matmul
  if matmul in ("same", config.precision.matmul):
    return model
  rollout_model = nnx.clone(model)
  precision_policy.set_matmul(rollout_model, matmul)
  return rollout_model


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs (or resumes) the configured run in `workdir`.

  In a multi-process run every process calls this with the same config; each reads and
  verifies its own rows, and process 0 alone writes metrics, plots and the exported policy
  (checkpoints are written by orbax, every process its own shards).

  Returns:
    The final held-out evaluation metrics.
  """
  setup.validate_config(config)
  layout = layout_lib.Layout(mesh_lib.mesh_from_config(config.mesh))
  check_mesh_divides(config, layout)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  run = setup.build_run(config, workdir)
  if layout.batch_shards > 1:  # rows stay split over the batch axes through every layer
    run.model.activation_sharding = layout.data
  w, r = config.warm_start.steps, config.train.steps
  sft_opt, rl_opt = _optimizer(config.warm_start, w), _optimizer(config.optim, r)
  graphdef, params0 = nnx.split(run.model)
  trainable = setup.trainable_filter(config)
  use_ref = setup.needs_reference(config)
  first_opt = sft_opt if w > 0 else rl_opt
  opt_init = lambda opt, params: opt.init(steps.split_trainable(params, trainable)[0])

  def make_state(params) -> TrainState:
    # The reference is a copy: `update` donates the parameters' buffers.
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_init(first_opt, params),
      objective_state=run.objective.init(),
      ref_params=jax.tree.map(jnp.copy, params) if use_ref else None,
      data_position=jnp.zeros((), jnp.int32),
    )

  abstract = jax.eval_shape(make_state, params0)
  shardings = _state_shardings(layout, abstract)
  train_shardings = shardings.params
  sample_graphdef, to_rollout = rollout_copier(_rollout_model(run.model, config), layout)
  opt_shardings = shardings.opt_state
  ckpt = checkpoint_lib.Checkpointer(
    os.path.join(workdir, "checkpoints"), max_to_keep=config.checkpoint.max_to_keep
  )
  target = jax.tree.map(
    lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings
  )
  restored = ckpt.restore_latest_good(target)
  if restored:
    state, extra = restored.state, restored.extra
  else:  # built straight into its layout (every process holds the same initial parameters)
    state = jax.jit(make_state, out_shardings=shardings)(params0)
    extra = {}
  del params0
  start = int(state.step)
  log = print if is_main else (lambda *a, **k: None)
  if start:
    log(f"resumed from step {start} in {workdir}", flush=True)
  writer = (
    metrics_lib.MetricWriter(workdir, purge_step=start + 1 if start else None)
    if is_main
    else metrics_lib.NullWriter()
  )
  chunk = config.train.logprob_chunk
  build = lambda opt, **kw: parallel_steps.sharded_steps(
    steps.build(
      graphdef, run.objective, opt, seq_chunk=chunk, vocab_chunk=None, trainable=trainable, **kw
    ),
    mesh=layout.mesh,
    param_shardings=train_shardings,
    opt_shardings=opt_shardings,
    trainable=trainable,
  )
  fns = build(rl_opt, temperature=config.rollout.temperature, compute_entropy=True)
  sft_fns = build(sft_opt, temperature=1.0, compute_entropy=False)
  seed_key = jax.random.key(config.seed)
  eval_key = jax.random.fold_in(seed_key, 2**31 - 1)
  warm_eval = extra.get("warm_start_eval")
  bad_in_a_row = 0

  def evaluate(tag: str, step: int) -> dict[str, float]:
    params = to_rollout(state.params)
    res = rollout.evaluate(run, layout, sample_graphdef, params, config, eval_key)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in res.items()})
    log(f"[eval: {tag}] " + metrics_lib.format_console_line(step, res), flush=True)
    return res

  if w == 0 and start == 0:
    warm_eval = evaluate("initial policy", 0)
  for step in metrics_lib.progress(
    range(start, w + r), "train", enabled=None if is_main else False
  ):
    t0 = time.perf_counter()
    key = jax.random.fold_in(seed_key, step)
    if step < w:  # supervised warm start on the task's reference solutions
      bs = config.warm_start.batch_size
      seqs = rollout.sft_sequences(run, layout, config, int(state.data_position), bs)
      g, loss_sum, count = sft_fns.sft_grad(state.params, seqs)
      params, opt_state, gnorm, finite = sft_fns.update(state.params, state.opt_state, g, count)
      state = state._replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        data_position=state.data_position + bs,
      )
      logs = {"sft/nll": float(loss_sum / max(float(count), 1.0)), "sft/grad_norm": float(gnorm)}
      finite = bool(finite)
      if step + 1 == w:  # RL starts from the warm-started policy, with a fresh optimiser
        state = state._replace(
          opt_state=jax.jit(lambda p: opt_init(rl_opt, p), out_shardings=opt_shardings)(
            state.params
          ),
          ref_params=layout_lib.copy_tree(state.params) if use_ref else None,
        )
    else:
      state, logs, finite = _rl_step(
        run, layout, config, fns, state, key, use_ref, to_rollout, sample_graphdef, step - w
      )
    logs["time/step_s"] = time.perf_counter() - t0
    if finite:
      bad_in_a_row = 0
    else:
      bad_in_a_row += 1
      logging.warning(
        "step %d: non-finite gradient, update skipped (%d in a row): %s", step, bad_in_a_row, logs
      )
      if bad_in_a_row >= config.train.max_bad_steps:
        raise FloatingPointError(
          f"step {step}: {bad_in_a_row} consecutive non-finite "
          f"gradients (train.max_bad_steps); last metrics: {logs}"
        )
    done = step + 1
    if done % config.log_every == 0 or done == w + r:
      writer.write_scalars(done, logs)
      keys = _SFT_KEYS if step < w else [k for k in _RL_KEYS if k in logs]
      log(metrics_lib.format_console_line(done, logs, keys=keys), flush=True)
    if done == w:
      warm_eval = evaluate("after warm start", done)
    elif done > w and (done - w) % config.eval.every == 0 and done != w + r:
      evaluate("during RL", done)
    if done % config.checkpoint.every == 0 or done == w + r:
      ckpt.save(done, state, {"warm_start_eval": warm_eval}, force=True)
  ckpt.wait()
  ckpt.close()

  final = evaluate("final", w + r)
  # The trained policy as a Hugging Face checkpoint: loads in transformers and vLLM.
  host_params = jax.tree.map(host_data.to_numpy, state.params)
  if is_main:  # LoRA adapters are merged into full weights (precision.policy.merged_model)
    models.save_pretrained(
      precision_policy.merged_model(nnx.merge(graphdef, host_params)),
      os.path.join(workdir, "policy"),
      overwrite=True,
    )
    writer.flush()
    metrics_lib.plot_curves(
      writer.history_path,
      os.path.join(workdir, "curves.png"),
      keys=[
        "sft/nll",
        "reward/mean",
        "eval/greedy_accuracy",
        "eval/pass@" + str(config.eval.pass_k),
        "entropy/mean",
        "response/length",
      ],
    )
  writer.close()
  k = config.eval.pass_k
  warm = (warm_eval or {}).get("greedy_accuracy", float("nan"))
  log(
    f"held-out accuracy: warm start {100 * warm:.1f}%, after RL "
    f"{100 * final['greedy_accuracy']:.1f}%, pass@{k} {100 * final[f'pass@{k}']:.1f}%",
    flush=True,
  )
  return final
