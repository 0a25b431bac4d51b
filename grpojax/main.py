"""Entry point: `python -m grpojax.main --config=configs/default.py --workdir=DIR`.

Flags only: the run itself is `grpojax.train.train_and_evaluate(config, workdir)`. Re-running the
same command resumes from the workdir's latest good checkpoint.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from grpojax import train

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0, to initialise jax.distributed for multi-host runs.",
)
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host runs).")
flags.DEFINE_bool(
  "distributed",
  False,
  "Join a multi-host run whose coordinator, process count and id jax detects "
  "from the cluster's environment (TPU pods, SLURM, Open MPI, Kubernetes).",
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  if FLAGS.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
    )
  elif FLAGS.distributed:
    jax.distributed.initialize()
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
