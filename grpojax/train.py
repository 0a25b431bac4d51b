"""The RL run, top to bottom: mesh, data, init, `build()`, resume, loop.

One global step counter covers the whole run: steps [0, W) are supervised warm-start steps on
the task's reference solutions (W = `warm_start.steps`, 0 for a pretrained checkpoint), steps
[W, W + R) are RL steps. Every step's randomness is `fold_in(seed, step)` and its prompts come
from the prompt source, whose state is checkpointed, so a run killed anywhere and resumed from
its last checkpoint ends with the same parameters.

`build(config, mesh)` returns every compiled function of a run (the sampler, the one RL update,
the warm-start update, state initialisation, the sampler's copy of the parameters); the trainer,
the compile-only dry run and the benchmarks all call it.
"""

import contextlib
import math
import os
import sys
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
from grpojax import console, models, precision, run_records, types
from grpojax import metrics as metrics_lib
from grpojax.parallel import host_data
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import (
  critic_warmup,
  curricula,
  evaluation,
  multiturn,
  pipeline,
  pivots,
  rephrase,
  rollout,
  setup,
  source,
  spike_guard,
  step,
)

# Where the final evaluation writes summary.json and examples.jsonl, under the workdir.
FINAL_EVAL_DIR = "eval"

_SFT_KEYS = ("sft/nll", "sft/grad_norm", "time/step_s")
_RL_KEYS = (
  "reward/mean",
  "reward/accuracy",
  "loss",
  "entropy/mean",
  "response/length",
  "objective/clip_frac_high",
  "objective/approx_kl",
  "grad_norm",
  "time/step_s",
)


def optimizer(
  cfg: ml_collections.ConfigDict,
  total_steps: int,
  *,
  head_rate: float = 0.0,
  critic_warmup_steps: int | None = None,
):
  """Global-norm clipping then AdamW on a warmup + (constant | cosine) schedule.

  With `head_rate` > 0 the optimiser is partitioned: parameters under `heads/` take AdamW at
  that peak rate (same schedule shape), the rest at `cfg.learning_rate`. With
  `critic_warmup_steps` N (not None) it is the critic warm-up's optimiser (`rl.critic_warmup`:
  the same partition, each part clipped apart, the decoder held still for the first N steps
  while the heads train, its schedule spanning its own total_steps - N steps).
  """

  def schedule(peak, total=total_steps):
    warmup = min(cfg.warmup_steps, max(total - 1, 0))
    if cfg.schedule == "cosine":
      return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(total, 1), end_value=peak * cfg.final_lr_fraction
      )
    return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)], [warmup]
    )

  def adamw(peak, total=total_steps):
    return optax.adamw(schedule(peak, total), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)

  if critic_warmup_steps is not None:  # VAPO's value pretraining inside the RL update
    return critic_warmup.optimizer(
      decoder=adamw(cfg.learning_rate, total_steps - critic_warmup_steps),
      heads=adamw(head_rate or cfg.learning_rate),
      grad_clip=cfg.grad_clip,
      steps=critic_warmup_steps,
    )
  clip = optax.clip_by_global_norm(cfg.grad_clip)
  if not head_rate:
    return optax.chain(clip, adamw(cfg.learning_rate))

  def labels(params):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: "heads" if types.path_to_str(path).startswith("heads/") else "decoder",
      params,
    )

  return optax.chain(
    clip, optax.partition({"decoder": adamw(cfg.learning_rate), "heads": adamw(head_rate)}, labels)
  )


def trainable_filter(config: ml_collections.ConfigDict):
  """What the optimiser updates: LoRA adapters (and heads) when configured, else every
  parameter (frozen quantised bases are never parameters)."""
  if config.precision.lora.rank > 0:
    return nnx.Any(nnx.LoRAParam, nnx.All(nnx.Param, nnx.PathContains("heads")))
  return nnx.Param


class Program(NamedTuple):
  """The compiled pieces of a run (see the module docstring).

  Attributes:
    run: tokenizer, task, objective, initial policy (`setup.Run`).
    layout: the mesh and the training / sampling layouts.
    graphdef: the policy's graph definition.
    state_shardings: where each part of `TrainState` lives.
    init_state: params -> TrainState, built straight into its layout.
    to_sampler: params -> the sampler's copy (sampling layout, pre-quantised FP8 kernels,
      compute dtype where that changes no number).
    sampler: the jitted prefill / decode (`rollout.Sampler`).
    update: the RL update, jitted with shardings; donates the state.
    sft_update: the warm-start update, jitted likewise.
    rl_opt_init: params -> a fresh RL optimiser state (after the warm start).
    source: the prompt source.
    use_reference: whether the state holds a reference policy.
    score_prompts: (params, ids) -> `curricula.PromptScores` for a learned curriculum, or None.
    batch_shardings: where each field of an RL `step.Batch` lives (its rows split).
  """

  run: setup.Run
  layout: layout_lib.Layout
  graphdef: Any
  state_shardings: step.TrainState
  init_state: Any
  to_sampler: Any
  sampler: rollout.Sampler
  update: Any
  sft_update: Any
  rl_opt_init: Any
  source: source.PromptSource
  use_reference: bool
  score_prompts: Any = None
  batch_shardings: Any = None


def _state_shardings(layout, abstract: step.TrainState, batch_sh: step.Batch) -> step.TrainState:
  """Parameters and optimiser state in the training layout, pending rollouts split by rows like
  the batches they are, everything small replicated."""
  rep = layout.replicated
  data = jax.tree.map(lambda _: rep, abstract.data._replace(pending=None))
  if abstract.data.pending is not None:  # [k, rows, ...]
    stack = lambda s: jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(None, *s.spec))
    data = data._replace(pending=jax.tree.map(stack, batch_sh))
  return step.TrainState(
    step=rep,
    params=layout.train_shardings(abstract.params),
    opt_state=layout.train_shardings(abstract.opt_state),
    objective_state=jax.tree.map(lambda _: rep, abstract.objective_state),
    ref_params=None if abstract.ref_params is None else layout.train_shardings(abstract.ref_params),
    data=data,
  )


def _batch_like(config, batch_sh: step.Batch) -> step.Batch:
  """The shape and dtype of every field of an RL batch (`batch_sh` says which fields exist)."""
  ro = config.rollout
  rows = (ro.prompts_per_step + (ro.branch.max_pivots if ro.branch.enabled else 0)) * (
    ro.samples_per_prompt
  )
  n, length = ro.max_new_tokens, ro.max_prompt_len + ro.max_new_tokens
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
  per_token = lambda dtype: spec((rows, n), dtype)
  optional = lambda field, like: None if getattr(batch_sh, field) is None else like
  seqs = types.Sequences(
    tokens=spec((rows, length), jnp.int32),
    attn_mask=spec((rows, length), jnp.int32),
    completion_mask=per_token(jnp.int32),
    temperature=None if batch_sh.seqs.temperature is None else per_token(jnp.float32),
  )
  return step.Batch(
    seqs=seqs,
    sampler_logprobs=per_token(jnp.float32),
    rewards=spec((rows,), jnp.float32),
    stream=optional("stream", spec((rows,), jnp.int32)),
    temperature_logprobs=optional("temperature_logprobs", per_token(jnp.float32)),
    turns=optional("turns", per_token(jnp.int32)),
  )


def _sampler_copy(run, layout, config, params_like):
  """The sampler's graph and the jitted params -> sampler's copy."""
  model = run.model
  sampler_policy = precision.sampler_policy(model.precision, matmul=config.precision.rollout_matmul)
  graphdef = models.policy_graphdef(model, sampler_policy)
  convert = lambda params: precision.sampler_params(
    params, sampler_policy, compute_dtype=model.dtype
  )
  shardings = layout.sample_shardings(jax.eval_shape(convert, params_like))
  identity = sampler_policy == model.precision and (
    precision.sampler_copy_dtype(sampler_policy, model.dtype) is None
  )
  if identity:
    return graphdef, shardings, lambda params: jax.device_put(params, shardings)
  return graphdef, shardings, jax.jit(convert, out_shardings=shardings)


def build(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  *,
  workdir: str | None = None,
  abstract: bool = False,
  pin_activations: bool = True,
) -> Program:
  """Builds and jits every function of a run for `mesh` (nothing runs yet).

  Args:
    config: the run config (validated here).
    mesh: the device mesh.
    workdir: where a data file is prepared (None: no data directory).
    abstract: build the policy with shapes only (compile-only dry runs).
    pin_activations: pin each layer's output rows to the batch axes (`Decoder.
      activation_sharding`); False leaves the layout to XLA's propagation (for comparisons).
  """
  layout = layout_lib.Layout(mesh)
  setup.check_mesh_divides(config, mesh)
  # Rows stay split over the batch axes through every layer (see Decoder.activation_sharding).
  pinned = layout.data if pin_activations and layout.batch_shards > 1 else None
  run = setup.build_run(
    config, workdir, activation_sharding=pinned, abstract=abstract, layout=layout
  )
  graphdef, params0 = nnx.split(run.model)
  trainable = trainable_filter(config)
  w, r = config.warm_start.steps, config.train.steps
  warmup = config.train.critic_warmup_steps or None  # None: no critic warm-up
  partitioned = config.optim.head_learning_rate > 0 or warmup is not None
  rl_opt = optimizer(
    config.optim,
    r,
    head_rate=config.optim.head_learning_rate,
    critic_warmup_steps=warmup,
  )
  # The warm start's optimiser has the RL one's structure (the same partition, its own rates), so
  # the state keeps one shape across the phases (its shardings, checkpoints, the dry run).
  sft_opt = optimizer(
    config.warm_start,
    w,
    head_rate=config.warm_start.learning_rate if partitioned else 0.0,
    critic_warmup_steps=None if warmup is None else 0,
  )
  if config.train.spike_guard > 0:  # the same wrapper on both keeps one state shape
    guard = lambda opt: spike_guard.spike_guard(opt, factor=config.train.spike_guard)
    rl_opt, sft_opt = guard(rl_opt), guard(sft_opt)
  use_ref = "ref_logprobs" in run.objective.requires
  has_log_z = run.model.heads is not None and run.model.heads.log_z is not None
  src = curricula.from_config(
    config, num_features=run.model.config.hidden_size, has_log_z=has_log_z
  )
  # A learned curriculum scores candidate prompts with the policy (curricula.make_scorer).
  score_prompts = (
    None if config.curriculum.name == "sequential" else curricula.make_scorer(run, graphdef, config)
  )
  branch = config.rollout.branch
  # DEEP-GRPO: the pivot model's window is data-side state; K branch groups follow the P root ones.
  pivot_window = pivots.init(branch.window) if branch.enabled else None
  branch_groups = branch.max_pivots if branch.enabled else 0
  rows = lambda n: layout.rows(n)
  b = (config.rollout.prompts_per_step + branch_groups) * config.rollout.samples_per_prompt
  batch_sh = step.Batch(
    seqs=types.Sequences(rows(b), rows(b), rows(b)),
    sampler_logprobs=rows(b),
    rewards=rows(b),
    stream=rows(b) if branch.enabled else None,
    turns=rows(b) if config.env.name else None,
  )
  if rollout.temperature_policy(config) is not None:  # per-token temperatures, their densities
    batch_sh = batch_sh._replace(
      seqs=batch_sh.seqs._replace(temperature=rows(b)), temperature_logprobs=rows(b)
    )
  # A `stale` pipeline's ring of rollouts for later steps (rl.pipeline.Stale).
  pending = pipeline.pending_ring_like(config, _batch_like(config, batch_sh))
  opt_init = lambda opt, params: opt.init(step.split_trainable(params, trainable)[0])

  def make_state(params) -> step.TrainState:
    # The reference is a copy: `update` donates the parameters' buffers.
    return step.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_init(sft_opt if w > 0 else rl_opt, params),
      objective_state=run.objective.init(),
      ref_params=jax.tree.map(jnp.copy, params) if use_ref else None,
      data=source.DataState(
        source=src.init(),
        pivots=pivot_window,
        pending=None
        if pending is None
        else jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), pending),
      ),
    )

  abstract_state = jax.eval_shape(make_state, params0)
  sh = _state_shardings(layout, abstract_state, batch_sh)
  sampler_graphdef, sampler_shardings, to_sampler = _sampler_copy(run, layout, config, params0)
  sampler = rollout.make_sampler(
    sampler_graphdef,
    config,
    run.tokenizer,
    param_shardings=sampler_shardings,
    mesh=mesh,
  )
  tr, ro = config.train, config.rollout
  update_cfg = step.UpdateConfig(
    group_size=ro.samples_per_prompt,
    epochs=tr.epochs,
    minibatches=tr.minibatches,
    microbatch_rows=tr.microbatch_rows,
    temperature=ro.temperature,
    seq_chunk=tr.logprob_chunk,
    temperature_policy=rollout.temperature_policy(config),
    max_turns=config.env.max_turns,
    length_buckets=tr.length_buckets,
  )
  micro_spec = jax.sharding.PartitionSpec(None, None, *layout.data.spec)
  micro_sharding = jax.sharding.NamedSharding(mesh, micro_spec)
  constrain = (
    (lambda x: jax.lax.with_sharding_constraint(x, micro_sharding))
    if layout.batch_shards > 1
    else (lambda x: x)
  )
  update = step.build_update(
    graphdef,
    run.objective,
    rl_opt,
    update_cfg,
    trainable=trainable,
    use_reference=use_ref,
    constrain=constrain,
  )
  sft_update = step.build_sft_update(
    graphdef, sft_opt, seq_chunk=tr.logprob_chunk, trainable=trainable
  )
  rep = layout.replicated
  return Program(
    run=run,
    layout=layout,
    graphdef=graphdef,
    state_shardings=sh,
    init_state=jax.jit(make_state, out_shardings=sh),
    to_sampler=to_sampler,
    sampler=sampler,
    update=jax.jit(
      update, in_shardings=(sh, batch_sh, rep), out_shardings=(sh, rep), donate_argnums=(0,)
    ),
    sft_update=jax.jit(
      sft_update,
      in_shardings=(sh, types.Sequences(*[rows(config.warm_start.batch_size)] * 3)),
      out_shardings=(sh, rep),
      donate_argnums=(0,),
    ),
    rl_opt_init=jax.jit(lambda params: opt_init(rl_opt, params), out_shardings=sh.opt_state),
    source=src,
    use_reference=use_ref,
    score_prompts=score_prompts,
    batch_shardings=batch_sh,
  )


def _sampler_params(program: Program, config, params, rl_step: int, key):
  """The sampler's copy of the policy, with QeRL's Adaptive Quantization Noise on its RMSNorm
  scales when enabled (arXiv 2510.11696; fresh noise on the clean weights each step, never
  accumulated)."""
  sampler_params = program.to_sampler(params)
  aqn = config.precision.aqn
  if aqn.enabled:
    sigma = precision.aqn_sigma(
      rl_step,
      config.train.steps,
      num_stages=aqn.num_stages,
      sigma_start=aqn.sigma_start,
      sigma_end=aqn.sigma_end,
    )
    if sigma > 0:
      sampler_params = precision.add_norm_noise(sampler_params, jax.random.fold_in(key, 7), sigma)
  return sampler_params


def _produce(program: Program, config, params, data, rl_step: int, key) -> pipeline.Produced:
  """The rollout of RL step `rl_step` (its key `key`): sampled by the policy `params` (training
  layout), reading prompts from `data`, with the group edit and the rollout edits."""
  t0 = time.perf_counter()
  sampler_params = _sampler_params(program, config, params, rl_step, key)
  scorer = (
    None if program.score_prompts is None else (lambda ids: program.score_prompts(params, ids))
  )
  sample_groups = multiturn.sample_groups if config.env.name else rollout.sample_groups
  ro = sample_groups(
    program.run,
    program.layout,
    program.sampler,
    sampler_params,
    config,
    curricula.bind(program.source, scorer),
    data,
    jax.random.fold_in(key, 0),
    rollout.group_edit(config),
  )
  if config.rollout.rephrase.enabled:  # RePO: verified restatements replace hard groups' worst rows
    rephrase_key = jax.random.fold_in(key, 2**31 - 1)  # no micro-batch of the update uses it
    ro = rephrase.inject(
      program.run, program.layout, program.sampler, sampler_params, config, ro, rephrase_key
    )
  if config.rollout.branch.enabled:  # DEEP-GRPO: failed chains branch at a pivot
    branch_key = jax.random.fold_in(key, 2**31 - 2)  # no micro-batch of the update uses it
    ro = pivots.extend(
      program.run, program.layout, program.sampler, sampler_params, config, ro, branch_key
    )
  del sampler_params
  logs = dict(ro.metrics)
  logs.update(curricula.metrics(ro.data.source))
  elapsed = time.perf_counter() - t0
  tokens = float(np.sum(host_data.to_numpy(ro.batch.seqs.completion_mask)))
  logs["time/produce_s"], logs["time/tokens_per_s"] = elapsed, tokens / max(elapsed, 1e-9)
  return pipeline.Produced(batch=ro.batch, data=ro.data, metrics=logs)


def _rl_step(program: Program, config, state: step.TrainState, key, rl_step: int, pipe):
  """One RL step: the rollout the pipeline hands out for it, then the update.

  Returns (state, logs, finite).
  """
  t0 = time.perf_counter()
  produced, state = pipe.rollout(state, rl_step)
  t1 = time.perf_counter()
  state, metrics = program.update(state, produced.batch, key)
  nonfinite = float(metrics["update/nonfinite"])  # waits for the update
  t2 = time.perf_counter()
  pipe.published(state, rl_step + 1)
  logs = dict(produced.metrics)
  logs.update(pipeline.staleness_metrics(produced.version, rl_step))
  logs.update({k: float(v) for k, v in metrics.items()})
  logs["time/sample_s"], logs["time/learn_s"] = t1 - t0, t2 - t1
  return state, logs, nonfinite == 0


def _sft_step(program: Program, config, state: step.TrainState):
  """One supervised warm-start step on the next reference solutions."""
  bs = config.warm_start.batch_size
  ids, src_state = program.source.next(state.data.source, bs)
  sft_sequences = multiturn.sft_sequences if config.env.name else rollout.sft_sequences
  seqs = sft_sequences(program.run, program.layout, config, host_data.to_numpy(ids))
  data = state.data._replace(source=jax.tree.map(program.layout.put_replicated, src_state))
  state, metrics = program.sft_update(state._replace(data=data), seqs)
  logs = {k: float(v) for k, v in metrics.items()}
  return state, logs, logs.pop("update/nonfinite") == 0


def _banner(config, workdir: str, model) -> str:
  """What the run will do, before the first step: phases, recipe, model size, devices, workdir."""
  n_params = sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  devices = jax.devices()
  return (
    f"run: {config.warm_start.steps} warm-start steps then {config.train.steps} RL steps, "
    f"recipe {config.objective.recipe!r}, {n_params:,} parameters, {len(devices)} "
    f"{devices[0].platform} device(s) in {jax.process_count()} process(es), workdir {workdir}"
  )


def _spikes_since(before: int | None, state: step.TrainState) -> int:
  """Updates the spike guard skipped since it counted `before` (0 without a guard)."""
  return 0 if before is None else spike_guard.spikes(state.opt_state) - before


def _skip_reason(logs: dict[str, float], finite: bool, spike_factor: float) -> str:
  """Why a step's update was skipped, naming only the offending metrics."""
  if not finite:
    bad = [f"{k}={v}" for k, v in logs.items() if not math.isfinite(v)]
    return "non-finite " + (", ".join(bad) or "gradient")
  norm = logs.get("grad_norm", logs.get("sft/grad_norm", float("nan")))
  return f"gradient-norm spike (grad_norm={norm:.4g} > {spike_factor:g} x the recent median)"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs (or resumes) the configured run in `workdir`.

  In a multi-process run every process calls this with the same config; each reads and
  verifies its own rows, and process 0 alone writes metrics, plots and the exported policy
  (checkpoints are written by orbax, every process its own shards).

  Returns:
    The final held-out evaluation metrics.
  """
  setup.validate_config(config)
  mesh = mesh_lib.mesh_from_config(config.mesh)
  is_main = jax.process_index() == 0
  if is_main and os.path.exists(os.path.join(workdir, checkpoint_lib.LOCK_NAME)):
    with checkpoint_lib.lock_workdir(workdir):  # a run in progress: refuse before building
      pass
  # The workdir is made only once the config, the mesh, the policy and the data (prepared into
  # workdir/data, which tfds creates itself) are known good: a failed start leaves no empty one.
  program = build(config, mesh, workdir=workdir)
  os.makedirs(workdir, exist_ok=True)
  # One run per workdir (a second would delete this one's checkpoints); on every way out, the
  # checkpoint save in flight is finished first, never left half-written.
  with checkpoint_lib.lock_workdir(workdir) if is_main else contextlib.nullcontext():
    with checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      max_to_keep=config.checkpoint.max_to_keep,
      min_free_bytes=int(config.checkpoint.min_free_gb * 2**30),
    ) as ckpt:
      return _train(config, workdir, mesh, program, ckpt, is_main)


def _train(config, workdir, mesh, program, ckpt, is_main) -> dict[str, float]:
  """`train_and_evaluate` once started: resume, the loop, the final evaluation, the export."""
  run, layout = program.run, program.layout
  w, r = config.warm_start.steps, config.train.steps
  params0 = nnx.state(run.model)
  target = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    jax.eval_shape(program.init_state, params0),
    program.state_shardings,
  )
  restored = ckpt.restore_latest_good(target)
  if restored:
    state, extra = restored.state, restored.extra
  else:  # built straight into its layout (every process holds the same initial parameters)
    state, extra = program.init_state(params0), {}
  del params0
  start = int(state.step)
  log = print if is_main else (lambda *a, **k: None)
  log(_banner(config, workdir, run.model), flush=True)
  if start:
    log(f"resumed from step {start} in {workdir}", flush=True)
  writer = metrics_lib.NullWriter()
  if is_main:  # run_info.jsonl gains a line per start: a resume with another config shows
    info = run_records.record_run_start(workdir, config, start_step=start)
    writer = metrics_lib.MetricWriter(
      workdir,
      purge_step=start + 1 if start else None,
      writers=config.metrics.writers,
      wandb_project=config.metrics.wandb_project,
      wandb_name=config.metrics.wandb_name,
      run_config=info["config"],
    )
  seed_key = jax.random.key(config.seed)
  eval_key = jax.random.fold_in(seed_key, 2**31 - 1)
  warm_eval = extra.get("warm_start_eval")
  bad_in_a_row = 0
  # RL step s's rollout: its own step's key, whichever policy version samples it (rl.pipeline).
  produce = lambda params, data, s: _produce(
    program, config, params, data, s, jax.random.fold_in(seed_key, w + s)
  )
  pipe = pipeline.build(
    config,
    produce,
    total_steps=r,
    batch_shardings=program.batch_shardings,
    copy=layout_lib.copy_tree,
  )
  pipe.restore(extra)

  def evaluate(tag: str, step_: int, report: str = "") -> dict[str, float]:
    """Logs the held-out metrics; with `report`, also writes every example's record there."""
    params = program.to_sampler(state.params)
    evaluate_fn = multiturn.evaluate if config.env.name else rollout.evaluate
    result = evaluate_fn(run, layout, program.sampler, params, config, eval_key)
    res = result.metrics
    writer.write_scalars(step_, {f"eval/{k}": v for k, v in res.items()})
    log(f"[eval: {tag}] " + console.format_console_line(step_, res), flush=True)
    if report and is_main:
      summary = {"step": step_, "examples": len(result.records), "samples": config.eval.samples}
      evaluation.write_report(
        report, {**summary, "k": config.eval.pass_k, "metrics": res}, result.records
      )
    return res

  if w == 0 and start == 0:
    warm_eval = evaluate("initial policy", 0)
  # Without a progress bar (logs, CI, clusters), a progress line with the ETA every log_every.
  show_eta = not sys.stderr.isatty()
  t_start = time.perf_counter()
  try:
    for step_ in console.progress(range(start, w + r), "train", enabled=None if is_main else False):
      t0 = time.perf_counter()
      key = jax.random.fold_in(seed_key, step_)
      spikes0 = spike_guard.spikes(state.opt_state)  # read before the update donates the state
      if step_ < w:  # supervised warm start on the task's reference solutions
        state, logs, finite = _sft_step(program, config, state)
        spiked = _spikes_since(spikes0, state)
        if step_ + 1 == w:  # RL starts from the warm-started policy, with a fresh optimiser
          state = state._replace(
            opt_state=program.rl_opt_init(state.params),
            ref_params=layout_lib.copy_tree(state.params) if program.use_reference else None,
          )
      else:
        state, logs, finite = _rl_step(program, config, state, key, step_ - w, pipe)
        spiked = _spikes_since(spikes0, state)
      logs["time/step_s"] = time.perf_counter() - t0
      if spikes0 is not None:
        logs["update/spikes"] = float(spiked)
      done = step_ + 1  # steps are named 1-based, in warnings as on the console
      if finite and not spiked:
        bad_in_a_row = 0
      else:
        bad_in_a_row += 1
        reason = _skip_reason(logs, finite, config.train.spike_guard)
        logging.warning("step %d: %s; update skipped (%d in a row)", done, reason, bad_in_a_row)
        if bad_in_a_row >= config.train.max_bad_steps:
          raise FloatingPointError(
            f"step {done}: {bad_in_a_row} updates in a row skipped (train.max_bad_steps), the "
            f"last for {reason}"
          )
      if done % config.log_every == 0 or done == w + r:
        writer.write_scalars(done, logs)
        keys = _SFT_KEYS if step_ < w else [k for k in _RL_KEYS if k in logs]
        log(console.format_console_line(done, logs, keys=keys), flush=True)
        if show_eta:
          elapsed = time.perf_counter() - t_start
          log(console.eta_line(done, w + r, since=start, elapsed_s=elapsed), flush=True)
      if done == w:
        warm_eval = evaluate("after warm start", done)
        if r:
          log(f"--- warm start done at step {w}; RL steps {w + 1} to {w + r} ---", flush=True)
      elif done > w and (done - w) % config.eval.every == 0 and done != w + r:
        evaluate("during RL", done)
      if done % config.checkpoint.every == 0 or done == w + r:
        extra = {"warm_start_eval": warm_eval, **pipe.checkpoint_extra()}
        ckpt.save(done, state, extra, force=True)
  finally:  # an async pipeline's producer thread stops on every way out
    pipe.close()
  if r and start < w + r:
    log(pipeline.histogram_line(pipe.histogram), flush=True)
  ckpt.wait()
  ckpt.close()

  # Every held-out example's completions and scores (pass@k for any k, accuracy by example).
  final = evaluate("final", w + r, report=os.path.join(workdir, FINAL_EVAL_DIR))
  # The trained policy as a Hugging Face checkpoint: loads in transformers and vLLM.
  host_params = jax.tree.map(host_data.to_numpy, state.params)
  if is_main:  # LoRA adapters are merged into full weights (models.export_params)
    models.save_pretrained(
      nnx.merge(program.graphdef, host_params),
      os.path.join(workdir, "policy"),
      overwrite=True,
      extra_files=setup.export_files(config, run.tokenizer),  # served with its tokenizer
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
      title=os.path.basename(os.path.normpath(workdir)),
      markers={"RL starts": w} if 0 < w < w + r else None,
    )
    log(
      f"wrote the policy to {os.path.join(workdir, 'policy')}, curves to "
      f"{os.path.join(workdir, 'curves.png')}, metrics to {', '.join(writer.destinations)}",
      flush=True,
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
