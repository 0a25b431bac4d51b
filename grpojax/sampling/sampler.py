"""Jitted prefill plus a `lax.while_loop` decode over a key/value cache.

Prompts are left-padded to a common bucketed length Tp, so that every row writes its next token
at the same cache index (one `dynamic_update_slice` for the whole batch) while RoPE positions
count only real tokens. Each prompt is prefilled once and its cache repeated G times, so the G
samples of a prompt are contiguous rows. The loop stops early once every row has finished.

Shapes: P prompts, G samples per prompt, B = P·G rows, Tp padded prompt length, N new tokens,
S = Tp + N cache length, V vocabulary.
"""

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models import transformer
from grpojax.sampling import methods

Array = jax.Array


class Completions(NamedTuple):
  """What `generate` returns; rows are prompt-major (the G samples of a prompt are adjacent).

  Attributes:
    prompt_tokens: [B, Tp] left-padded prompts.
    prompt_mask: [B, Tp] 1 on real prompt tokens.
    tokens: [B, N] generated tokens, `pad_id` after a row finished.
    mask: [B, N] 1 on generated tokens up to and including the stop token.
    sampling_logprobs: [B, N] log-prob of each token under the distribution it was drawn from
      (after temperature and truncation); 0 for greedy decoding and on masked positions.
    policy_logprobs: [B, N] log-prob under the unmodified policy (temperature 1, no truncation).
    finished: [B] True where the row emitted an EOS or stop token.
  """

  prompt_tokens: Array
  prompt_mask: Array
  tokens: Array
  mask: Array
  sampling_logprobs: Array
  policy_logprobs: Array
  finished: Array


class _LoopState(NamedTuple):
  step: Array
  last_token: Array
  done: Array
  cache: tuple
  key: Array
  tokens: Array
  sampling_logprobs: Array
  policy_logprobs: Array


def pad_prompts(
  prompts: Sequence[Sequence[int]], *, pad_id: int, bucket: int = 16
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to a common length rounded up to a multiple of `bucket`.

  Bucketing keeps the jitted sampler from recompiling for every new longest prompt.

  Returns:
    (tokens [P, Tp] int32, mask [P, Tp] int32).
  """
  if not prompts:
    raise ValueError("prompts is empty")
  if bucket < 1:
    raise ValueError(f"bucket must be >= 1, got {bucket}")
  for i, p in enumerate(prompts):
    if len(p) == 0:
      raise ValueError(f"prompt {i} is empty; a prompt needs at least one token")
  longest = max(len(p) for p in prompts)
  tp = -(-longest // bucket) * bucket
  tokens = np.full((len(prompts), tp), pad_id, np.int32)
  mask = np.zeros((len(prompts), tp), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, tp - len(p) :] = np.asarray(p, np.int32)
    mask[i, tp - len(p) :] = 1
  return tokens, mask


def generate(
  model: transformer.Decoder,
  prompts: Sequence[Sequence[int]],
  *,
  key: Array,
  max_new_tokens: int,
  num_samples: int = 1,
  temperature: float = 1.0,
  top_k: int | None = None,
  top_p: float = 1.0,
  min_p: float = 0.0,
  eos_ids: Sequence[int] = (),
  stop_ids: Sequence[int] = (),
  pad_id: int = 0,
  prompt_bucket: int = 16,
) -> Completions:
  """Samples `num_samples` completions for each prompt.

  Args:
    model: the policy.
    prompts: P token-id lists of any lengths (each at least one token).
    key: PRNG key; the same key, model and prompts give the same completions.
    max_new_tokens: N, the most tokens generated per row.
    num_samples: G, samples per prompt (contiguous rows of the output).
    temperature: 0 is greedy decoding.
    top_k, top_p, min_p: truncation (see `methods.SamplingParams`).
    eos_ids, stop_ids: a row finishes after emitting any of these (the token is kept and masked
      in); they are one list, named apart for readability.
    pad_id: fills prompts on the left and finished rows on the right.
    prompt_bucket: prompts are padded to a multiple of this length.

  Returns:
    `Completions` with B = P·G rows.
  """
  if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
  if int(num_samples) != num_samples or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
  params = methods.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
  vocab = model.config.vocab_size
  stops = tuple(sorted({int(t) for t in (*eos_ids, *stop_ids)}))
  for t in (*stops, pad_id):
    if not 0 <= t < vocab:
      raise ValueError(f"token id {t} (eos/stop/pad) is outside the vocabulary [0, {vocab})")
  for i, p in enumerate(prompts):
    bad = [t for t in p if not 0 <= int(t) < vocab]
    if bad:
      raise ValueError(f"prompt {i} has token ids {bad[:5]} outside the vocabulary [0, {vocab})")
  prompt_tokens, prompt_mask = pad_prompts(prompts, pad_id=pad_id, bucket=prompt_bucket)
  graphdef, state = nnx.split(model)
  return generate_padded(
    graphdef,
    state,
    jnp.asarray(prompt_tokens),
    jnp.asarray(prompt_mask),
    key,
    max_new_tokens=int(max_new_tokens),
    num_samples=int(num_samples),
    params=params,
    stop_ids=stops,
    pad_id=int(pad_id),
  )


@functools.partial(
  jax.jit,
  static_argnames=("graphdef", "max_new_tokens", "num_samples", "params", "stop_ids", "pad_id"),
)
def generate_padded(
  graphdef,
  state,
  prompt_tokens_pt: Array,
  prompt_mask_pt: Array,
  key: Array,
  *,
  max_new_tokens: int,
  num_samples: int,
  params: methods.SamplingParams,
  stop_ids: tuple[int, ...],
  pad_id: int,
) -> Completions:
  """The jitted sampler on already left-padded prompts (see `generate` for the arguments).

  Recompiles only when a shape or a static argument changes, never for new prompt contents.
  """
  model = nnx.merge(graphdef, state)
  num_prompts, tp = prompt_tokens_pt.shape
  n = max_new_tokens
  s = tp + n
  b = num_prompts * num_samples
  prompt_mask_pt = prompt_mask_pt.astype(jnp.int32)

  # Prefill each prompt once.
  prompt_keys_ps = jnp.zeros((num_prompts, s), bool).at[:, :tp].set(prompt_mask_pt > 0)
  causal_ts = jnp.arange(s)[None, :] <= jnp.arange(tp)[:, None]
  cache = transformer.init_cache(model.config, num_prompts, s, model.dtype)
  out = model(
    prompt_tokens_pt,
    positions_bt=transformer.positions_from_mask(prompt_mask_pt),
    attn_mask_bts=causal_ts[None] & prompt_keys_ps[:, None, :],
    cache=cache,
    cache_index=0,
    return_logits=False,
  )
  first_logits = model.logits(out.hidden[:, -1:])[:, 0]

  def per_sample(x):
    return jnp.repeat(x, num_samples, axis=0)

  cache = jax.tree.map(per_sample, out.cache)
  first_logits = per_sample(first_logits)
  prompt_keys_bs = per_sample(prompt_keys_ps)
  prompt_len_b = per_sample(jnp.sum(prompt_mask_pt, axis=-1))
  stop_arr = jnp.asarray(stop_ids, jnp.int32)

  def is_stop(tok):
    if not stop_ids:
      return jnp.zeros(tok.shape, bool)
    return jnp.any(tok[:, None] == stop_arr[None, :], axis=-1)

  def record(state: _LoopState, step, logits_bv) -> _LoopState:
    """Samples token `step` from `logits_bv` and stores it for rows still running."""
    tok, samp_lp, pol_lp = methods.sample_token(
      logits_bv, jax.random.fold_in(state.key, step), params
    )
    live = ~state.done
    tok = jnp.where(live, tok, pad_id)
    zero = jnp.zeros_like(samp_lp)
    return state._replace(
      step=step,
      last_token=tok,
      done=state.done | (live & is_stop(tok)),
      tokens=state.tokens.at[:, step].set(tok),
      sampling_logprobs=state.sampling_logprobs.at[:, step].set(jnp.where(live, samp_lp, zero)),
      policy_logprobs=state.policy_logprobs.at[:, step].set(jnp.where(live, pol_lp, zero)),
    )

  init = _LoopState(
    step=jnp.zeros((), jnp.int32),
    last_token=jnp.zeros((b,), jnp.int32),
    done=jnp.zeros((b,), bool),
    cache=cache,
    key=key,
    tokens=jnp.full((b, n), pad_id, jnp.int32),
    sampling_logprobs=jnp.zeros((b, n), jnp.float32),
    policy_logprobs=jnp.zeros((b, n), jnp.float32),
  )
  init = record(init, jnp.zeros((), jnp.int32), first_logits)
  cache_pos_s = jnp.arange(s)

  def cond(st: _LoopState):
    return (st.step + 1 < n) & ~jnp.all(st.done)

  def body(st: _LoopState) -> _LoopState:
    # Feed token `step` at cache index Tp + step; its logits give token `step + 1`.
    write = tp + st.step
    keys_bs = prompt_keys_bs | ((cache_pos_s[None] >= tp) & (cache_pos_s[None] <= write))
    out = model(
      st.last_token[:, None],
      positions_bt=(prompt_len_b + st.step)[:, None],
      attn_mask_bts=keys_bs[:, None, :],
      cache=st.cache,
      cache_index=write,
      return_logits=False,
    )
    st = st._replace(cache=out.cache)
    return record(st, st.step + 1, model.logits(out.hidden)[:, 0])

  final = jax.lax.while_loop(cond, body, init)
  # A row's mask covers its tokens up to and including its stop token.
  stop_seen = jnp.cumsum(is_stop(final.tokens.reshape(-1)).reshape(b, n), axis=-1)
  mask = (stop_seen - is_stop(final.tokens.reshape(-1)).reshape(b, n)) == 0
  steps_run = jnp.arange(n)[None, :] <= final.step
  mask = (mask & steps_run).astype(jnp.int32)
  return Completions(
    prompt_tokens=per_sample(prompt_tokens_pt),
    prompt_mask=per_sample(prompt_mask_pt),
    tokens=final.tokens,
    mask=mask,
    sampling_logprobs=final.sampling_logprobs,
    policy_logprobs=final.policy_logprobs,
    finished=final.done,
  )
