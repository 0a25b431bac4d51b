"""Sampling methods: how one next token is drawn from a row of logits.

A method is a small frozen dataclass and a pytree: its array-valued settings (a per-row or
per-token temperature) are leaves, its truncation settings are static, so a jitted sampler
specialises on the truncation but not on the temperature values.

The order of the transforms follows Hugging Face's logits warpers: temperature, then top-k, then
top-p (nucleus), then min-p. Every method reports two log-probabilities of the token it draws:
under the distribution it really sampled from (after temperature and truncation) and under the
unmodified policy (temperature 1, no truncation). Off-policy corrections need both.

Shapes: B rows, N completion tokens per row, V vocabulary.
"""

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG_INF = -jnp.inf


def _is_number(x) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding: a point mass, so its sampling log-probability is 0.

  Its tokens are recorded with temperature 0.
  """

  def at(self, index_b: Array) -> "Greedy":
    """Returns itself: greedy decoding has no per-token settings."""
    del index_b
    return self


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sample:
  """Sampling from the tempered, truncated policy.

  Attributes:
    temperature: > 0; the logits are divided by it. A Python float, a per-row [B] array or a
      per-token [B, N] array (column t is the temperature of completion token t). A pytree leaf.
    top_k: keep the k most likely tokens (None: all). Static.
    top_p: keep the smallest set of most likely tokens whose mass reaches top_p, in (0, 1].
      Static.
    min_p: keep tokens whose probability is at least min_p times the largest, in [0, 1). Static.
  """

  temperature: float | Array = 1.0
  top_k: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  top_p: float = dataclasses.field(default=1.0, metadata=dict(static=True))
  min_p: float = dataclasses.field(default=0.0, metadata=dict(static=True))

  def __post_init__(self):
    # Pytree unflattening calls the constructor with tracers or placeholders as the temperature,
    # so only a Python number is checked.
    t = self.temperature
    if _is_number(t) and not t > 0:
      raise ValueError(f"temperature must be > 0 (use Greedy() for argmax decoding), got {t}")
    if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
      raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not 0 <= self.min_p < 1:
      raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")

  def at(self, index_b: Array) -> "Sample":
    """The method for the next token of each row.

    Args:
      index_b: [B] the completion index each row samples next (clipped to [0, N)).

    Returns:
      This method, with a per-token [B, N] temperature replaced by the [B] temperatures at
      column `index_b` of each row; unchanged otherwise.
    """
    t = self.temperature
    if _is_number(t) or jnp.ndim(t) < 2:
      return self
    col_b = jnp.clip(index_b, 0, t.shape[1] - 1)
    return dataclasses.replace(self, temperature=jnp.take_along_axis(t, col_b[:, None], 1)[:, 0])


Method = Greedy | Sample


def token_temperature(method: Method, num_rows: int) -> Array:
  """The temperature recorded for each row's next token, [B] float32 (0 for greedy).

  Args:
    method: a method whose temperature is a scalar or per-row (see `Sample.at`).
    num_rows: B.

  Returns:
    float32 [B].
  """
  if isinstance(method, Greedy):
    return jnp.zeros((num_rows,), jnp.float32)
  return jnp.broadcast_to(jnp.asarray(method.temperature, jnp.float32), (num_rows,))


def processed_logits(logits_bv: Array, method: Sample) -> Array:
  """The logits of the distribution actually sampled from: -inf outside the kept set.

  Args:
    logits_bv: raw policy logits [B, V].
    method: a `Sample` whose temperature is a scalar or per-row [B] (see `Sample.at`).

  Returns:
    float32 [B, V].
  """
  x = logits_bv.astype(jnp.float32)
  t = method.temperature
  if not (_is_number(t) and t == 1):
    t = jnp.asarray(t, jnp.float32)
    if t.ndim > 1:
      raise ValueError("a per-token temperature must be resolved with `Sample.at` first")
    # A product with the reciprocal is what XLA compiles a division by a constant into, so a
    # traced temperature reproduces the numbers of a constant one bit for bit.
    inv_t = 1.0 / t
    x = x * (inv_t[:, None] if inv_t.ndim == 1 else inv_t)
  if method.top_k is not None and method.top_k < x.shape[-1]:
    kth = jax.lax.top_k(x, method.top_k)[0][..., -1:]
    x = jnp.where(x < kth, _NEG_INF, x)
  if method.top_p < 1:
    sorted_desc = -jnp.sort(-x, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The most likely token is always kept, so the set is never empty.
    kept = mass_before < method.top_p
    threshold = jnp.min(jnp.where(kept, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < threshold, _NEG_INF, x)
  if method.min_p > 0:
    floor = jnp.max(x, axis=-1, keepdims=True) + jnp.log(method.min_p)
    x = jnp.where(x < floor, _NEG_INF, x)
  return x


def sample_token(logits_bv: Array, key: Array, method: Method) -> tuple[Array, Array, Array]:
  """Draws one token per row.

  Args:
    logits_bv: raw policy logits [B, V].
    key: PRNG key.
    method: `Greedy()` or a `Sample` with a scalar or per-row temperature.

  Returns:
    (tokens [B] int32, sampling_logprobs [B], policy_logprobs [B]); greedy decoding samples
    from a point mass, so its sampling log-probability is 0.
  """
  policy_logp_bv = jax.nn.log_softmax(logits_bv.astype(jnp.float32), axis=-1)
  if isinstance(method, Greedy):
    tokens = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    sampling_logp = jnp.zeros(tokens.shape, jnp.float32)
  else:
    x = processed_logits(logits_bv, method)
    tokens = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
    sampling_logp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), tokens[:, None], axis=-1)[
      :, 0
    ]
  policy_logp = jnp.take_along_axis(policy_logp_bv, tokens[:, None], axis=-1)[:, 0]
  return tokens, sampling_logp, policy_logp
