"""Row ownership, building and reading global batches, copies that never alias, mesh checks."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.parallel import host_data
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.rl import setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _layout(**axes):
  return layout_lib.Layout(mesh_lib.make_mesh(axes))


def test_rows_are_split_when_they_divide_and_replicated_otherwise():
  layout = _layout(data=2, fsdp=2, tensor=2)
  assert layout.batch_shards == 4
  assert layout.rows(8).spec[0] == ("data", "fsdp")
  assert layout.rows(6).spec == jax.sharding.PartitionSpec()  # 6 rows over 4: replicated
  np.testing.assert_array_equal(host_data.owned_rows(layout.rows(8), 8), np.arange(8))


def test_from_rows_and_local_rows_round_trip():
  layout = _layout(data=8, fsdp=1, tensor=1)
  values = np.arange(16 * 3).reshape(16, 3)
  sharding = layout.rows(16)
  rows = host_data.owned_rows(sharding, 16)
  x = host_data.from_rows(sharding, rows, values[rows], 16)
  assert x.sharding == sharding and len(x.addressable_shards) == 8
  assert [s.data.shape for s in x.addressable_shards] == [(2, 3)] * 8
  np.testing.assert_array_equal(host_data.local_rows(x, rows[::-1]), values[rows[::-1]])
  np.testing.assert_array_equal(host_data.to_numpy(x), values)
  with pytest.raises(ValueError, match="5 row values for 16"):
    host_data.from_rows(sharding, rows, values[:5], 16)


def test_local_rows_refuses_split_trailing_dimensions():
  mesh = mesh_lib.make_mesh({"data": 2, "tensor": 4})
  x = jax.device_put(
    jnp.zeros((4, 8)),
    jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", "tensor")),
  )
  with pytest.raises(ValueError, match="whole rows"):
    host_data.local_rows(x, np.arange(4))


def test_copy_tree_owns_its_buffers():
  layout = _layout(data=8, fsdp=1, tensor=1)
  tree = {"w": layout.put_replicated(np.ones((4, 4), np.float32))}
  copy = layout_lib.copy_tree(tree)
  jax.jit(lambda t: jax.tree.map(lambda a: a * 2, t), donate_argnums=0)(tree)
  assert tree["w"].is_deleted()
  np.testing.assert_array_equal(np.asarray(copy["w"]), np.ones((4, 4)))  # still alive


def test_mesh_that_does_not_split_the_batch_names_the_field():
  sys.path.insert(0, REPO)
  from configs import common

  config = common.finish(common.base("grpo"), "local")  # 2 prompts x 4 samples, 8-row micro
  mesh = _layout(data=8, fsdp=1, tensor=1).mesh
  setup.check_mesh_divides(config, mesh)  # 8 rows over 8 devices
  with config.unlocked():
    config.train.microbatch_rows = 4
  with pytest.raises(ValueError, match=r"config.train.microbatch_rows = 4: .* 8 ways"):
    setup.check_mesh_divides(config, mesh)
  with pytest.raises(ValueError, match="config.mesh"):
    with config.unlocked():
      config.mesh.tensor = 3
    mesh_lib.mesh_from_config(config.mesh)
