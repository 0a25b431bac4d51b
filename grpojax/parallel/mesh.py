"""A device mesh from config: named axes such as ("data", "fsdp", "tensor") and their sizes.

Every axis is `AxisType.Auto`: `jax.make_mesh` defaults to Explicit axes in jax 0.10, under which
`with_sharding_constraint` fails and sharding is no longer propagated by the compiler.
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np

AxisSizes = Mapping[str, int] | Sequence[tuple[str, int]]


def resolve_axis_sizes(axes: AxisSizes, num_devices: int) -> dict[str, int]:
  """Fills in the one axis of size -1 and checks the sizes against the device count.

  Args:
    axes: axis name -> size, in mesh order; at most one size may be -1 ("the rest").
    num_devices: how many devices the mesh must cover exactly.

  Returns:
    axis name -> positive size, in mesh order, whose product is `num_devices`.

  Raises:
    ValueError: an empty or repeated name, a size that is neither positive nor -1, two -1 sizes,
      or sizes whose product does not equal (or, with -1, divide) `num_devices`.
  """
  items = list(axes.items()) if isinstance(axes, Mapping) else [tuple(a) for a in axes]
  if not items:
    raise ValueError("mesh axes are empty; give at least one (name, size)")
  names = [name for name, _ in items]
  for name in names:
    if not isinstance(name, str) or not name:
      raise ValueError(f"mesh axis names must be non-empty strings, got {name!r}")
  if len(set(names)) != len(names):
    raise ValueError(f"mesh axis names repeat: {names}")
  sizes = {}
  for name, size in items:
    if int(size) != size or (size < 1 and size != -1):
      raise ValueError(f"mesh axis {name!r} has size {size}; sizes are positive or -1 (the rest)")
    sizes[name] = int(size)
  rest = [name for name, size in sizes.items() if size == -1]
  if len(rest) > 1:
    raise ValueError(f"only one mesh axis may have size -1, got {rest}")
  known = int(np.prod([s for s in sizes.values() if s != -1]))
  if rest:
    if num_devices % known:
      fixed = {n: s for n, s in sizes.items() if s != -1}
      raise ValueError(
        f"mesh axis {rest[0]!r} = -1 cannot fill {num_devices} devices: the other axes {fixed} "
        f"multiply to {known}, which does not divide {num_devices}"
      )
    sizes[rest[0]] = num_devices // known
  elif known != num_devices:
    culprit = next((n for n, s in sizes.items() if num_devices % s), names[-1])
    raise ValueError(
      f"mesh axes {sizes} multiply to {known}, not the {num_devices} devices available "
      f"(axis {culprit!r} of size {sizes[culprit]} is the one to change, or set one axis to -1)"
    )
  return sizes


def make_mesh(axes: AxisSizes, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all) with the named axes, all of type Auto.

  Args:
    axes: axis name -> size in mesh order, as a dict or (name, size) pairs, e.g.
      `{"data": -1, "fsdp": 2, "tensor": 2}`; one size may be -1 for "the remaining devices".
    devices: the devices to lay out; default `jax.devices()`.

  Returns:
    A `jax.sharding.Mesh` whose axis sizes multiply to the number of devices.

  Raises:
    ValueError: see `resolve_axis_sizes`; the message names the offending axis.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_axis_sizes(axes, len(devices))
  shape, names = tuple(sizes.values()), tuple(sizes)
  # jax.make_mesh orders the devices for the physical topology (e.g. TPU rings).
  return jax.make_mesh(
    shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names), devices=devices
  )


MESH_AXES = ("data", "fsdp", "tensor")


def mesh_from_config(mesh_config, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """The run's mesh from `config.mesh` (fields data, fsdp, tensor, in that mesh order).

  Raises:
    ValueError: as `make_mesh`, prefixed with `config.mesh` so the culprit is clear.
  """
  axes = [(name, int(mesh_config[name])) for name in MESH_AXES]
  try:
    return make_mesh(axes, devices)
  except ValueError as e:
    raise ValueError(f"config.mesh: {e}") from None


def initialize_distributed(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  *,
  detect: bool = False,
) -> None:
  """Joins a multi-process run: at `coordinator_address` with the given process count and id,
  or (`detect`) with what jax reads from the cluster's environment; neither: a one-process run."""
  if coordinator_address:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
    )
  elif detect:
    jax.distributed.initialize()
