"""Compile-only dry run: lowers and compiles a run's step functions without any weights or data.

  python -m grpojax.dry_run --config=configs/default.py
  python -m grpojax.dry_run --config=configs/default.py:local --config.model.num_layers=2
  python -m grpojax.dry_run --config=configs/default.py --config.mesh.data=1 --config.mesh.fsdp=-1

The policy is built abstractly (`nnx.eval_shape`) from the config's `model.*` shape fields, or
from `model.checkpoint`'s `config.json` alone (no safetensors are read), so a 70B policy's step
functions compile on a laptop-sized host as long as XLA can compile them. Every input is a
`jax.ShapeDtypeStruct` of the configured shapes:

  sampler  `sampling.generate_padded` on [P, Tp] prompts, P x G rows of Tp + N tokens
  score    `steps.build(...).score`, the old-policy log-prob forward on [M, Tp + N] rows
  grad     `steps.build(...).grad`, one micro-batch's loss gradient on [M, Tp + N] rows
  update   `steps.build(...).update`, clipping + AdamW on the parameter pytree

with P = rollout.prompts_per_step, G = rollout.samples_per_prompt, Tp = rollout.max_prompt_len,
N = rollout.max_new_tokens and M = train.microbatch_rows (what the trainer feeds `grad`).

Sharding. The executables are compiled for a mesh: `config.mesh` over `jax.devices()`, or the
`mesh` argument. score, grad and update take the training layout (`parallel.rules.DEFAULT_RULES`:
FSDP over "fsdp", tensor parallelism over "tensor") through `parallel.steps.sharded_steps`, which
pins in/out shardings and donates the parameters and optimiser state to `update`; the sampler
takes the sampling layout (`SAMPLE_RULES`: tensor parallel only, parameters whole on every data
and fsdp device). Batches (prompts, rows, loss inputs) are split over the batch axes
data x fsdp, so P, P·G and M must be divisible by data·fsdp; a mesh that does not divide them
is refused with a ValueError before anything compiles. For a mesh larger than the host, fake
devices do: `XLA_FLAGS=--xla_force_host_platform_device_count=32` (see experiments/scaling.py).

Memory. Each executable reports `compiled.memory_analysis()`: argument, output, temp, alias and
generated-code bytes. For a sharded executable these are PER DEVICE (the SPMD program of one
device): with fsdp=8 the update step's argument bytes are about 1/8 of the single-device ones
(tests/test_dry_run.py checks this). `peak_bytes` = argument + output + temp - alias is one
executable's high-water mark while it runs. Arrays also live BETWEEN executables, so the result
adds a per-device `resident` estimate, computed from the shardings rather than from XLA:

  params       training parameters (training layout)
  opt_state    optimiser state (training layout; AdamW: two moments of the parameters)
  grad_accum   the gradient sum over a minibatch's micro-batches (training layout)
  ref_params   frozen reference policy, only when objective.kl.coef > 0 (training layout)
  sampler_params  the sampler's copy of the parameters, only when its layout differs from
               the training layout (fsdp > 1) or it is stored in a narrower compute dtype
               (bf16 compute: `precision.policy.rollout_copy_dtype`); otherwise the sampler
               reads `params`

and, per executable, `transient_bytes` = peak minus the resident arrays among its arguments.
`step_peak_bytes` = resident total + the largest transient is the per-device estimate of a whole
RL step. It is conservative (grad_accum does not exist during sampling) and ignores the
allocator's fragmentation.

Caveats. XLA:CPU's buffer assignment, fusion and layouts differ from TPU's and GPU's, so temp
bytes (attention scores, activations, the sampler's loop buffers) are indicative only; argument
and resident bytes follow from shapes and shardings and carry over. The CPU backend reports 0
bytes of generated code, and XLA counts a `while_loop` body once, so the sampler's flops are the
prefill plus ONE decode step, not `max_new_tokens` of them.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from grpojax import models, objectives, sampling, train
from grpojax.models import hf_checkpoint
from grpojax.parallel import mesh as mesh_lib
from grpojax.parallel import rules as rules_lib
from grpojax.parallel import steps as parallel_steps
from grpojax.precision import policy as precision_policy
from grpojax.rl import sequences, setup, steps

_MEMORY_FIELDS = (
  ("argument", "argument_size_in_bytes"),
  ("output", "output_size_in_bytes"),
  ("temp", "temp_size_in_bytes"),
  ("code", "generated_code_size_in_bytes"),
  ("alias", "alias_size_in_bytes"),
)

# Which resident arrays (see the module docstring) each executable takes as arguments.
_RESIDENT_ARGS = {
  "sampler": ("sampler_params",),
  "score": ("params",),
  "grad": ("params",),
  "update": ("params", "opt_state", "grad_accum"),
}


def abstract_policy(config: ml_collections.ConfigDict, tokenizer) -> models.Decoder:
  """The configured policy with shapes and dtypes only: no parameter is allocated or read.

  Args:
    config: a run config; `model.checkpoint` set means its `config.json` gives the shape.
    tokenizer: gives the vocabulary size (and special ids) of a random policy.

  Returns:
    An abstract `models.Decoder` (its variables hold `jax.ShapeDtypeStruct`s).
  """
  m = config.model
  if m.checkpoint:
    cfg = models.load_config(m.checkpoint)
    model = hf_checkpoint.abstract_model(cfg, dtype=setup._DTYPES[m.dtype])
    model.remat = m.remat  # as `setup.build_model` does for a loaded checkpoint
    return model
  # The same constructor the trainer uses, traced abstractly.
  return nnx.eval_shape(lambda: setup.build_model(config, tokenizer))


def _sds(shape: Sequence[int], dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def _report(compiled) -> dict[str, float]:
  """Memory (bytes, per device) and flops of one compiled executable; absent fields left out."""
  out: dict[str, float] = {}
  try:
    mem = compiled.memory_analysis()
  except Exception:  # some backends raise instead of returning None
    mem = None
  if mem is not None:
    for name, attr in _MEMORY_FIELDS:
      if hasattr(mem, attr):
        out[f"{name}_bytes"] = int(getattr(mem, attr))
    if all(f"{k}_bytes" in out for k in ("argument", "output", "temp", "alias")):
      out["peak_bytes"] = (
        out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
      )
  try:
    cost = compiled.cost_analysis()
  except Exception:
    cost = None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per executable
    cost = cost[0] if cost else None
  if cost and "flops" in cost:
    out["flops"] = float(cost["flops"])
  return out


def per_device_bytes(tree, shardings) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) laid out by `shardings`.

  Every device holds the same amount under a `NamedSharding` whose axes divide the dimensions
  (which `rules.partition_spec` guarantees), so device 0's shard is representative.
  """
  sizes = jax.tree.map(
    lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize, tree, shardings
  )
  return int(sum(jax.tree.leaves(sizes)))


def batch_shards(mesh: jax.sharding.Mesh) -> int:
  """How many ways batches are split: the product of the mesh axes of logical axis "batch"."""
  spec = rules_lib.batch_sharding(mesh).spec
  if not spec or spec[0] is None:
    return 1
  axes = (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
  return math.prod(mesh.shape[a] for a in axes)


def check_batch_divides(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, label: str = "config.mesh"
) -> None:
  """Raises a ValueError unless the mesh's batch axes divide every batch the run shards.

  The sampler splits its P prompts, the trainer its P·G rollout rows and M micro-batch rows, all
  over data x fsdp; jax would otherwise fail deep inside lowering with a shape error.
  """
  shards = batch_shards(mesh)
  ro, tr = config.rollout, config.train
  sizes = {
    "rollout.prompts_per_step": ro.prompts_per_step,
    "rollout.prompts_per_step * rollout.samples_per_prompt": ro.prompts_per_step
    * ro.samples_per_prompt,
    "train.microbatch_rows": tr.microbatch_rows,
  }
  bad = {name: n for name, n in sizes.items() if n % shards}
  if bad:
    listed = ", ".join(f"{name} = {n}" for name, n in bad.items())
    raise ValueError(
      f"{label} {dict(mesh.shape)} splits batches {shards} ways (data x fsdp), which does not "
      f"divide {listed}; make them multiples of {shards} or move devices to the tensor axis"
    )


EXECUTABLES = ("sampler", "score", "grad", "update")


def compile_only(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh | None = None,
  *,
  executables: Sequence[str] = EXECUTABLES,
  constrain_activations: bool = True,
) -> dict[str, dict[str, Any]]:
  """Lowers and compiles the sampler and the RL step functions of `config` for a mesh.

  Args:
    config: a run config (as `grpojax.main` takes it); validated first.
    mesh: the device mesh to compile for, with axes among data, fsdp, tensor; default
      `config.mesh` over `jax.devices()`.
    executables: which of `EXECUTABLES` to compile (e.g. only "grad" when comparing remat
      policies, which change nothing else); `step_peak_bytes` then covers these only.
    constrain_activations: pin each layer's output rows to the batch sharding, as the trainer
      does (`Decoder.activation_sharding`); False compiles what XLA propagates on its own.

  Returns:
    executable name ("sampler", "score", "grad", "update") -> {"argument_bytes",
    "output_bytes", "temp_bytes", "code_bytes", "alias_bytes", "peak_bytes", "transient_bytes",
    "flops"}, bytes per device (a field is missing where the backend does not report it);
    "resident" -> per-device bytes of the arrays held across steps (see the module docstring)
    and their "total"; "step_peak_bytes" -> {"bytes": resident total + largest transient,
    "executable": which one}; "mesh" -> axis sizes; "shapes" -> what was compiled.

  Raises:
    ValueError: an invalid config, an unknown executable, or a mesh that does not divide the
      batches (all before any compilation).
  """
  unknown = sorted(set(executables) - set(EXECUTABLES))
  if unknown:
    raise ValueError(f"unknown executables {unknown}; expected some of {EXECUTABLES}")
  setup.validate_config(config)
  label = "mesh"
  if mesh is None:
    mesh, label = mesh_lib.mesh_from_config(config.mesh), "config.mesh"
  check_batch_divides(config, mesh, label)
  ro, tr = config.rollout, config.train
  tok = setup.build_tokenizer(config)
  model = abstract_policy(config, tok)
  if constrain_activations and batch_shards(mesh) > 1:
    model.activation_sharding = rules_lib.batch_sharding(mesh)
  graphdef, params = nnx.split(model, nnx.Param)  # abstract: leaves are ShapeDtypeStructs
  objective = objectives.make(config.objective)
  rl_opt = train._optimizer(config.optim, config.train.steps)  # the trainer's exact optimiser
  fns = steps.build(
    graphdef,
    objective,
    rl_opt,
    temperature=ro.temperature,
    compute_entropy=True,
    seq_chunk=tr.logprob_chunk,
    vocab_chunk=None,
  )
  opt_state = jax.eval_shape(rl_opt.init, params)
  train_sh = rules_lib.param_shardings(params, mesh, rules_lib.DEFAULT_RULES)
  sample_sh = rules_lib.param_shardings(params, mesh, rules_lib.SAMPLE_RULES)
  opt_sh = rules_lib.param_shardings(opt_state, mesh, rules_lib.DEFAULT_RULES)
  fns = parallel_steps.sharded_steps(fns, mesh=mesh, param_shardings=train_sh, opt_shardings=opt_sh)
  data, rep = rules_lib.batch_sharding(mesh), rules_lib.replicated(mesh)

  p, g, tp, n = ro.prompts_per_step, ro.samples_per_prompt, ro.max_prompt_len, ro.max_new_tokens
  micro = tr.microbatch_rows  # validate_config: it divides the minibatch's rows
  key = jax.eval_shape(lambda: jax.random.key(0))
  results: dict[str, Any] = {}

  # Sampler: the exact static arguments `rollout._generate` passes, bound so that jit's
  # in_shardings cover the array arguments only.
  sampling_params = sampling.SamplingParams(
    temperature=ro.temperature, top_k=ro.top_k or None, top_p=ro.top_p, min_p=ro.min_p
  )
  sampler_kw = dict(
    max_new_tokens=n,
    num_samples=g,
    params=sampling_params,
    stop_ids=tuple(sorted(tok.eos_ids)),
    pad_id=tok.pad_id,
  )
  sampler = jax.jit(
    functools.partial(sampling.generate_padded.__wrapped__, graphdef, **sampler_kw),
    in_shardings=(sample_sh, data, data, rep),
    out_shardings=data,
  )
  prompts = _sds((p, tp), jnp.int32)
  # The trainer's sampler copy: in the compute dtype when that changes no rollout number.
  rollout_dtype = precision_policy.rollout_copy_dtype(model)
  sampler_params = (
    params
    if rollout_dtype is None
    else jax.eval_shape(lambda p: precision_policy.cast_floating_params(p, rollout_dtype), params)
  )
  if "sampler" in executables:
    results["sampler"] = _report(sampler.lower(sampler_params, prompts, prompts, key).compile())

  # Trainer rows of one micro-batch, with the dtypes the real rollout produces.
  completions = jax.eval_shape(
    lambda pr, mk, k: sampling.generate_padded(
      graphdef, params, pr, mk, k, **(sampler_kw | dict(num_samples=1))
    ),
    _sds((micro, tp), jnp.int32),
    _sds((micro, tp), jnp.int32),
    key,
  )
  seqs = jax.eval_shape(sequences.from_completions, completions)
  if "score" in executables:
    results["score"] = _report(fns.score.lower(params, seqs).compile())

  f32 = lambda *shape: _sds(shape, jnp.float32)
  batch = objectives.LossBatch(
    old_logprobs=f32(micro, n),
    sampler_logprobs=f32(micro, n),
    ref_logprobs=f32(micro, n) if setup.needs_reference(config) else None,
    advantages=f32(micro, n),
    mask=seqs.completion_mask,
    rewards=f32(micro),
    max_len=n,
  )
  obj_state = jax.eval_shape(objective.init)
  if "grad" in executables:
    # The gradient function the trainer calls: with one update per rollout it takes the old
    # log-probs from its own forward pass (`grad_on_policy`), else `grad`.
    grad_fn = fns.grad_on_policy if train.uses_fused_old_logprobs(config) else fns.grad
    results["grad"] = _report(grad_fn.lower(params, seqs, batch, obj_state, key).compile())
  if "update" in executables:
    results["update"] = _report(fns.update.lower(params, opt_state, params, f32()).compile())

  param_bytes = per_device_bytes(params, train_sh)
  separate_sampler = (
    jax.tree.leaves(train_sh) != jax.tree.leaves(sample_sh) or rollout_dtype is not None
  )
  resident = dict(
    params=param_bytes,
    opt_state=per_device_bytes(opt_state, opt_sh),
    grad_accum=param_bytes,
    ref_params=param_bytes if setup.needs_reference(config) else 0,
    sampler_params=per_device_bytes(sampler_params, sample_sh) if separate_sampler else 0,
  )
  resident["total"] = sum(resident.values())
  # Without a separate copy the sampler reads the training parameters.
  held = dict(resident, sampler_params=resident["sampler_params"] or param_bytes)
  for name in executables:
    if "peak_bytes" in results[name]:
      results[name]["transient_bytes"] = max(
        results[name]["peak_bytes"] - sum(held[a] for a in _RESIDENT_ARGS[name]), 0
      )
  transients = {
    k: results[k]["transient_bytes"] for k in executables if "transient_bytes" in results[k]
  }
  results["resident"] = resident
  if transients:
    worst = max(transients, key=transients.get)
    results["step_peak_bytes"] = dict(bytes=resident["total"] + transients[worst], executable=worst)
  results["mesh"] = dict(mesh.shape)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  results["shapes"] = dict(
    params=num_params,
    sampler_rows=p * g,
    sampler_len=tp + n,
    micro_rows=micro,
    vocab=model.config.vocab_size,
    param_dtypes=sorted({str(x.dtype) for x in jax.tree.leaves(params)}),
    compute_dtype=jnp.dtype(model.dtype).name,
  )
  return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
  """A fixed-width table of `compile_only`'s result: MiB per device per memory field, GFLOP."""
  cols = ("argument", "output", "temp", "code", "peak")
  lines = []
  if "mesh" in results:
    lines.append(
      "mesh "
      + " x ".join(f"{k}={v}" for k, v in results["mesh"].items())
      + " (bytes are per device)"
    )
  lines.append(
    f"{'executable':<10}" + "".join(f"{c + ' MiB':>14}" for c in cols) + f"{'GFLOP':>12}"
  )
  for name in EXECUTABLES:
    if name not in results:
      continue
    rep = results[name]
    cells = "".join(
      f"{rep[c + '_bytes'] / 2**20:>14.3f}" if c + "_bytes" in rep else f"{'-':>14}" for c in cols
    )
    flops = f"{rep['flops'] / 1e9:>12.4f}" if "flops" in rep else f"{'-':>12}"
    lines.append(f"{name:<10}{cells}{flops}")
  res = results.get("resident")
  if res:
    parts = ", ".join(f"{k} {v / 2**20:.3f}" for k, v in res.items() if k != "total" and v)
    lines.append(f"resident MiB per device: {res['total'] / 2**20:.3f} ({parts})")
  if "step_peak_bytes" in results:
    sp = results["step_peak_bytes"]
    lines.append(
      f"step peak MiB per device: {sp['bytes'] / 2**20:.3f} "
      f"(resident + {sp['executable']}'s transient)"
    )
  s = results.get("shapes", {})
  if s:
    lines.append(
      f"params {s['params']:,}; sampler {s['sampler_rows']} rows x {s['sampler_len']} "
      f"tokens; grad {s['micro_rows']} rows per micro-batch; vocab {s['vocab']}"
    )
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required")
  print(f"backend {jax.default_backend()}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  print(format_table(compile_only(config)), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import this module next to grpojax.main.
  # The mesh comes from the config (`--config.mesh.fsdp=8`): one override channel.
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  app.run(main)
