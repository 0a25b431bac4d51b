"""Heads on the decoder's last-layer hidden states (after the final norm): a value V(s_t), a
log-partition log Z(x) and a per-token temperature.

Each head is optional (`HeadsConfig`, all off by default) and lives under the `heads/`
parameter subtree of the policy, so sharding rules, optimiser partitions and the sampler's copy
can treat it apart from the decoder:

  heads/value/{kernel [D, 1], bias [1]}
  heads/log_z/{fc1 [D, W], ln1, fc2 [W, W], ln2, out [W, 1]}    (fc*/out: kernel, bias;
                                                                  ln*: scale, bias)
  heads/temperature/{fc1 [D, D/2], out [D/2, 1]}                (kernel, bias)

Heads compute in float32 whatever the compute dtype (their inputs are cast up), and their
gradients flow into the decoder. Every linear layer is initialised as PyTorch's `nn.Linear`:
kernel and bias ~ U(-1/sqrt(in), 1/sqrt(in)); layer norms start at scale 1, bias 0.

Shapes: B rows, T positions, D model dim, W the log-Z head's width.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
# The three heads draw from independent keys, so enabling one never changes another's
# initial parameters.
_HEAD_STREAMS = {"value": 0, "log_z": 1, "temperature": 2}


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
  """Which heads a policy has.

  Attributes:
    value: a linear value head V(s_t) = h_t · w + b, [B, T] (VAPO, arXiv 2504.05118).
    log_z: FlowRL's log-partition head (arXiv 2509.15207), [B]: the authors' `ProjZModule`
      with 3 layers, Linear -> GELU -> LayerNorm -> Linear -> GELU -> LayerNorm -> Linear(1),
      dropout omitted, on the masked mean of the hidden states over the real prompt tokens.
    log_z_width: W, the log-Z head's hidden width; None for the model dim D (the authors').
    temperature: IntroLLM's temperature head (arXiv 2602.13035), [B, T]: Linear D -> D/2, GELU,
      Linear -> 1, read raw. How the output maps to a temperature (a softplus, a bounded
      sigmoid, a choice among discrete values) belongs to the sampling method and the
      objective that use it, not to the head.

  Raises:
    ValueError: `log_z_width` < 1.
  """

  value: bool = False
  log_z: bool = False
  log_z_width: int | None = None
  temperature: bool = False

  def __post_init__(self):
    if self.log_z_width is not None and (
      not isinstance(self.log_z_width, int) or self.log_z_width < 1
    ):
      raise ValueError(
        f"HeadsConfig.log_z_width must be None or an int >= 1, got {self.log_z_width!r}"
      )

  @property
  def enabled(self) -> bool:
    """Whether at least one head is enabled."""
    return self.value or self.log_z or self.temperature


def _uniform(key, shape, bound, dtype):
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


class Linear(nnx.Module):
  """y = x · kernel + bias in float32, with PyTorch's `nn.Linear` initialisation."""

  def __init__(self, in_features: int, out_features: int, *, param_dtype, rngs: nnx.Rngs):
    bound = 1.0 / np.sqrt(in_features)
    self.kernel = nnx.Param(_uniform(rngs.heads(), (in_features, out_features), bound, param_dtype))
    self.bias = nnx.Param(_uniform(rngs.heads(), (out_features,), bound, param_dtype))

  def __call__(self, x: Array) -> Array:
    y = jnp.dot(x.astype(jnp.float32), self.kernel[...].astype(jnp.float32))
    return y + self.bias[...].astype(jnp.float32)


class LayerNorm(nnx.Module):
  """(x - mean) / sqrt(var + eps) · scale + bias over the last axis, in float32 (eps 1e-5, as
  PyTorch's `nn.LayerNorm`)."""

  def __init__(self, dim: int, *, param_dtype, eps: float = 1e-5):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
    self.eps = eps

  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    normed = (x - mean) * jax.lax.rsqrt(var + self.eps)
    return normed * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


def _gelu(x: Array) -> Array:
  # PyTorch's nn.GELU default: the exact erf form, not the tanh approximation.
  return jax.nn.gelu(x, approximate=False)


class ValueHead(Linear):
  """V(s_t) = h_t · w + b: [B, T, D] -> [B, T]."""

  def __init__(self, dim: int, *, param_dtype, rngs: nnx.Rngs):
    super().__init__(dim, 1, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, hidden_btd: Array) -> Array:
    return super().__call__(hidden_btd)[..., 0]


def masked_mean(hidden_btd: Array, mask_bt: Array) -> Array:
  """Σ_t m_t h_t / max(Σ_t m_t, 1) in float32: [B, T, D], [B, T] -> [B, D].

  A row without any real token gives zeros instead of NaN (filler rows are masked later).
  """
  mask = mask_bt.astype(jnp.float32)
  total = jnp.einsum("BTD,BT->BD", hidden_btd.astype(jnp.float32), mask)
  return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)[:, None]


class LogZHead(nnx.Module):
  """log Z_φ(x) of FlowRL: an MLP on the prompt's mean hidden state, [B, T, D] -> [B].

  The authors' code pools `hidden[:, :-N-1]`, which leaves out the last prompt token (N the
  completion length); here every real prompt token is pooled, as the paper describes.
  """

  def __init__(self, dim: int, width: int, *, param_dtype, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.fc1 = Linear(dim, width, **kw)
    self.ln1 = LayerNorm(width, param_dtype=param_dtype)
    self.fc2 = Linear(width, width, **kw)
    self.ln2 = LayerNorm(width, param_dtype=param_dtype)
    self.out = Linear(width, 1, **kw)

  def __call__(self, hidden_btd: Array, mask_bt: Array) -> Array:
    """log Z [B] from hidden states [B, T, D] and a [B, T] mask of the real prompt tokens."""
    x = masked_mean(hidden_btd, mask_bt)
    x = self.ln1(_gelu(self.fc1(x)))
    x = self.ln2(_gelu(self.fc2(x)))
    return self.out(x)[..., 0]


class TemperatureHead(nnx.Module):
  """IntroLLM's per-token head: Linear D -> D/2, GELU, Linear -> 1; [B, T, D] -> [B, T], raw."""

  def __init__(self, dim: int, *, param_dtype, rngs: nnx.Rngs):
    width = max(dim // 2, 1)
    self.fc1 = Linear(dim, width, param_dtype=param_dtype, rngs=rngs)
    self.out = Linear(width, 1, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, hidden_btd: Array) -> Array:
    return self.out(_gelu(self.fc1(hidden_btd)))[..., 0]


class Heads(nnx.Module):
  """The enabled heads of `HeadsConfig`; a disabled head is None (and has no parameters).

  Attributes:
    config: the `HeadsConfig` it was built from.
    value: `ValueHead` or None.
    log_z: `LogZHead` or None.
    temperature: `TemperatureHead` or None.
  """

  def __init__(self, dim: int, config: HeadsConfig, *, param_dtype, rngs: nnx.Rngs):
    """Builds the heads.

    Args:
      dim: D, the decoder's model dim.
      config: which heads, and the log-Z head's width.
      param_dtype: dtype of the heads' parameters.
      rngs: one key is drawn from its `heads` stream (NNX falls back to `default`); each head
        initialises from its own fold of that key.
    """
    self.config = config
    key = rngs.heads()
    streams = {n: nnx.Rngs(heads=jax.random.fold_in(key, i)) for n, i in _HEAD_STREAMS.items()}
    kw = dict(param_dtype=param_dtype)
    self.value = ValueHead(dim, rngs=streams["value"], **kw) if config.value else None
    self.log_z = (
      LogZHead(dim, config.log_z_width or dim, rngs=streams["log_z"], **kw)
      if config.log_z
      else None
    )
    self.temperature = (
      TemperatureHead(dim, rngs=streams["temperature"], **kw) if config.temperature else None
    )
