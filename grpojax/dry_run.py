"""Compile-only dry run: lowers and compiles a run's step functions without any weights or data.

  python -m grpojax.dry_run --config=configs/default.py
  python -m grpojax.dry_run --config=configs/default.py:local --config.model.num_layers=2

The policy is built abstractly (`nnx.eval_shape`) from the config's `model.*` shape fields, or
from `model.checkpoint`'s `config.json` alone (no safetensors are read), so a 70B policy's step
functions compile on a laptop-sized host as long as XLA can compile them. Every input is a
`jax.ShapeDtypeStruct` of the configured shapes:

  sampler  `sampling.generate_padded` on [P, Tp] prompts, P x G rows of Tp + N tokens
  score    `steps.build(...).score`, the old-policy log-prob forward on [M, Tp + N] rows
  grad     `steps.build(...).grad`, one micro-batch's loss gradient on [M, Tp + N] rows
  update   `steps.build(...).update`, clipping + AdamW on the parameter pytree

with P = rollout.prompts_per_step, G = rollout.samples_per_prompt, Tp = rollout.max_prompt_len,
N = rollout.max_new_tokens and M = train.microbatch_rows (what the trainer feeds `grad`). Each
executable reports `compiled.memory_analysis()` (argument, output, temp, generated-code bytes)
and `compiled.cost_analysis()` flops where the backend provides them. Two caveats: the CPU
backend reports 0 bytes of generated code, and XLA counts a `while_loop` body once, so the
sampler's flops are the prefill plus ONE decode step, not `max_new_tokens` of them.

Compilation is single-device. `mesh_shape` is the hook for sharded compiles: once
`grpojax/parallel` provides a mesh and parameter/batch shardings, the abstract inputs here get
`sharding=` and the jitted functions `in_shardings=`/`out_shardings=`; until then a mesh of more
than one device is refused rather than silently ignored.
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

from grpojax import models, objectives, sampling, train
from grpojax.models import hf_checkpoint
from grpojax.rl import sequences, setup, steps

_MEMORY_FIELDS = (("argument", "argument_size_in_bytes"), ("output", "output_size_in_bytes"),
                  ("temp", "temp_size_in_bytes"), ("code", "generated_code_size_in_bytes"),
                  ("alias", "alias_size_in_bytes"))


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
    return hf_checkpoint.abstract_model(cfg, dtype=setup._DTYPES[m.dtype])
  # The same constructor the trainer uses, traced abstractly.
  return nnx.eval_shape(lambda: setup.build_model(config, tokenizer))


def _sds(shape: Sequence[int], dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def _report(compiled) -> dict[str, float]:
  """Memory (bytes) and flops of one compiled executable; absent fields are left out."""
  out: dict[str, float] = {}
  try:
    mem = compiled.memory_analysis()
  except Exception:  # some backends raise instead of returning None
    mem = None
  if mem is not None:
    for name, attr in _MEMORY_FIELDS:
      if hasattr(mem, attr):
        out[f"{name}_bytes"] = int(getattr(mem, attr))
  try:
    cost = compiled.cost_analysis()
  except Exception:
    cost = None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per executable
    cost = cost[0] if cost else None
  if cost and "flops" in cost:
    out["flops"] = float(cost["flops"])
  return out


def compile_only(config: ml_collections.ConfigDict,
                 mesh_shape: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
  """Lowers and compiles the sampler and the RL step functions of `config` on abstract inputs.

  Args:
    config: a run config (as `grpojax.main` takes it); validated first.
    mesh_shape: the device mesh to compile for. None (or a single device) compiles for one
      device; a larger mesh needs `grpojax.parallel` shardings and raises NotImplementedError.

  Returns:
    executable name ("sampler", "score", "grad", "update") -> {"argument_bytes",
    "output_bytes", "temp_bytes", "code_bytes", "alias_bytes", "flops"} (a field is missing
    where the backend does not report it), plus "shapes" describing what was compiled.
  """
  if mesh_shape is not None and math.prod(mesh_shape) > 1:
    raise NotImplementedError(
      f"mesh_shape={tuple(mesh_shape)}: sharded dry runs need the shardings of grpojax.parallel; "
      "only single-device compiles are implemented")
  setup.validate_config(config)
  ro, tr = config.rollout, config.train
  tok = setup.build_tokenizer(config)
  model = abstract_policy(config, tok)
  graphdef, params = nnx.split(model, nnx.Param)  # abstract: leaves are ShapeDtypeStructs
  objective = objectives.make(config.objective)
  rl_opt = train._optimizer(config.optim, config.train.steps)  # the trainer's exact optimiser
  fns = steps.build(graphdef, objective, rl_opt, temperature=ro.temperature,
                    compute_entropy=True, seq_chunk=tr.logprob_chunk, vocab_chunk=None)

  p, g, tp, n = ro.prompts_per_step, ro.samples_per_prompt, ro.max_prompt_len, ro.max_new_tokens
  micro = min(tr.microbatch_rows, p * g)
  key = jax.eval_shape(lambda: jax.random.key(0))
  results: dict[str, Any] = {}

  # Sampler: the exact static arguments `rollout._generate` passes.
  sampling_params = sampling.SamplingParams(temperature=ro.temperature, top_k=ro.top_k or None,
                                            top_p=ro.top_p, min_p=ro.min_p)
  sampler_kw = dict(max_new_tokens=n, num_samples=g, params=sampling_params,
                    stop_ids=tuple(sorted(tok.eos_ids)), pad_id=tok.pad_id)
  prompts = _sds((p, tp), jnp.int32)
  lowered = sampling.generate_padded.lower(graphdef, params, prompts, prompts, key, **sampler_kw)
  results["sampler"] = _report(lowered.compile())

  # Trainer rows of one micro-batch, with the dtypes the real rollout produces.
  completions = jax.eval_shape(
    lambda pr, mk, k: sampling.generate_padded(graphdef, params, pr, mk, k,
                                               **(sampler_kw | dict(num_samples=1))),
    _sds((micro, tp), jnp.int32), _sds((micro, tp), jnp.int32), key)
  seqs = jax.eval_shape(sequences.from_completions, completions)
  results["score"] = _report(fns.score.lower(params, seqs).compile())

  f32 = lambda *shape: _sds(shape, jnp.float32)
  batch = objectives.LossBatch(
    old_logprobs=f32(micro, n), sampler_logprobs=f32(micro, n),
    ref_logprobs=f32(micro, n) if setup.needs_reference(config) else None,
    advantages=f32(micro, n), mask=seqs.completion_mask, rewards=f32(micro), max_len=n)
  obj_state = jax.eval_shape(objective.init)
  results["grad"] = _report(fns.grad.lower(params, seqs, batch, obj_state, key).compile())

  opt_state = jax.eval_shape(rl_opt.init, params)
  results["update"] = _report(fns.update.lower(params, opt_state, params, f32()).compile())

  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  results["shapes"] = dict(params=num_params, sampler_rows=p * g, sampler_len=tp + n,
                           micro_rows=micro, vocab=model.config.vocab_size)
  return results


def format_table(results: dict[str, dict[str, float]]) -> str:
  """A fixed-width table of `compile_only`'s result: MiB per memory field, GFLOP."""
  cols = ("argument", "output", "temp", "code")
  lines = [f"{'executable':<10}" + "".join(f"{c + ' MiB':>14}" for c in cols) + f"{'GFLOP':>12}"]
  for name, rep in results.items():
    if name == "shapes":
      continue
    cells = "".join(f"{rep[c + '_bytes'] / 2**20:>14.3f}" if c + "_bytes" in rep else f"{'-':>14}"
                    for c in cols)
    flops = f"{rep['flops'] / 1e9:>12.4f}" if "flops" in rep else f"{'-':>12}"
    lines.append(f"{name:<10}{cells}{flops}")
  s = results.get("shapes", {})
  if s:
    lines.append(f"params {s['params']:,}; sampler {s['sampler_rows']} rows x {s['sampler_len']} "
                 f"tokens; grad {s['micro_rows']} rows per micro-batch; vocab {s['vocab']}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required")
  print(f"backend {jax.default_backend()}, device {jax.devices()[0].device_kind}")
  print(format_table(compile_only(config)), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import this module next to grpojax.main.
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  app.run(main)
