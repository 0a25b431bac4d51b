"""Branching a sampler state: `fork` copies rows from a completion prefix, `extend` appends
tokens that the policy did not sample.

Both keep the state's invariants (see `state`): holes in a row's `cache_mask` hide the slots that
are no longer part of its sequence, and every row is either current or pending on its last token.
Neither needs a forward of its own beyond feeding the tokens it adds: a forked row is left
pending, and the next `sampler.decode` or `extend` feeds its last token at the next free slot.

Shapes: B rows, R new rows, N completion capacity, S cache length, E appended tokens per row,
C = E (+1) fed tokens, V vocabulary.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.sampling import state as state_lib

Array = jax.Array
SamplerState = state_lib.SamplerState


@functools.partial(jax.jit, static_argnames=("pad_id",))
def fork(
  state: SamplerState, rows: Array, at: Array | int, key: Array, *, pad_id: int
) -> SamplerState:
  """New rows that continue source rows from one of their completion prefixes.

  New row r copies source row `rows[r]` and keeps its first `at[r]` completion tokens (clipped to
  the source's length), so that the next `sampler.decode` samples completion token `at[r]`. Every
  new row is pending on the last token of its kept sequence (the last prompt token when `at` is 0):
  the cache slots of that token and of everything after it become holes, and `sampler.decode`
  or `extend` feeds it again at the next free slot, so a fork costs no forward of its own.

  Args:
    state: the state to branch from.
    rows: [R] int, the source row of each new row (repeats allowed).
    at: int or [R] int, completion tokens each new row keeps.
    key: the new rows' PRNG key; their decode step counter restarts at 0, so the new rows'
      draws depend only on `key`.
    pad_id: fills the cleared completion positions.

  Returns:
    A `SamplerState` of R rows, not done, with everything after `at` cleared.
  """
  rows = jnp.asarray(rows, jnp.int32)
  take = lambda x: jnp.take(x, rows, axis=0)
  src = jax.tree.map(take, dataclasses.replace(state, cache_index=None, key=None, step=None))
  at_r = jnp.clip(jnp.broadcast_to(jnp.asarray(at, jnp.int32), rows.shape), 0, src.length)
  # Tokens [0, keep) of each sequence stay in the cache; token `keep` is fed again.
  keep_r = state_lib.prompt_length(src) + at_r - 1
  rank_rs = jnp.cumsum(src.cache_mask.astype(jnp.int32), axis=1) - 1
  kept_rn = jnp.arange(src.tokens.shape[1])[None, :] < at_r[:, None]
  clear = lambda x, fill: jnp.where(kept_rn, x, jnp.asarray(fill, x.dtype))
  return dataclasses.replace(
    src,
    cache_mask=src.cache_mask & (rank_rs < keep_r[:, None]),
    cache_index=state.cache_index,
    position=keep_r,
    tokens=clear(src.tokens, pad_id),
    length=at_r,
    loss_mask=clear(src.loss_mask, 0),
    sampling_logprobs=clear(src.sampling_logprobs, 0),
    policy_logprobs=clear(src.policy_logprobs, 0),
    temperature=clear(src.temperature, 1),
    temperature_logprobs=clear(src.temperature_logprobs, 0),
    done=jnp.zeros(rows.shape, bool),
    key=key,
    step=jnp.zeros((), jnp.int32),
    logits_current=False,
  )


@functools.partial(jax.jit, static_argnames=("graphdef",))
def extend(graphdef, params, state: SamplerState, tokens_be: Array, mask_be: Array) -> SamplerState:
  """Appends given tokens to each row without sampling them, and makes every row current.

  The tokens (environment observations, teacher prefixes) are fed into the cache in one forward,
  after each pending row's last token, and written into the completion buffer with loss mask 0,
  log-probs 0 and temperature 1. Rows that receive tokens are no longer done. Tokens beyond a
  row's free buffer space are dropped.

  The forward writes C = E slots (E + 1 when `state.logits_current` is False) from
  `cache_index`, which must leave room: `cache_index + C <= S`. Were it not, the logits of every
  row are set to NaN rather than silently attending overwritten slots.

  Args:
    graphdef, params: the policy, from `nnx.split`.
    state: any sampler state.
    tokens_be: [B, E] int tokens to append.
    mask_be: [B, E] 1 on the real tokens, appended in order (the row's count is its sum).

  Returns:
    The state with the tokens appended and every row's next-token logits current.
  """
  model = nnx.merge(graphdef, params)
  b, n = state.tokens.shape
  s = state.cache_mask.shape[1]
  tokens_be = tokens_be.astype(jnp.int32)
  # The k-th real token of a row goes to completion column length + k, if the buffer has room.
  col_be = state.length[:, None] + jnp.cumsum(mask_be > 0, axis=1, dtype=jnp.int32) - 1
  real_be = (mask_be > 0) & (col_be < n)
  if state.logits_current:
    chunk_bc, real_bc = tokens_be, real_be
  else:
    chunk_bc = jnp.concatenate([state_lib.last_tokens(state)[:, None], tokens_be], axis=1)
    real_bc = jnp.concatenate([state_lib.pending(state)[:, None], real_be], axis=1)
  c = chunk_bc.shape[1]
  if c == 0:
    return state
  w = state.cache_index
  cache_mask = jax.lax.dynamic_update_slice(state.cache_mask, real_bc, (0, w))
  # Query c sits at slot w + c: causal over the chunk, and only the row's own slots.
  attn_bcs = cache_mask[:, None, :] & (
    jnp.arange(s)[None, None, :] <= (w + jnp.arange(c))[None, :, None]
  )
  fed_b = jnp.sum(real_bc, axis=1, dtype=jnp.int32)
  positions_bc = state.position[:, None] + jnp.cumsum(real_bc, axis=1, dtype=jnp.int32) - 1
  out = model(
    chunk_bc,
    positions_bt=jnp.maximum(positions_bc, 0),
    attn_mask_bts=attn_bcs,
    cache=state.cache,
    cache_index=w,
    return_logits=False,
  )
  last_b = c - 1 - jnp.argmax(real_bc[:, ::-1], axis=1)
  hidden_b1d = jnp.take_along_axis(out.hidden, last_b[:, None, None], axis=1)
  logits_bv = jnp.where((fed_b > 0)[:, None], model.logits(hidden_b1d)[:, 0], state.logits)
  logits_bv = jnp.where(w + c <= s, logits_bv, jnp.nan)
  head_b = state.head_temperature
  if model.heads is not None and model.heads.temperature is not None:
    # The temperature head's output next to the logits it goes with (head-driven sampling).
    head_b = jnp.where(fed_b > 0, model.heads.temperature(hidden_b1d)[:, 0], head_b)

  rows_b1 = jnp.arange(b)[:, None]
  col_be = jnp.where(real_be, col_be, n)  # column n is out of range: the write is dropped

  def put(buf, val):
    return buf.at[rows_b1, col_be].set(
      jnp.broadcast_to(val, col_be.shape).astype(buf.dtype), mode="drop"
    )

  appended_b = jnp.sum(real_be, axis=1, dtype=jnp.int32)
  return dataclasses.replace(
    state,
    cache=out.cache,
    cache_mask=cache_mask,
    cache_index=w + c,
    position=state.position + fed_b,
    tokens=put(state.tokens, tokens_be),
    length=state.length + appended_b,
    loss_mask=put(state.loss_mask, 0),
    sampling_logprobs=put(state.sampling_logprobs, 0),
    policy_logprobs=put(state.policy_logprobs, 0),
    temperature=put(state.temperature, 1),
    temperature_logprobs=put(state.temperature_logprobs, 0),
    done=state.done & (appended_b == 0),
    logits=logits_bv,
    logits_current=True,
    head_temperature=head_b,
  )
