"""A tiny multi-process JAX program: joins `jax.distributed` and sums the process ids.

Run by `test_local_launch.py` through `local_launch.run_processes`; takes the same distributed
flags as `grpojax.main`.
"""

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--coordinator_address", required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--process_id", type=int, required=True)
  a = parser.parse_args()
  jax.distributed.initialize(
    coordinator_address=a.coordinator_address,
    num_processes=a.num_processes,
    process_id=a.process_id,
  )
  ids = multihost_utils.process_allgather(jnp.asarray([a.process_id], jnp.int32))
  print(
    f"process {jax.process_index()} of {jax.process_count()}: sum of ids {int(ids.sum())}",
    flush=True,
  )
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
