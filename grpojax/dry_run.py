"""Compile-only dry run: lowers and compiles a run's functions without any weights or data.

  python -m grpojax.dry_run --config=configs/default.py
  python -m grpojax.dry_run --config=configs/default.py:local --config.model.num_layers=2
  python -m grpojax.dry_run --config=configs/default.py --config.mesh.data=1 --config.mesh.fsdp=-1

It compiles exactly what the trainer runs: `train.build(config, mesh, abstract=True)` builds the
policy with shapes only (`nnx.eval_shape`, or `model.checkpoint`'s `config.json` alone, no
safetensors read) and returns the trainer's jitted functions with their shardings, which are
lowered here on `jax.ShapeDtypeStruct` inputs of the configured shapes:

  prefill     the sampler's prefill of P prompts of Tp tokens into G rows each
  decode      the sampler's decode loop (state donated)
  update      the one RL update: scoring, advantages, epochs x minibatches of micro-batch
              gradients (`train.microbatch_rows` rows each), clipping + AdamW (state donated)
  sft_update  the warm-start update (only when `warm_start.steps` > 0)

with P = rollout.prompts_per_step, G = rollout.samples_per_prompt, Tp = rollout.max_prompt_len,
N = rollout.max_new_tokens. A 70B policy's functions compile on a laptop-sized host as long as
XLA can compile them.

Sharding. The functions are compiled for `config.mesh` over `jax.devices()`, or the `mesh`
argument: parameters and optimiser state in the training layout (`parallel.rules.DEFAULT_RULES`:
FSDP over "fsdp", tensor parallelism over "tensor"), the sampler in the sampling layout
(`SAMPLE_RULES`: parameters whole on every data and fsdp device), batches split over data x fsdp.
A mesh that does not divide the batches is refused before anything compiles. For a mesh larger
than the host, fake devices do: `XLA_FLAGS=--xla_force_host_platform_device_count=32`.

Memory. Each executable reports `compiled.memory_analysis()`: argument, output, temp, alias and
generated-code bytes, PER DEVICE (the SPMD program of one device). `peak_bytes` = argument +
output + temp - alias is one executable's high-water mark while it runs. Arrays also live
BETWEEN executables, so the result adds a per-device `resident` estimate, computed from the
shardings rather than from XLA:

  params          training parameters (training layout)
  opt_state       optimiser state (training layout; AdamW: two moments of the parameters)
  ref_params      frozen reference policy, only when the objective reads it (training layout)
  sampler_params  the sampler's copy of the parameters, only when its layout differs from the
                  training layout (fsdp > 1) or it is stored in a narrower compute dtype

(the gradient sum of the micro-batches lives inside `update`, in its temp bytes), and, per
executable, `transient_bytes` = peak minus the resident arrays among its arguments.
`step_peak_bytes` = resident total + the largest transient is the per-device estimate of a whole
RL step; it ignores the allocator's fragmentation.

Caveats. XLA:CPU's buffer assignment, fusion and layouts differ from TPU's and GPU's, so temp
bytes are indicative only; argument and resident bytes follow from shapes and shardings and carry
over. The CPU backend reports 0 bytes of generated code, and XLA counts a `while_loop` or `scan`
body once, so flops are those of one decode step and one micro-batch.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from grpojax import train, types
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import step

_MEMORY_FIELDS = (
  ("argument", "argument_size_in_bytes"),
  ("output", "output_size_in_bytes"),
  ("temp", "temp_size_in_bytes"),
  ("code", "generated_code_size_in_bytes"),
  ("alias", "alias_size_in_bytes"),
)

EXECUTABLES = ("prefill", "decode", "update", "sft_update")
# Which resident arrays (see the module docstring) each executable takes as arguments.
_RESIDENT_ARGS = {
  "prefill": ("sampler_params",),
  "decode": ("sampler_params",),
  "update": ("params", "opt_state", "ref_params"),
  "sft_update": ("params", "opt_state", "ref_params"),
}


def _sds(shape: Sequence[int], dtype, sharding=None) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


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


def compile_only(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh | None = None,
  *,
  executables: Sequence[str] = EXECUTABLES,
  pin_activations: bool = True,
) -> dict[str, dict[str, Any]]:
  """Lowers and compiles the trainer's functions of `config` for a mesh (`train.build`).

  Args:
    config: a run config (as `grpojax.main` takes it); validated first.
    mesh: the device mesh to compile for, with axes among data, fsdp, tensor; default
      `config.mesh` over `jax.devices()`.
    executables: which of `EXECUTABLES` to compile; `step_peak_bytes` then covers these only.
    pin_activations: pin each layer's output rows to the batch sharding, as the trainer does;
      False compiles what XLA propagates on its own.

  Returns:
    executable name -> {"argument_bytes", "output_bytes", "temp_bytes", "code_bytes",
    "alias_bytes", "peak_bytes", "transient_bytes", "flops"} (bytes per device; a field is
    missing where the backend does not report it); "resident" -> per-device bytes of the arrays
    held across steps and their "total"; "step_peak_bytes" -> {"bytes", "executable"};
    "mesh" -> axis sizes; "shapes" -> what was compiled.

  Raises:
    ValueError: an invalid config, an unknown executable, or a mesh that does not divide the
      batches (all before any compilation).
  """
  unknown = sorted(set(executables) - set(EXECUTABLES))
  if unknown:
    raise ValueError(f"unknown executables {unknown}; expected some of {EXECUTABLES}")
  if mesh is None:
    mesh = mesh_lib.mesh_from_config(config.mesh)
  program = train.build(config, mesh, abstract=True, pin_activations=pin_activations)
  if config.warm_start.steps == 0:
    executables = [e for e in executables if e != "sft_update"]
  layout, run = program.layout, program.run
  ro = config.rollout
  p, g, tp, n = ro.prompts_per_step, ro.samples_per_prompt, ro.max_prompt_len, ro.max_new_tokens
  rows = p * g
  params = jax.eval_shape(lambda: nnx.state(run.model))
  state = jax.tree.map(
    lambda a, s: _sds(a.shape, a.dtype, s),
    jax.eval_shape(program.init_state, params),
    program.state_shardings,
  )
  key = jax.eval_shape(lambda: jax.random.key(0))
  results: dict[str, Any] = {}

  sampler_params = jax.eval_shape(program.to_sampler, params)
  prefill, decode = program.sampler.jitted(g, False)
  prompts = _sds((p, tp), jnp.int32, layout.rows(p))
  if "prefill" in executables or "decode" in executables:
    lowered = prefill.lower(sampler_params, prompts, prompts, key)
    if "prefill" in executables:
      results["prefill"] = _report(lowered.compile())
    if "decode" in executables:
      sampler_state = jax.eval_shape(prefill, sampler_params, prompts, prompts, key)
      results["decode"] = _report(decode.lower(sampler_params, sampler_state).compile())

  row = lambda *shape, dtype=jnp.int32: _sds((rows, *shape), dtype, layout.rows(rows))
  batch = step.Batch(
    seqs=types.Sequences(row(tp + n), row(tp + n), row(n)),
    sampler_logprobs=row(n, dtype=jnp.float32),
    rewards=row(dtype=jnp.float32),
    turns=row(n) if config.env.name else None,
  )
  if config.rollout.temperature_policy.enabled:  # per-token temperatures and their densities
    tau = row(n, dtype=jnp.float32)
    batch = batch._replace(seqs=batch.seqs._replace(temperature=tau), temperature_logprobs=tau)
  if "update" in executables:
    results["update"] = _report(program.update.lower(state, batch, key).compile())
  if "sft_update" in executables:
    bs = config.warm_start.batch_size
    sft_row = lambda *shape: _sds((bs, *shape), jnp.int32, layout.rows(bs))
    seqs = types.Sequences(sft_row(tp + n), sft_row(tp + n), sft_row(n))
    results["sft_update"] = _report(program.sft_update.lower(state, seqs).compile())

  sh = program.state_shardings
  param_bytes = per_device_bytes(params, sh.params)
  sample_layout = layout.sample_shardings(sampler_params)
  # The sampler reads the training parameters themselves unless its copy differs: another
  # layout (fsdp > 1), pre-quantised kernels or a narrower dtype.
  same_tree = jax.tree.structure(sampler_params) == jax.tree.structure(params)
  separate_sampler = not same_tree or (
    jax.tree.leaves(sh.params) != jax.tree.leaves(sample_layout)
    or [x.dtype for x in jax.tree.leaves(sampler_params)]
    != [x.dtype for x in jax.tree.leaves(params)]
  )
  resident = dict(
    params=param_bytes,
    opt_state=per_device_bytes(state.opt_state, sh.opt_state),
    ref_params=param_bytes if program.use_reference else 0,
    sampler_params=per_device_bytes(sampler_params, sample_layout) if separate_sampler else 0,
  )
  resident["total"] = sum(resident.values())
  # Without a separate copy the sampler reads the training parameters.
  held = dict(resident, sampler_params=resident["sampler_params"] or param_bytes)
  for name in results:
    if "peak_bytes" in results[name]:
      results[name]["transient_bytes"] = max(
        results[name]["peak_bytes"] - sum(held[a] for a in _RESIDENT_ARGS[name]), 0
      )
  transients = {k: v["transient_bytes"] for k, v in results.items() if "transient_bytes" in v}
  results["resident"] = resident
  if transients:
    worst = max(transients, key=transients.get)
    results["step_peak_bytes"] = dict(bytes=resident["total"] + transients[worst], executable=worst)
  results["mesh"] = dict(mesh.shape)
  decoder = [
    x
    for path, x in jax.tree_util.tree_leaves_with_path(params)
    if not types.path_to_str(path).startswith("heads/")
  ]
  results["shapes"] = dict(
    params=sum(math.prod(x.shape) for x in decoder),
    sampler_rows=rows,
    sampler_len=tp + n,
    micro_rows=config.train.microbatch_rows,
    vocab=run.model.config.vocab_size,
    param_dtypes=sorted({str(x.dtype) for x in jax.tree.leaves(params)}),
    compute_dtype=jnp.dtype(run.model.dtype).name,
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
