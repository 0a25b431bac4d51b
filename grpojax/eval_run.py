"""Evaluating a saved policy: load it, score it with the trainer's evaluation, write the report.

`python -m grpojax.evaluate` (the command line) calls `run_evaluation`; the scoring itself is
`grpojax.rl.rollout.evaluate`, the function the trainer's periodic evaluation calls, sharded the
same way and with the same key.
"""

import os

import jax
import ml_collections
from absl import logging
from flax import nnx

from grpojax import checkpoint as checkpoint_lib
from grpojax import preflight, train
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import evaluation, multiturn, rollout


def with_data_file(config: ml_collections.ConfigDict, data: str) -> ml_collections.ConfigDict:
  """A copy of `config` that evaluates `data`'s rows: the file is the task's held-out set (and
  its training file too when the config has none), every row kept."""
  config = config.copy_and_resolve_references()
  config.task.heldout_path = data
  config.task.data_path = config.task.data_path or data
  config.task.heldout_size = None  # every row; `eval.num_prompts` picks the first ones
  return config


def _newest_good_params(program: train.Program, workdir: str):
  """The parameters of a run's newest checkpoint that reads back intact, and its step.

  Read-only, unlike a resuming trainer: an unreadable step is skipped with a warning, not moved.

  Raises:
    ValueError: no checkpoint reads back.
    checkpoint.CheckpointMismatchError: the checkpoint is not of this config's model.
  """
  target = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    jax.eval_shape(program.init_state, nnx.state(program.run.model)),
    program.state_shardings,
  )
  steps_dir = os.path.join(workdir, "checkpoints")
  with checkpoint_lib.Checkpointer(steps_dir, max_to_keep=None) as ckpt:
    for step in reversed(ckpt.all_steps()):
      try:
        state, _ = ckpt.restore(step, target=target)
      except checkpoint_lib.CheckpointMismatchError:
        raise
      except Exception as error:  # noqa: BLE001 - any failure to read a step makes it unusable
        logging.warning("checkpoint step %d is unusable (%s); trying an older one", step, error)
        continue
      return state.params, step
  raise ValueError(
    f"--checkpoint: no checkpoint in {steps_dir!r} reads back; evaluate "
    f"{os.path.join(workdir, 'policy')!r} instead if the run exported one"
  )


def run_evaluation(
  config: ml_collections.ConfigDict, checkpoint: str, out: str, *, data: str | None = None
) -> dict:
  """Evaluates `checkpoint` as `config` describes and writes the two files into `out`.

  Args:
    config: the policy's training config (task, tokenizer, lengths, mesh, `eval.*`).
    checkpoint: a grpojax run directory or a Hugging Face checkpoint directory.
    out: the output directory (created; `summary.json` and `examples.jsonl` are replaced; a
      data file is prepared under `out/data`).
    data: a JSON-lines file to evaluate in place of the task's held-out set.

  Returns:
    The summary written to `summary.json`.
  """
  kind, path = preflight.checkpoint_source(checkpoint)
  if data:
    config = with_data_file(config, data)
  if kind == "hf":
    config = config.copy_and_resolve_references()
    config.model.checkpoint = path
  program = train.build(config, mesh_lib.mesh_from_config(config.mesh), workdir=out)
  if kind == "run":
    params, step = _newest_good_params(program, path)
  else:
    params, step = nnx.state(program.run.model), None
  # The trainer's evaluation key: a run's final checkpoint reproduces its final evaluation.
  key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
  evaluate = multiturn.evaluate if config.env.name else rollout.evaluate
  result = evaluate(
    program.run, program.layout, program.sampler, program.to_sampler(params), config, key
  )
  ev = config.eval
  summary = {
    "checkpoint": os.path.abspath(path),
    "step": step,
    "data": os.path.abspath(data) if data else f"held-out set of task {config.task.name!r}",
    "examples": len(result.records),
    "samples": ev.samples,
    "k": ev.pass_k,
    "metrics": result.metrics,
  }
  if jax.process_index() == 0:
    evaluation.write_report(out, summary, result.records)
  return summary
