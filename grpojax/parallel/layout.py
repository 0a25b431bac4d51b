"""Where a run's arrays live: its mesh, the training and sampling layouts, and batch placement.

One `Layout` per run. Parameters and optimiser state live in the training layout
(`rules.DEFAULT_RULES`: FSDP x tensor parallel); before each rollout the parameters are
resharded into the sampling layout (`rules.SAMPLE_RULES`: tensor parallel only), and batches are
split by rows over the batch axes. Every array is a global `jax.Array` on the mesh, so the same
code runs on one device, on many, and across processes.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from grpojax.parallel import host_data
from grpojax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Layout:
  """A run's mesh and sharding rules.

  Attributes:
    mesh: the device mesh (all processes' devices).
    train_rules: the layout of parameters, gradients and optimiser state.
    sample_rules: the layout of the sampler's copy of the parameters.
  """

  mesh: jax.sharding.Mesh
  train_rules: rules_lib.Rules = rules_lib.DEFAULT_RULES
  sample_rules: rules_lib.Rules = rules_lib.SAMPLE_RULES

  @property
  def data(self) -> NamedSharding:
    """Rows split over the batch axes."""
    return rules_lib.batch_sharding(self.mesh, self.train_rules)

  @property
  def replicated(self) -> NamedSharding:
    return rules_lib.replicated(self.mesh)

  @property
  def batch_shards(self) -> int:
    """How many ways the batch axes split rows."""
    return rules_lib.leading_shards(self.data)

  def rows(self, num_rows: int) -> NamedSharding:
    """The sharding of a [num_rows, ...] batch (replicated when the split does not divide)."""
    return host_data.row_sharding(self.data, num_rows)

  def train_shardings(self, params) -> Any:
    return rules_lib.param_shardings(params, self.mesh, self.train_rules)

  def sample_shardings(self, params) -> Any:
    return rules_lib.param_shardings(params, self.mesh, self.sample_rules)

  def put_rows(self, x) -> jax.Array:
    """A batch (the same full value on every process) split by rows."""
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    return jax.device_put(x, self.rows(x.shape[0]))

  def put_replicated(self, x) -> jax.Array:
    """A value every process holds in full, on every device."""
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    return jax.device_put(x, self.replicated)


def copy_tree(tree, shardings=None):
  """Fresh buffers for every leaf (optionally resharded), never aliasing `tree`'s.

  Donating a tree (the optimiser update does) deletes its buffers; a reference policy taken
  from the parameters must therefore own its own copy.
  """
  if shardings is None:
    shardings = jax.tree.map(lambda x: x.sharding, tree)
  return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(tree)
