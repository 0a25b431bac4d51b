"""The sampler's state: a pytree that `prefill`, `decode`, `extend` and `fork` pass along.

A row's sequence is its real prompt tokens followed by its completion tokens `tokens[:length]`.
All rows write the cache at one shared index (one `dynamic_update_slice` per layer and step), so
rows whose sequences have different lengths coexist through per-row masks: a row's
`cache_mask` excludes the slots that do not belong to it ("holes"), and its RoPE positions count
its own tokens. Slots are written in increasing order and a hole is never reopened, so the k-th
attendable slot of a row holds the k-th token of its sequence.

A row is either *current*, its whole sequence is in the cache and `logits` holds its next-token
logits, or *pending*, its last token (the last sampled one, or the last prompt token after a
fork at 0) is not in the cache yet and its `logits` are stale. Decoding samples and then feeds,
so a row that sampled ends pending; no forward is spent on a token nobody samples after.

Shapes: B rows, Tp padded prompt length, N completion capacity, S cache length, V vocabulary,
K key/value heads, H head dim.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplerState:
  """Everything a sampling step needs; rows are prompt-major after `prefill`.

  Attributes:
    cache: per layer (k [B, K, H, S], v [B, K, S, H]); K is stored transposed, and both are
      written with `dynamic_update_slice` at `cache_index`.
    prompt_tokens: [B, Tp] int32 left-padded prompts.
    prompt_mask: [B, Tp] int32, 1 on real prompt tokens.
    cache_mask: [B, S] bool, the cache slots a query of the row may attend.
    cache_index: [] int32, the slot the next fed token is written to (shared by all rows).
    position: [B] int32, the RoPE position of the row's next fed token (its index in the row's
      sequence); it is below `prompt length + length` exactly when the row is pending.
    tokens: [B, N] int32 completion buffer: sampled and appended tokens, `pad_id` from `length`.
    length: [B] int32, completion tokens in the buffer (sampled and appended).
    loss_mask: [B, N] int32, 1 on tokens the policy sampled, 0 on appended tokens and padding.
    sampling_logprobs: [B, N] float32 log-prob of each sampled token under the distribution it
      was drawn from (after temperature and truncation); 0 for greedy, appended tokens, padding.
    policy_logprobs: [B, N] float32 log-prob of each sampled token under the unmodified policy
      (temperature 1, no truncation); 0 on appended tokens and padding.
    temperature: [B, N] float32, the temperature each token was sampled at (0 for greedy); 1 on
      appended tokens and padding, so that scoring at these temperatures stays finite.
    done: [B] bool, the row's last token is a stop token it sampled. A row also stops sampling
      when its buffer is full (`length == N`).
    key: PRNG key; the token sampled at decode step t uses `jax.random.fold_in(key, t)`.
    step: [] int32 decode step counter (one per sampling step of `decode`, reset by `fork`).
    logits: [B, V] float32 next-token logits; valid for current rows only (None inside the
      decode loop, which keeps them out of its carry).
    logits_current: static; True when no row is pending (after `prefill` and `extend`), so
      `decode` samples before its first forward.
    temperature_logprobs: [B, N] float32 log-density of each token's temperature under the
      temperature head (`head_temperature.HeadTemperature`); 0 for other methods, appended
      tokens and padding.
    head_temperature: [B] float32 raw temperature-head output on the hidden state that gave
      `logits` (valid where `logits` is); 0 when the policy has no temperature head.
  """

  cache: tuple
  prompt_tokens: Array
  prompt_mask: Array
  cache_mask: Array
  cache_index: Array
  position: Array
  tokens: Array
  length: Array
  loss_mask: Array
  sampling_logprobs: Array
  policy_logprobs: Array
  temperature: Array
  done: Array
  key: Array
  step: Array
  logits: Array | None
  logits_current: bool = dataclasses.field(metadata=dict(static=True))
  temperature_logprobs: Array | None = None
  head_temperature: Array | None = None


def prompt_length(state: SamplerState) -> Array:
  """[B] int32 real prompt tokens of each row."""
  return jnp.sum(state.prompt_mask.astype(jnp.int32), axis=-1)


def pending(state: SamplerState) -> Array:
  """[B] bool, True where the row's last token is not in the cache yet."""
  return state.position < prompt_length(state) + state.length


def last_tokens(state: SamplerState) -> Array:
  """[B] int32 last token of each row's sequence (the last prompt token when `length` is 0)."""
  col_b = jnp.maximum(state.length - 1, 0)
  last_completion = jnp.take_along_axis(state.tokens, col_b[:, None], axis=1)[:, 0]
  return jnp.where(state.length > 0, last_completion, state.prompt_tokens[:, -1])


class Completions(NamedTuple):
  """What a generation returns; rows are prompt-major (the G samples of a prompt are adjacent).

  Attributes:
    prompt_tokens: [B, Tp] left-padded prompts.
    prompt_mask: [B, Tp] 1 on real prompt tokens.
    tokens: [B, N] completion tokens, `pad_id` after a row's last one.
    mask: [B, N] 1 on tokens the policy sampled, up to and including a stop token; 0 on
      appended tokens (see `branching.extend`) and padding.
    sampling_logprobs: [B, N] log-prob of each token under the distribution it was drawn from
      (after temperature and truncation); 0 for greedy decoding and where `mask` is 0.
    policy_logprobs: [B, N] log-prob under the unmodified policy (temperature 1, no truncation).
    finished: [B] True where the row's last token is a stop token it sampled.
    temperature: [B, N] the temperature each token was sampled at (0 for greedy, 1 where `mask`
      is 0).
    token_mask: [B, N] 1 on every completion token, sampled or appended: with `prompt_mask`,
      the attention mask of the full rows.
    temperature_logprobs: [B, N] log-density of each token's temperature under the temperature
      head (head-driven sampling), else 0.
  """

  prompt_tokens: Array
  prompt_mask: Array
  tokens: Array
  mask: Array
  sampling_logprobs: Array
  policy_logprobs: Array
  finished: Array
  temperature: Array
  token_mask: Array
  temperature_logprobs: Array | None = None


def completions(state: SamplerState) -> Completions:
  """The completions recorded in `state`.

  Args:
    state: any sampler state.

  Returns:
    `Completions` with `mask` the loss mask.
  """
  n = state.tokens.shape[1]
  return Completions(
    prompt_tokens=state.prompt_tokens,
    prompt_mask=state.prompt_mask,
    tokens=state.tokens,
    mask=state.loss_mask,
    sampling_logprobs=state.sampling_logprobs,
    policy_logprobs=state.policy_logprobs,
    finished=state.done,
    temperature=state.temperature,
    token_mask=(jnp.arange(n)[None, :] < state.length[:, None]).astype(jnp.int32),
    temperature_logprobs=state.temperature_logprobs,
  )
