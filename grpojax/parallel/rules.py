"""Logical-axis sharding rules: parameter paths -> logical axes -> mesh axes -> `NamedSharding`.

Two tables, both plain data that a config can replace:

* `param_axes`: (regex, logical spec) pairs. The regex is matched against the end of a leaf's
  path joined with '/', e.g. `layers/3/self_attn/q_proj/kernel` (NNX's trailing `value` attribute
  dropped); the first match wins. Because a match may start at any '/' boundary, the same table
  covers optimiser state, whose leaves sit under prefixes such as `1/0/mu/...`. The spec names
  one logical axis (or None) per dimension, or is None for "replicate the whole array".
* `logical_axes`: logical name -> mesh axis, tuple of mesh axes, or None.

Resolution of one dimension, in order:
  1. mesh axes that the mesh lacks, or whose size is 1, are dropped (the same rules serve every
     mesh, and size-1 axes would only clutter the specs);
  2. a mesh axis already used by an earlier dimension of the same array is dropped (a
     `PartitionSpec` may name an axis once);
  3. if the product of the remaining axis sizes does not divide the dimension, the dimension is
     replicated (**fallback, no error**): e.g. a vocabulary of 61 over `tensor=2`. Sharding such
     a dimension would need padding; replicating it is always correct, only less memory-efficient.

Scalars (e.g. optax's `count`) are replicated. A leaf of rank >= 1 that no pattern matches
raises a `ValueError` naming its path, so a new parameter is never silently replicated; add a
`(".*", None)` pattern to replicate everything else.

Default layout (FSDP over "fsdp", Megatron-style tensor parallelism over "tensor"): q/k/v and
gate/up kernels [D, F] are split on F (column parallel), o/down kernels [F, D] on F (row
parallel), and D is split over "fsdp". Batches are split over ("data", "fsdp").
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from grpojax import types

LogicalSpec = tuple[str | None, ...] | None
MeshAxes = str | tuple[str, ...] | None

_LAYER = r"layers/\d+"

DEFAULT_PARAM_AXES: tuple[tuple[str, LogicalSpec], ...] = (
  (r"embed_tokens/embedding", ("vocab", "embed")),
  (rf"{_LAYER}/self_attn/q_proj/kernel", ("embed", "heads")),
  (rf"{_LAYER}/self_attn/(k|v)_proj/kernel", ("embed", "kv_heads")),
  (rf"{_LAYER}/self_attn/q_proj/bias", ("heads",)),
  (rf"{_LAYER}/self_attn/(k|v)_proj/bias", ("kv_heads",)),
  (rf"{_LAYER}/self_attn/o_proj/kernel", ("heads", "embed")),
  (rf"{_LAYER}/self_attn/o_proj/bias", ("embed",)),
  (rf"{_LAYER}/self_attn/(q|k)_norm/scale", ("head_dim",)),
  (rf"{_LAYER}/mlp/(gate|up)_proj/kernel", ("embed", "mlp")),
  (rf"{_LAYER}/mlp/(gate|up)_proj/bias", ("mlp",)),
  (rf"{_LAYER}/mlp/down_proj/kernel", ("mlp", "embed")),
  (rf"{_LAYER}/mlp/down_proj/bias", ("embed",)),
  (rf"({_LAYER}/(input|post_attention)_layernorm|norm)/scale", ("norm",)),
  (r"lm_head/kernel", ("embed", "vocab")),
  # LoRA adapters and a frozen quantised base (grpojax.precision.policy): small or
  # oddly-shaped (block scales), kept whole on every device.
  (r"lora_(a|b)", None),
  (r"quant_(values|scales|tensor_scale)", None),
  # Heads (value, log Z, temperature) are small: whole on every device.
  (r"heads/.*", None),
  # The spike guard's window of recent gradient norms (grpojax.rl.spike_guard): tiny.
  (r"spike_norms", None),
)

DEFAULT_LOGICAL_AXES: dict[str, MeshAxes] = {
  "batch": ("data", "fsdp"),
  "embed": "fsdp",
  "heads": "tensor",
  "kv_heads": "tensor",
  "mlp": "tensor",
  "vocab": "tensor",
  "head_dim": None,
  "norm": None,
}


@dataclasses.dataclass(frozen=True)
class Rules:
  """The two tables of the module docstring.

  Attributes:
    param_axes: (path regex, logical spec) pairs; first match wins.
    logical_axes: logical axis name -> mesh axis name(s) or None.
  """

  param_axes: Sequence[tuple[str, LogicalSpec]] = DEFAULT_PARAM_AXES
  logical_axes: Mapping[str, MeshAxes] = dataclasses.field(
    default_factory=lambda: dict(DEFAULT_LOGICAL_AXES)
  )

  def __post_init__(self):
    for pattern, spec in self.param_axes:
      re.compile(pattern)  # fail at construction on a bad regex
      for name in spec or ():
        if name is not None and name not in self.logical_axes:
          raise ValueError(
            f"pattern {pattern!r} uses logical axis {name!r}, which "
            f"logical_axes does not map (known: {sorted(self.logical_axes)})"
          )


DEFAULT_RULES = Rules()

# The sampler's layout: the same tensor parallelism, but parameters whole on every "data" and
# "fsdp" device. Decoding is one token per step, so FSDP's per-layer all-gathers would be paid
# for every new token; trading memory for them is the usual choice (vLLM, tunix, MaxText's
# inference layouts). `reshard` moves parameters between the two layouts after each update.
SAMPLE_RULES = Rules(logical_axes={**DEFAULT_LOGICAL_AXES, "embed": None})


def logical_spec(path: str, ndim: int, rules: Rules = DEFAULT_RULES) -> LogicalSpec:
  """The logical spec of the leaf at `path` (None: replicated).

  Raises:
    ValueError: no pattern matches a leaf of rank >= 1, or the spec's length is not `ndim`.
  """
  if ndim == 0:
    return None
  for pattern, spec in rules.param_axes:
    if re.search(rf"(^|/)(?:{pattern})$", path):
      if spec is not None and len(spec) != ndim:
        raise ValueError(
          f"{path}: rank {ndim}, but pattern {pattern!r} gives the {len(spec)} logical axes {spec}"
        )
      return spec
  raise ValueError(
    f"no sharding pattern matches parameter {path!r} (rank {ndim}); add one to "
    'Rules.param_axes, or (".*", None) to replicate unmatched leaves'
  )


def _mesh_axes(logical: str | None, rules: Rules, mesh: jax.sharding.Mesh) -> tuple[str, ...]:
  """The mesh axes (present in `mesh`, size > 1) that logical axis `logical` maps to."""
  if logical is None:
    return ()
  target = rules.logical_axes[logical]
  if target is None:
    return ()
  target = (target,) if isinstance(target, str) else tuple(target)
  return tuple(a for a in target if mesh.shape.get(a, 1) > 1)


def partition_spec(
  shape: Sequence[int], spec: LogicalSpec, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES
) -> PartitionSpec:
  """Resolves a logical spec to a `PartitionSpec` for `shape` (rules 1-3 of the docstring)."""
  if spec is None:
    return PartitionSpec()
  used, out = set(), []
  for size, logical in zip(shape, spec, strict=True):
    axes = tuple(a for a in _mesh_axes(logical, rules, mesh) if a not in used)
    if not axes or size % int(np.prod([mesh.shape[a] for a in axes])):
      out.append(None)  # fallback: replicate this dimension
      continue
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else axes)
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def param_shardings(abstract_state, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES):
  """`NamedSharding`s for every leaf of a parameter (or optimiser-state) pytree.

  Args:
    abstract_state: an NNX `State` of parameters, an optax state over them, or any pytree of
      arrays / `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`); only shapes are read.
    mesh: the mesh to lay the leaves out on.
    rules: the sharding tables.

  Returns:
    A pytree of the same structure (an NNX `State` stays a `State`) with a `NamedSharding` per
    leaf, usable as `in_shardings`/`out_shardings` and by `shard_params`.

  Raises:
    ValueError: an unmatched leaf of rank >= 1, or a spec of the wrong rank (see `logical_spec`).
  """

  def one(path, leaf):
    shape = tuple(leaf.shape)
    spec = logical_spec(types.path_to_str(path), len(shape), rules)
    return NamedSharding(mesh, partition_spec(shape, spec, mesh, rules))

  return jax.tree_util.tree_map_with_path(one, abstract_state)


def batch_sharding(mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  """The sharding of [B, ...] data: B split over the mesh axes of logical axis "batch".

  One `NamedSharding` serves arrays of every rank (only the leading axis is named), so a whole
  batch pytree is placed with `jax.device_put(batch, batch_sharding(mesh))`. B must be divisible
  by the product of those axes (jax raises otherwise).
  """
  axes = _mesh_axes("batch", rules, mesh)
  if not axes:
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, PartitionSpec(axes[0] if len(axes) == 1 else axes))


def leading_shards(sharding: NamedSharding) -> int:
  """How many ways `sharding` splits the leading (row) axis: the product of its mesh axes.

  The one place the batch-shard count is computed: layouts, per-process row reads and the
  config checks all call it.
  """
  spec = sharding.spec
  if not spec or spec[0] is None:
    return 1
  axes = (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
  return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array (scalars, keys, small states)."""
  return NamedSharding(mesh, PartitionSpec())


def shard_params(params, shardings, *, copy: bool = True):
  """Places `params` (any pytree) on the devices with `shardings` (same structure or a prefix).

  Args:
    params: arrays to place.
    shardings: e.g. from `param_shardings`.
    copy: copy each leaf before placing it, so that no result shares a buffer with `params`.
      Without it, `jax.device_put` on CPU reuses a device-0 array as one shard of its replicated
      copy (even with `may_alias=False`, jax 0.10.2), and donating the placed tree (as
      `steps.sharded_steps`'s `update` does) deletes the caller's original too. Costs one
      transient copy of `params`; pass False when `params` will not be used again.

  Returns:
    The placed pytree.
  """
  if copy:
    params = jax.tree.map(lambda a: jnp.array(a, copy=True), params)
  return jax.device_put(params, shardings)
