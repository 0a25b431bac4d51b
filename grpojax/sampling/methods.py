"""Sampling methods: how one next token is drawn from a row of logits.

The order of the transforms follows Hugging Face's logits warpers: temperature, then top-k, then
top-p (nucleus), then min-p. Every method reports two log-probabilities of the token it draws:
under the distribution it really sampled from (after temperature and truncation) and under the
unmodified policy (temperature 1, no truncation). Off-policy corrections need both.
"""

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """A sampling method (hashable, so jitted samplers specialise on it).

  Attributes:
    temperature: > 0 divides the logits; 0 means greedy.
    top_k: keep the k most likely tokens (None: all).
    top_p: keep the smallest set of most likely tokens whose mass reaches top_p, in (0, 1].
    min_p: keep tokens whose probability is at least min_p times the largest, in [0, 1).
  """

  temperature: float = 1.0
  top_k: int | None = None
  top_p: float = 1.0
  min_p: float = 0.0

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
    if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
      raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not 0 <= self.min_p < 1:
      raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


def processed_logits(logits_bv: Array, params: SamplingParams) -> Array:
  """The logits of the distribution actually sampled from: -inf outside the kept set."""
  x = logits_bv.astype(jnp.float32)
  if params.temperature not in (0, 1):
    x = x / params.temperature
  if params.top_k is not None and params.top_k < x.shape[-1]:
    kth = jax.lax.top_k(x, params.top_k)[0][..., -1:]
    x = jnp.where(x < kth, _NEG_INF, x)
  if params.top_p < 1:
    sorted_desc = -jnp.sort(-x, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The most likely token is always kept, so the set is never empty.
    kept = mass_before < params.top_p
    threshold = jnp.min(jnp.where(kept, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < threshold, _NEG_INF, x)
  if params.min_p > 0:
    floor = jnp.max(x, axis=-1, keepdims=True) + jnp.log(params.min_p)
    x = jnp.where(x < floor, _NEG_INF, x)
  return x


def sample_token(
  logits_bv: Array, key: Array, params: SamplingParams
) -> tuple[Array, Array, Array]:
  """Draws one token per row.

  Args:
    logits_bv: raw policy logits [B, V].
    key: PRNG key.
    params: the sampling method.

  Returns:
    (tokens [B] int32, sampling_logprobs [B], policy_logprobs [B]); greedy decoding samples
    from a point mass, so its sampling log-probability is 0.
  """
  policy_logp_bv = jax.nn.log_softmax(logits_bv.astype(jnp.float32), axis=-1)
  if params.greedy:
    tokens = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    sampling_logp = jnp.zeros(tokens.shape, jnp.float32)
  else:
    x = processed_logits(logits_bv, params)
    tokens = jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
    sampling_logp = jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), tokens[:, None], axis=-1)[
      :, 0
    ]
  policy_logp = jnp.take_along_axis(policy_logp_bv, tokens[:, None], axis=-1)[:, 0]
  return tokens, sampling_logp, policy_logp
