"""Entry point: `python -m grpojax.main --config=configs/default.py --workdir=DIR`.

Flags only: the run itself is `grpojax.train.train_and_evaluate(config, workdir)`. Re-running the
same command resumes from the workdir's latest good checkpoint.

Bad input fails fast, in one line: a missing config file, an override naming no field and a
missing input path are reported (`grpojax.preflight`) before the trainer and its stack (flax,
orbax, tfds, grain) are imported.
"""

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

from grpojax import preflight

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
  errors = preflight.input_path_errors(FLAGS.config, FLAGS.workdir)
  if errors:
    preflight.fail("; ".join(errors))
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  # Imported only now, once the inputs are known to exist: the trainer's stack takes seconds to
  # load (tens on a busy machine). importlib keeps the import at the point it is needed; main is
  # the top layer, so this defers an import and hides no cycle.
  objectives = importlib.import_module("grpojax.objectives")
  train = importlib.import_module("grpojax.train")
  checkpoint = importlib.import_module("grpojax.checkpoint")
  mesh = importlib.import_module("grpojax.parallel.mesh")
  mesh.initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, detect=FLAGS.distributed
  )
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.setup.ConfigError, objectives.ConfigError) as error:  # they name the field
    preflight.fail(str(error))
  except (checkpoint.WorkdirLockedError, checkpoint.DiskSpaceError) as error:  # say what to do
    preflight.fail(str(error))
  except train.setup.plugins.RewardError as error:  # names the reward function and the item
    preflight.fail(str(error))


if __name__ == "__main__":
  app.run(main, flags_parser=preflight.parse_flags)
