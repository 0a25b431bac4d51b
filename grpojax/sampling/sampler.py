"""Jitted prefill and `lax.while_loop` decode over a key/value cache.

The functions take and return a `state.SamplerState`, so a caller can decode, branch rows
(`branching.fork`), append environment or teacher tokens (`branching.extend`) and decode again:

  st = prefill(graphdef, params, prompts, mask, key, num_samples=G, max_new_tokens=N, pad_id=0)
  st = decode(graphdef, params, st, method=methods.Sample(0.7), stop_ids=(2,), pad_id=0)
  out = state.completions(st)

Prompts are left-padded to a common bucketed length Tp, so that every row writes its next token
at the same cache index while RoPE positions count only real tokens. Each prompt is prefilled
once and its cache repeated G times, so the G samples of a prompt are contiguous rows. Decoding
stops early once no row can sample.

Shapes: P prompts, G samples per prompt, B = P·G rows, Tp padded prompt length, N completion
capacity, S cache length, V vocabulary.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models import transformer
from grpojax.sampling import head_temperature, methods
from grpojax.sampling import state as state_lib

Array = jax.Array
SamplerState = state_lib.SamplerState


def pad_prompts(
  prompts: Sequence[Sequence[int]], *, pad_id: int, bucket: int = 16
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to a common length rounded up to a multiple of `bucket`.

  Bucketing keeps the jitted sampler from recompiling for every new longest prompt.

  Args:
    prompts: P token-id lists, each at least one token.
    pad_id: the padding token.
    bucket: the padded length is a multiple of it.

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


@functools.partial(
  jax.jit,
  static_argnames=("graphdef", "num_samples", "max_new_tokens", "cache_len", "pad_id"),
)
def prefill(
  graphdef,
  params,
  prompt_tokens_pt: Array,
  prompt_mask_pt: Array,
  key: Array,
  *,
  num_samples: int,
  max_new_tokens: int,
  cache_len: int | None = None,
  pad_id: int,
) -> SamplerState:
  """Prefills each prompt once and repeats its cache for its G samples.

  Args:
    graphdef, params: the policy, from `nnx.split`.
    prompt_tokens_pt: [P, Tp] left-padded prompts (see `pad_prompts`).
    prompt_mask_pt: [P, Tp] 1 on real prompt tokens; every prompt has at least one.
    key: PRNG key of the samples.
    num_samples: G, rows per prompt (contiguous).
    max_new_tokens: N, the completion buffer's capacity (sampled plus appended tokens).
    cache_len: S, default Tp + N (enough for one decode to fill the buffer); every fed token
      takes a slot, so a larger cache leaves room for forks and appended tokens.
    pad_id: fills the completion buffer.

  Returns:
    A `SamplerState` of B = P·G rows whose first-token logits are current.
  """
  if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")
  if int(num_samples) != num_samples or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
  model = nnx.merge(graphdef, params)
  num_prompts, tp = prompt_tokens_pt.shape
  n = max_new_tokens
  s = tp + n if cache_len is None else cache_len
  if s < tp:
    raise ValueError(f"cache_len must be at least the prompt length {tp}, got {cache_len}")
  b = num_prompts * num_samples
  prompt_mask_pt = prompt_mask_pt.astype(jnp.int32)

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

  return SamplerState(
    cache=jax.tree.map(per_sample, out.cache),
    prompt_tokens=per_sample(prompt_tokens_pt.astype(jnp.int32)),
    prompt_mask=per_sample(prompt_mask_pt),
    cache_mask=per_sample(prompt_keys_ps),
    cache_index=jnp.asarray(tp, jnp.int32),
    position=per_sample(jnp.sum(prompt_mask_pt, axis=-1)),
    tokens=jnp.full((b, n), pad_id, jnp.int32),
    length=jnp.zeros((b,), jnp.int32),
    loss_mask=jnp.zeros((b, n), jnp.int32),
    sampling_logprobs=jnp.zeros((b, n), jnp.float32),
    policy_logprobs=jnp.zeros((b, n), jnp.float32),
    temperature=jnp.ones((b, n), jnp.float32),
    done=jnp.zeros((b,), bool),
    key=key,
    step=jnp.zeros((), jnp.int32),
    logits=per_sample(first_logits),
    logits_current=True,
    temperature_logprobs=jnp.zeros((b, n), jnp.float32),
    head_temperature=per_sample(temperature_head_output(model, out.hidden[:, -1:])[:, 0]),
  )


def temperature_head_output(model, hidden_btd: Array) -> Array:
  """The temperature head's raw output [B, T] on hidden states [B, T, D] (zeros without one)."""
  heads = model.heads
  if heads is None or heads.temperature is None:
    return jnp.zeros(hidden_btd.shape[:2], jnp.float32)
  return heads.temperature(hidden_btd)


@functools.partial(jax.jit, static_argnames=("graphdef", "stop_ids", "pad_id"))
def decode(
  graphdef,
  params,
  state: SamplerState,
  *,
  method: methods.Method,
  steps: int | Array | None = None,
  stop_ids: tuple[int, ...],
  pad_id: int,
) -> SamplerState:
  """Samples and feeds tokens until no row can sample, `steps` steps ran, or the cache is full.

  Each step samples token `length` of every live row (not done, buffer not full) with key
  `fold_in(state.key, state.step)`, records it at the row's own length, then feeds it at the
  shared `cache_index`. Pending rows (after `fork`, or an earlier `decode`) are fed first. A row
  is done after a stop token (kept, and in the loss mask). The last sampled token of a row is
  left pending: no forward is spent on it.

  The state is not donated here: a caller that no longer needs it wraps `decode` in
  `jax.jit(..., donate_argnums=...)`, and the cache is then updated in place instead of being
  copied once per call.

  Args:
    graphdef, params: the policy, from `nnx.split`.
    state: a state from `prefill`, `decode`, `branching.extend` or `branching.fork`.
    method: `methods.Greedy()`, a `methods.Sample` or a `head_temperature.HeadTemperature`
      (each token at a temperature drawn from the temperature head; see that module).
    steps: the most sampling steps (each live row samples at most this many tokens; none when
      below 1); default N, enough to fill every buffer. Traced: a new value does not recompile.
    stop_ids: a row is done after sampling any of these.
    pad_id: recorded for rows that no longer sample.

  Returns:
    The advanced state; `logits_current` is False.
  """
  model = nnx.merge(graphdef, params)
  b, n = state.tokens.shape
  s = state.cache_mask.shape[1]
  steps = n if steps is None else steps
  stop_arr = jnp.asarray(stop_ids, jnp.int32)
  prompt_len_b = state_lib.prompt_length(state)
  cols_n = jnp.arange(n)

  def is_stop(tok_b):
    if not stop_ids:
      return jnp.zeros(tok_b.shape, bool)
    return jnp.any(tok_b[:, None] == stop_arr[None, :], axis=-1)

  def live(st):
    return ~st.done & (st.length < n)

  head_driven = isinstance(method, head_temperature.HeadTemperature)
  if head_driven and (model.heads is None or model.heads.temperature is None):
    raise ValueError("HeadTemperature sampling needs a policy with a temperature head")

  def record(st, logits_bv, head_b, active=True):
    """Samples each live row's next token from `logits_bv` and stores it at its length; with a
    head-driven method, first draws the row's temperature from the head's output `head_b`."""
    live_b = live(st) & active
    key = jax.random.fold_in(st.key, st.step)
    tau_lp = jnp.zeros((b,), jnp.float32)
    if head_driven:
      tau_b, tau_lp = method.draw(head_b, jax.random.fold_in(key, 1))
      m = method.token_method(tau_b)
    else:
      m = method.at(st.length)
    tok, samp_lp, pol_lp = methods.sample_token(logits_bv, key, m)
    tok = jnp.where(live_b, tok, pad_id)
    # An elementwise select, not a scatter: it partitions along rows like the buffers do.
    write_bn = live_b[:, None] & (cols_n[None, :] == st.length[:, None])

    def put(buf, val):
      return jnp.where(write_bn, val.astype(buf.dtype)[:, None], buf)

    return dataclasses.replace(
      st,
      tokens=put(st.tokens, tok),
      length=st.length + live_b,
      loss_mask=put(st.loss_mask, jnp.ones((b,), jnp.int32)),
      sampling_logprobs=put(st.sampling_logprobs, samp_lp),
      policy_logprobs=put(st.policy_logprobs, pol_lp),
      temperature=put(st.temperature, methods.token_temperature(m, b)),
      temperature_logprobs=put(st.temperature_logprobs, tau_lp),
      done=st.done | (live_b & is_stop(tok)),
      step=st.step + jnp.asarray(active, jnp.int32),
    )

  def feed(st):
    """Feeds the last token of every live pending row at `cache_index`; returns its logits."""
    w = st.cache_index
    fed_b = live(st) & (st.position < prompt_len_b + st.length)
    cache_mask = jax.lax.dynamic_update_slice(st.cache_mask, fed_b[:, None], (0, w))
    out = model(
      state_lib.last_tokens(st)[:, None],
      positions_bt=st.position[:, None],
      attn_mask_bts=cache_mask[:, None, :],
      cache=st.cache,
      cache_index=w,
      return_logits=False,
    )
    st = dataclasses.replace(
      st, cache=out.cache, cache_mask=cache_mask, cache_index=w + 1, position=st.position + fed_b
    )
    head_b = temperature_head_output(model, out.hidden)[:, 0] if head_driven else None
    return st, model.logits(out.hidden)[:, 0], head_b

  # Rows that sample in this call are pending at its end, the others keep their logits: the
  # [B, V] logits stay out of the loop carry.
  st = dataclasses.replace(state, logits=None)
  first = 0
  if state.logits_current:
    st, first = record(st, state.logits, state.head_temperature, active=steps >= 1), 1

  def cond(carry):
    i, st = carry
    return (i < steps) & jnp.any(live(st)) & (st.cache_index < s)

  def body(carry):
    i, st = carry
    st, logits_bv, head_b = feed(st)
    return i + 1, record(st, logits_bv, head_b)

  _, st = jax.lax.while_loop(cond, body, (jnp.asarray(first, jnp.int32), st))
  return dataclasses.replace(st, logits=state.logits, logits_current=False)


@functools.partial(
  jax.jit,
  static_argnames=("graphdef", "max_new_tokens", "num_samples", "stop_ids", "pad_id"),
)
def sample(
  graphdef,
  params,
  prompt_tokens_pt: Array,
  prompt_mask_pt: Array,
  key: Array,
  *,
  method: methods.Method,
  max_new_tokens: int,
  num_samples: int,
  stop_ids: tuple[int, ...],
  pad_id: int,
) -> state_lib.Completions:
  """`prefill`, `decode` to the end and `state.completions` in one jitted call.

  Recompiles only when a shape or a static argument changes, never for new prompt contents or
  temperature values. See `prefill` and `decode` for the arguments.

  Returns:
    `Completions` with B = P·G rows.
  """
  st = prefill(
    graphdef,
    params,
    prompt_tokens_pt,
    prompt_mask_pt,
    key,
    num_samples=num_samples,
    max_new_tokens=max_new_tokens,
    pad_id=pad_id,
  )
  st = decode(graphdef, params, st, method=method, stop_ids=stop_ids, pad_id=pad_id)
  return state_lib.completions(st)


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
) -> state_lib.Completions:
  """Samples `num_samples` completions for each prompt.

  Args:
    model: the policy.
    prompts: P token-id lists of any lengths (each at least one token).
    key: PRNG key; the same key, model and prompts give the same completions.
    max_new_tokens: N, the most tokens generated per row.
    num_samples: G, samples per prompt (contiguous rows of the output).
    temperature: 0 is greedy decoding.
    top_k, top_p, min_p: truncation (see `methods.Sample`).
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
  if not temperature >= 0:
    raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
  # Truncation settings are checked even when greedy decoding ignores them.
  truncated = methods.Sample(temperature or 1.0, top_k=top_k, top_p=top_p, min_p=min_p)
  method = methods.Greedy() if temperature == 0 else truncated
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
  graphdef, params = nnx.split(model)
  return sample(
    graphdef,
    params,
    jnp.asarray(prompt_tokens),
    jnp.asarray(prompt_mask),
    key,
    method=method,
    max_new_tokens=int(max_new_tokens),
    num_samples=int(num_samples),
    stop_ids=stops,
    pad_id=int(pad_id),
  )
