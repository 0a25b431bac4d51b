"""Evaluate a checkpoint: `python -m grpojax.evaluate --config=... --checkpoint=DIR --out=DIR`.

  python -m grpojax.evaluate --config=configs/default.py --checkpoint=/tmp/grpojax_run \
    --out=/tmp/grpojax_run/eval

`--checkpoint` is a grpojax run directory (the newest checkpoint under `checkpoints/` that reads
back intact, else its exported `policy/`) or a Hugging Face checkpoint directory (`config.json`
and safetensors, with its tokenizer). `--config` is the config the policy was trained with (its
task, tokenizer, lengths and mesh; overrides as for `grpojax.main`); `eval.num_prompts`,
`eval.samples` (n), `eval.pass_k` (k) and `eval.batch_prompts` set the evaluation. `--data=FILE`
evaluates the rows of a JSON-lines file (the task's data format) in place of the task's held-out
set, the first `eval.num_prompts` of them.

The examples are evaluated by the trainer's own code (`grpojax.rl.rollout.evaluate`, through
`grpojax.eval_run`), sharded the same way and with the same key, so a run's final checkpoint
scores what its final evaluation logged. Process 0 writes `summary.json` (the metrics: greedy
accuracy, avg@n, pass@k, maj@k, mean response lengths; and what was evaluated) and
`examples.jsonl` (one record per example: prompt, reference, the greedy and sampled completions
with their extracted answers, rewards, correctness and lengths) into `--out`.
"""

import importlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

from grpojax import preflight

config_flags.DEFINE_config_file("config", None, "The policy's training config.", lock_config=True)
flags.DEFINE_string("checkpoint", None, "A grpojax run directory or a Hugging Face checkpoint.")
flags.DEFINE_string("out", None, "Where summary.json and examples.jsonl go.")
flags.DEFINE_string("data", None, "A JSON-lines file to evaluate on (default: held-out set).")
flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0, to initialise jax.distributed for multi-host runs.",
)
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host runs).")
flags.DEFINE_bool("distributed", False, "Join a multi-host run jax detects from the cluster.")
flags.mark_flags_as_required(["config", "checkpoint", "out"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  errors = preflight.input_path_errors(FLAGS.config, FLAGS.out)
  if FLAGS.data and not os.path.isfile(FLAGS.data):
    errors.append(f"--data: no file {FLAGS.data!r}")
  try:
    preflight.checkpoint_source(FLAGS.checkpoint)
  except ValueError as error:
    errors.append(str(error))
  if errors:
    preflight.fail("; ".join(e.replace("--workdir", "--out") for e in errors))
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # Imported once the inputs are known to exist (as in grpojax.main: the stack loads slowly).
  objectives = importlib.import_module("grpojax.objectives")
  eval_run = importlib.import_module("grpojax.eval_run")
  mesh = importlib.import_module("grpojax.parallel.mesh")
  mesh.initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, detect=FLAGS.distributed
  )
  try:
    summary = eval_run.run_evaluation(FLAGS.config, FLAGS.checkpoint, FLAGS.out, data=FLAGS.data)
  except (
    eval_run.train.setup.ConfigError,
    objectives.ConfigError,
    eval_run.checkpoint_lib.CheckpointMismatchError,
    ValueError,  # a data row's file:line, or no readable checkpoint
    FileNotFoundError,
  ) as error:
    preflight.fail(str(error))
  if importlib.import_module("jax").process_index() == 0:
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items())
    print(f"{summary['examples']} examples: {metrics}", flush=True)
    evaluation = importlib.import_module("grpojax.rl.evaluation")
    written = [
      os.path.join(FLAGS.out, name) for name in (evaluation.SUMMARY_FILE, evaluation.EXAMPLES_FILE)
    ]
    print(f"wrote {written[0]} and {written[1]}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=preflight.parse_flags)
