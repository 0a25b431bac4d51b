"""Per-process views of global batches: which rows a process owns, building global arrays from
those rows only, reading them back, and sharing small results with every process.

In a run over several processes (`jax.distributed`) every array the trainer touches is a global
`jax.Array` on the run's mesh. Batch rows are split over the mesh's batch axes, so each process
holds some of them: it reads, tokenises and verifies only those (`owned_rows`,
`from_rows`, `local_rows`) and shares the small per-row results, such as rewards, through
`to_numpy`. With one process all of this is the identity.

A batch whose row count the batch axes do not divide is replicated instead (`row_sharding`), the
same fallback as the parameter rules: always correct, every process then holds every row.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from grpojax.parallel import rules


def row_sharding(data: NamedSharding, num_rows: int) -> NamedSharding:
  """`data` (rows split over the batch axes) when it divides `num_rows`, else replicated."""
  if num_rows % rules.leading_shards(data):
    return NamedSharding(data.mesh, PartitionSpec())
  return data


def _row_ids(index, num_rows: int) -> range:
  return range(*index[0].indices(num_rows))


def owned_rows(sharding: NamedSharding, num_rows: int) -> np.ndarray:
  """Sorted global row ids that this process's devices hold under `sharding`."""
  rows = set()
  for index in sharding.addressable_devices_indices_map((num_rows,)).values():
    rows.update(_row_ids(index, num_rows))
  return np.asarray(sorted(rows), np.int64)


def from_rows(
  sharding: NamedSharding, rows: np.ndarray, values: np.ndarray, num_rows: int
) -> jax.Array:
  """The global array [num_rows, ...] of which this process supplies `values` for `rows`.

  Args:
    sharding: the array's sharding (only the leading dimension may be split).
    rows: `owned_rows(sharding, num_rows)`, in order.
    values: [len(rows), ...] this process's rows.
    num_rows: the global row count.
  """
  values = np.asarray(values)
  if len(rows) != len(values):
    raise ValueError(f"{len(values)} row values for {len(rows)} owned rows")
  where = {int(r): i for i, r in enumerate(rows)}

  def shard(index):
    ids = [where[r] for r in _row_ids(index, num_rows)]
    return values[ids][(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback((num_rows, *values.shape[1:]), sharding, shard)


def local_rows(x: jax.Array, rows: np.ndarray) -> np.ndarray:
  """This process's `rows` of the global array `x`, as NumPy, read from its own shards.

  Raises:
    ValueError: a wanted row is not on this process, or a shard splits a trailing dimension.
  """
  num_rows = x.shape[0]
  found: dict[int, np.ndarray] = {}
  for shard in x.addressable_shards:
    if any(
      sl != slice(None) and sl.indices(n) != (0, n, 1)
      for sl, n in zip(shard.index[1:], x.shape[1:], strict=True)
    ):
      raise ValueError(f"local_rows needs whole rows; a shard of {x.shape} is {shard.index}")
    ids = _row_ids(shard.index, num_rows)
    if any(r not in found for r in ids):
      data = np.asarray(shard.data)
      for j, r in enumerate(ids):
        found.setdefault(r, data[j])
  missing = [int(r) for r in rows if int(r) not in found]
  if missing:
    raise ValueError(f"rows {missing[:8]} are not held by process {jax.process_index()}")
  return np.stack([found[int(r)] for r in rows]) if len(rows) else np.zeros((0, *x.shape[1:]))


def to_numpy(x) -> np.ndarray:
  """The whole value of `x` on every process (an all-gather when it is split across them).

  Every process must call it, in the same order, for an array split across processes.
  """
  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
