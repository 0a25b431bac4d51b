"""Scoring a process's own items on the run's mesh, in calls of a fixed number of global rows.

A reward model or a judge scores the rows of a batch that this process holds (the rollout's
`owned_rows`). It does so in jitted calls over global [rows, ...] arrays split over the batch axes
like the policy's batches: in each call a process fills the slots it owns (`RowBatches.slots`)
with its next items and reads its slots of the result back. Processes that share rows under the
layout hold the same items (the rollout gives every holder of a row the same row), so shared
slots are filled alike.

Every process must make the same calls with the same shapes, so the numbers a shape depends on
(how many calls, the longest row of each) are agreed across processes with `agreed_max`, the
identity when there is one process.
"""

from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from grpojax.parallel import host_data
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib


def agreed_max(values) -> np.ndarray:
  """The elementwise maximum of `values` over all processes (same shape on each).

  Every process must call it, in the same order, when there are several.
  """
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values
  return np.asarray(multihost_utils.process_allgather(values)).max(axis=0)


class RowBatches(NamedTuple):
  """Global batches of `rows` rows, split over the batch axes.

  Attributes:
    sharding: the rows' sharding (split over the batch axes, never replicated when they split).
    rows: global rows per call, a multiple of the batch-shard count.
    slots: the sorted rows of each call that this process fills and reads.
  """

  sharding: NamedSharding
  rows: int
  slots: np.ndarray

  def calls(self, num_items: int) -> int:
    """How many calls score `num_items` items of this process (the most any process needs)."""
    return int(agreed_max(-(-num_items // len(self.slots))))

  def put(self, values) -> jax.Array:
    """The global [rows, ...] array whose `slots` hold `values` [len(slots), ...]."""
    return host_data.from_rows(self.sharding, self.slots, np.asarray(values), self.rows)

  def read(self, x: jax.Array) -> np.ndarray:
    """This process's slots of a global [rows, ...] result, as NumPy [len(slots), ...]."""
    return host_data.local_rows(jax.device_put(x, self.sharding), self.slots)


def row_batches(layout: layout_lib.Layout, rows: int) -> RowBatches:
  """Calls of at least `rows` global rows on `layout`'s mesh: `rows` rounded up to a multiple of
  the batch-shard count, so every call splits over the batch axes.

  Raises:
    ValueError: `rows` < 1.
  """
  if rows < 1:
    raise ValueError(f"rows must be >= 1, got {rows}")
  shards = layout.batch_shards
  rows = -(-rows // shards) * shards
  sharding = layout.rows(rows)
  return RowBatches(sharding, rows, host_data.owned_rows(sharding, rows))


def one_device_layout() -> layout_lib.Layout:
  """A layout over this process's first device alone (scoring outside a run's mesh)."""
  return layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.local_devices()[:1]))
