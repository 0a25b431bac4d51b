"""Building a policy once: random or loaded decoder weights, the precision policy's parameter
transforms and the heads, merged into the graph of the full policy.

A policy is a `transformer.Decoder` built from `(ModelConfig, dtype, param_dtype,
PrecisionPolicy, remat, activation_sharding, HeadsConfig, cache_block)`. The builders here make
its parameters the way a training run does:

  1. the plain decoder's weights: drawn from `nnx.Rngs(seed)` (exactly those of
     `Decoder(cfg, rngs=nnx.Rngs(seed))`), or read from a Hugging Face checkpoint;
  2. `precision.quantize_base`, then `precision.init_lora` with `jax.random.key(seed + 1)`;
  3. the heads, from their own key (`heads_key(seed)`), so they never change the decoder's
     draws;
  4. `nnx.merge` into the graph definition of the full policy, built abstractly.

Nothing is set on a module after construction: the graph definition comes from the
constructor alone, so two builds with the same arguments have equal graph definitions, and the
sampler's graph is the same build under the sampler's precision policy (`policy_graphdef`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from grpojax import precision as precision_lib
from grpojax import types
from grpojax.models import config as config_lib
from grpojax.models import heads as heads_lib
from grpojax.models import transformer


def lora_key(seed: int) -> jax.Array:
  """The PRNG key of a policy's LoRA adapters (`precision.init_lora`)."""
  return jax.random.key(seed + 1)


def heads_key(seed: int) -> jax.Array:
  """The PRNG key of a policy's heads: a fold of the seed's key, apart from the decoder's
  `nnx.Rngs(seed)` draws and from the adapters' key."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def abstract_policy(
  cfg: config_lib.ModelConfig,
  *,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  precision: precision_lib.PrecisionPolicy = transformer.DEFAULT_PRECISION,
  remat: str = "none",
  activation_sharding=None,
  heads: heads_lib.HeadsConfig = transformer.NO_HEADS,
  cache_block: int = transformer.CACHE_BLOCK,
) -> transformer.Decoder:
  """The policy with shapes and dtypes but no allocated parameters (for `nnx.split` into a
  graph definition and `jax.ShapeDtypeStruct` leaves, e.g. to compile without weights).

  Args:
    cfg, dtype, param_dtype, precision, remat, activation_sharding, heads, cache_block: the
      constructor arguments of `transformer.Decoder`.

  Returns:
    A `Decoder` whose variables hold `jax.ShapeDtypeStruct`s.
  """
  return nnx.eval_shape(
    lambda: transformer.Decoder(
      cfg,
      rngs=nnx.Rngs(0),
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      remat=remat,
      activation_sharding=activation_sharding,
      heads=heads,
      cache_block=cache_block,
    )
  )


def heads_config(model: transformer.Decoder) -> heads_lib.HeadsConfig:
  """The `HeadsConfig` `model` was built with."""
  return transformer.NO_HEADS if model.heads is None else model.heads.config


def policy_graphdef(model: transformer.Decoder, precision: precision_lib.PrecisionPolicy):
  """The graph definition of `model`'s policy under another precision policy.

  With `precision.sampler_policy(model.precision, ...)` this is the sampler's graph; its
  parameters are `precision.sampler_params(params, that_policy, compute_dtype=model.dtype)`.
  With `model.precision` itself it equals `nnx.split(model)[0]`.

  Args:
    model: a built policy (its config, dtype, remat, activation sharding, heads and cache
      block are kept).
    precision: the precision policy of the graph.

  Returns:
    An `nnx.GraphDef` (hashable: a static argument of `jax.jit`).
  """
  abstract = abstract_policy(
    model.config,
    dtype=model.dtype,
    precision=precision,
    remat=model.remat,
    activation_sharding=model.activation_sharding,
    heads=heads_config(model),
    cache_block=model.cache_block,
  )
  return nnx.split(abstract)[0]


def _signature(state: nnx.State):
  return {
    types.path_to_str(path): (type(var).__name__, tuple(var.get_value().shape))
    for path, var in nnx.to_flat_state(state)
  }


def assemble(
  decoder_params: nnx.State,
  cfg: config_lib.ModelConfig,
  *,
  seed: int,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  precision: precision_lib.PrecisionPolicy = transformer.DEFAULT_PRECISION,
  remat: str = "none",
  activation_sharding=None,
  heads: heads_lib.HeadsConfig = transformer.NO_HEADS,
  cache_block: int = transformer.CACHE_BLOCK,
) -> transformer.Decoder:
  """The full policy from a plain decoder's parameters (steps 2-4 of the module docstring).

  Args:
    decoder_params: the state of a `Decoder(cfg)` under the default precision policy, without
      heads.
    cfg: its configuration.
    seed: gives the adapters' key (`lora_key`) and the heads' key (`heads_key`).
    dtype, param_dtype, precision, remat, activation_sharding, heads, cache_block: the
      constructor arguments of the policy.

  Returns:
    The policy.

  Raises:
    ValueError: from the transforms (e.g. LoRA targets that match no projection).
  """
  state = precision_lib.quantize_base(decoder_params, precision)
  state = precision_lib.init_lora(state, precision, lora_key(seed))
  if heads.enabled:
    head_modules = heads_lib.Heads(
      cfg.hidden_size, heads, param_dtype=param_dtype, rngs=nnx.Rngs(heads=heads_key(seed))
    )
    flat = list(nnx.to_flat_state(state))
    flat += [(("heads", *path), var) for path, var in nnx.to_flat_state(nnx.state(head_modules))]
    state = nnx.from_flat_state(flat)
  graphdef, expected = nnx.split(
    abstract_policy(
      cfg,
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      remat=remat,
      activation_sharding=activation_sharding,
      heads=heads,
      cache_block=cache_block,
    )
  )
  got, want = _signature(state), _signature(expected)
  if got != want:  # a transform and the constructor disagree: a bug, not a user error
    diff = sorted(set(got.items()) ^ set(want.items()))
    raise AssertionError(f"assembled parameters differ from the policy's graph: {diff[:6]}")
  return nnx.merge(graphdef, state)


def init_policy(
  cfg: config_lib.ModelConfig,
  *,
  seed: int,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  precision: precision_lib.PrecisionPolicy = transformer.DEFAULT_PRECISION,
  remat: str = "none",
  activation_sharding=None,
  heads: heads_lib.HeadsConfig = transformer.NO_HEADS,
  cache_block: int = transformer.CACHE_BLOCK,
) -> transformer.Decoder:
  """A randomly initialised policy, as a training run makes it.

  The decoder's weights are those of `Decoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype,
  param_dtype=param_dtype)`; then the precision policy's transforms and the heads (module
  docstring). With LoRA the adapted model starts equal to its (possibly quantised) base.

  Args:
    cfg: the architecture.
    seed: the run's initialisation seed.
    dtype, param_dtype, precision, remat, activation_sharding, heads, cache_block: the
      constructor arguments of `transformer.Decoder`.

  Returns:
    The policy.
  """
  plain = transformer.Decoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype)
  return assemble(
    nnx.state(plain),
    cfg,
    seed=seed,
    dtype=dtype,
    param_dtype=param_dtype,
    precision=precision,
    remat=remat,
    activation_sharding=activation_sharding,
    heads=heads,
    cache_block=cache_block,
  )
