"""Per-token log-probabilities and entropy without materialising [B, T, V] logits.

A policy-gradient step needs `log π(y_t | y_<t)` (and often the entropy of `π(· | y_<t)`) at
every position, for vocabularies of 150k entries. Computing them from full logits holds
`B·T·V` floats (5 GB for 8,192 tokens of Qwen2's 151,936-entry vocabulary) plus as much again for
the softmax that the backward pass needs. `token_logprobs_and_entropy` instead works from the
last-layer hidden states and the unembedding matrix, in chunks of `seq_chunk` tokens (of the
flattened B·T axis) and, optionally, `vocab_chunk` vocabulary entries, and rematerialises each
chunk's logits in the backward pass (`jax.checkpoint`), so at most a `[seq_chunk, vocab_chunk]`
block of logits is alive at once.

With `z = h·U / τ` the logits of one token at temperature τ:

  log π(y) = z_y − logZ,          logZ = log Σ_v exp(z_v),
  H(π)     = logZ − Σ_v π_v z_v  = log s − (1/s) Σ_v e_v (z_v − m),

where `m` is any shift (the running maximum), `e_v = exp(z_v − m)` and `s = Σ_v e_v`. Across
vocabulary chunks the triple `(m, s, w = Σ_v e_v (z_v − m))` is merged online, as in flash
attention: moving the shift from `m` to `m'` scales `s` by `exp(m − m')` and turns `w` into
`exp(m − m')·(w + (m − m')·s)`. Both outputs are independent of the shifts, so the maxima carry
no gradient (`stop_gradient`), which is exact and keeps `−inf` out of the backward pass.

Einsum / shape legend: B batch, T length, D model dim, V vocab, N = B·T flattened tokens,
C token chunks, S tokens per chunk, K vocabulary chunks, W entries per vocabulary chunk.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Tuned on a 2-core CPU for Qwen2-0.5B's head (D 896, V 151,936; 8,192 tokens, float32, value and
# gradient): [8192, 4096] logit blocks. Measurements in experiments/bench_logprobs.py's docstring.
DEFAULT_SEQ_CHUNK = 8192
DEFAULT_VOCAB_CHUNK = 4096


def _per_row(temperature):
  """A scalar τ as it is; per-token τ [...] broadcast over the vocabulary axis."""
  return temperature if jnp.ndim(temperature) == 0 else jnp.asarray(temperature)[..., None]


def logprobs_from_logits(
  logits_btv: jax.Array, targets_bt: jax.Array, temperature: float | jax.Array = 1.0
) -> jax.Array:
  """Log-probabilities of `targets_bt` under `softmax(logits_btv / temperature)`, naively.

  Holds the full float32 logits: meant for small vocabularies, tests and single decode steps.

  Args:
    logits_btv: logits [..., V], any float dtype.
    targets_bt: integer targets [...] in [0, V).
    temperature: softmax temperature τ > 0, a scalar or one per token [...]; logits are divided
      by it.

  Returns:
    float32 log π(y) [...].
  """
  logp_btv = jax.nn.log_softmax(logits_btv.astype(jnp.float32) / _per_row(temperature), axis=-1)
  return jnp.take_along_axis(logp_btv, targets_bt[..., None], axis=-1)[..., 0]


def entropy_from_logits(logits_btv: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """Entropy `−Σ_v π_v log π_v` of `softmax(logits_btv / temperature)`, naively.

  Args:
    logits_btv: logits [..., V], any float dtype.
    temperature: softmax temperature τ > 0, a scalar or one per token [...]; logits are divided
      by it.

  Returns:
    float32 entropy in nats [...].
  """
  logp_btv = jax.nn.log_softmax(logits_btv.astype(jnp.float32) / _per_row(temperature), axis=-1)
  return -jnp.sum(jnp.exp(logp_btv) * logp_btv, axis=-1)


def _is_concrete(x):
  return not isinstance(x, jax.core.Tracer)


def _validate(hidden_btd, unembed_dv, targets_bt, temperature, seq_chunk, vocab_chunk):
  """Raises ValueError, naming the argument, for anything the computation cannot take."""
  if hidden_btd.ndim != 3:
    raise ValueError(f"hidden_btd must be [B, T, D]; got shape {hidden_btd.shape}.")
  if unembed_dv.ndim != 2:
    raise ValueError(f"unembed_dv must be [D, V]; got shape {unembed_dv.shape}.")
  if unembed_dv.shape[0] != hidden_btd.shape[2]:
    raise ValueError(
      f"unembed_dv's first axis ({unembed_dv.shape[0]}) must equal the model dim D of "
      f"hidden_btd ({hidden_btd.shape[2]}); for tied embeddings pass embedding.T."
    )
  if unembed_dv.shape[1] < 1:
    raise ValueError(f"unembed_dv must have at least one vocabulary entry; got {unembed_dv.shape}.")
  if tuple(targets_bt.shape) != tuple(hidden_btd.shape[:2]):
    raise ValueError(
      f"targets_bt must be [B, T] = {hidden_btd.shape[:2]}; got shape {targets_bt.shape}."
    )
  if not jnp.issubdtype(targets_bt.dtype, jnp.integer):
    raise ValueError(f"targets_bt must be integer token ids; got dtype {targets_bt.dtype}.")
  if not isinstance(seq_chunk, int) or isinstance(seq_chunk, bool) or seq_chunk < 1:
    raise ValueError(f"seq_chunk must be an int >= 1; got {seq_chunk!r}.")
  if vocab_chunk is not None and (
    not isinstance(vocab_chunk, int) or isinstance(vocab_chunk, bool) or vocab_chunk < 1
  ):
    raise ValueError(f"vocab_chunk must be None or an int >= 1; got {vocab_chunk!r}.")
  if jnp.ndim(temperature) == 2:
    if tuple(jnp.shape(temperature)) != tuple(targets_bt.shape):
      raise ValueError(
        f"a per-token temperature must be [B, T] = {tuple(targets_bt.shape)}; got shape "
        f"{jnp.shape(temperature)}."
      )
    if _is_concrete(temperature) and not bool(jnp.all(jnp.asarray(temperature) > 0)):
      raise ValueError("every per-token temperature must be > 0.")
  elif _is_concrete(temperature):
    # A traced temperature (e.g. a jit argument of a sampler) cannot be checked here.
    if jnp.ndim(temperature) != 0 or not float(temperature) > 0:
      raise ValueError(f"temperature must be a scalar > 0 or a [B, T] array; got {temperature!r}.")


def _block_stats(h_sd, u_dw, y_s, start, temperature, logit_dtype):
  """Shifted softmax statistics of one [S, W] block of logits (vocabulary start..start+W).

  Returns:
    (m_s, s_s, w_s, target_logit_s): the block's maximum (no gradient), Σ e, Σ e·(z − m) with
    e = exp(z − m), and the target's logit where it falls inside the block (else 0).
  """
  # 2-D [S, D] @ [D, W]: the layout XLA's CPU backend differentiates fastest.
  z_sw = lax.dot_general(h_sd, u_dw, (((1,), (0,)), ((), ())), preferred_element_type=logit_dtype)
  z_sw = z_sw.astype(jnp.float32) / temperature
  m_s = lax.stop_gradient(jnp.max(z_sw, axis=-1))
  d_sw = z_sw - m_s[:, None]
  e_sw = jnp.exp(d_sw)
  vocab_w = start + lax.broadcasted_iota(jnp.int32, (1, z_sw.shape[1]), 1)
  target_s = jnp.sum(jnp.where(vocab_w == y_s[:, None], z_sw, 0.0), axis=-1)
  return m_s, jnp.sum(e_sw, axis=-1), jnp.sum(e_sw * d_sw, axis=-1), target_s


def _merge(acc, blk):
  """Online merge of two (m, s, w, target) statistics; see the module docstring."""
  m_a, s_a, w_a, t_a = acc
  m_b, s_b, w_b, t_b = blk
  m = jnp.maximum(m_a, m_b)
  # The initial accumulator has m = -inf and s = w = 0: keep (m_a - m)·s_a at 0, not NaN.
  delta_a = jnp.where(jnp.isneginf(m_a), 0.0, m_a - m)
  delta_b = m_b - m
  scale_a, scale_b = jnp.exp(m_a - m), jnp.exp(delta_b)
  s = scale_a * s_a + scale_b * s_b
  w = scale_a * (w_a + delta_a * s_a) + scale_b * (w_b + delta_b * s_b)
  return m, s, w, t_a + t_b


def _chunk_outputs(
  h_sd,
  y_s,
  tau_s,
  unembed_dv,
  *,
  vocab_size,
  vocab_chunk,
  temperature,
  logit_dtype,
  compute_entropy,
):
  """log π(y) and entropy for one chunk of S tokens.

  Args:
    h_sd: hidden states [S, D].
    y_s: targets [S].
    tau_s: per-token temperatures [S], or None for the scalar `temperature`.
    unembed_dv: [D, V].
    vocab_size: V.
    vocab_chunk: W < V, or None for one block of the whole vocabulary.
    temperature, logit_dtype, compute_entropy: as in `token_logprobs_and_entropy`.

  Returns:
    (logprobs_s, entropy_s or None), float32.
  """
  # A scalar stays a closure constant (the very division the sampler does); per-token values
  # divide their own row of logits.
  temperature = temperature if tau_s is None else tau_s[:, None]
  if vocab_chunk is None:
    m_s, s_s, w_s, t_s = _block_stats(h_sd, unembed_dv, y_s, 0, temperature, logit_dtype)
  else:
    num_full, rest = divmod(vocab_size, vocab_chunk)

    def merge_block(acc, start, width):
      u_dw = lax.dynamic_slice_in_dim(unembed_dv, start, width, axis=1)
      return _merge(acc, _block_stats(h_sd, u_dw, y_s, start, temperature, logit_dtype))

    # Remat each block, slicing inside, so the backward pass keeps only [S]-sized carries per
    # block. (A [K, D, W] copy of U as scan input would also stack its cotangent; the slice's
    # cotangent is added into dU in place.)
    def body(acc, start):
      return jax.checkpoint(merge_block, static_argnums=(2,))(acc, start, vocab_chunk), None

    zeros_s = jnp.zeros(y_s.shape, jnp.float32)
    acc = (jnp.full(y_s.shape, -jnp.inf, jnp.float32), zeros_s, zeros_s, zeros_s)
    starts_k = jnp.arange(num_full, dtype=jnp.int32) * vocab_chunk
    acc, _ = lax.scan(body, acc, starts_k)
    if rest:  # The narrower last block, sliced at a static offset: no padding or masking.
      acc = jax.checkpoint(merge_block, static_argnums=(1, 2))(acc, num_full * vocab_chunk, rest)
    m_s, s_s, w_s, t_s = acc
  log_s = jnp.log(s_s)
  logprobs_s = t_s - (m_s + log_s)
  entropy_s = log_s - w_s / s_s if compute_entropy else None
  return logprobs_s, entropy_s


def token_logprobs_and_entropy(
  hidden_btd: jax.Array,
  unembed_dv: jax.Array,
  targets_bt: jax.Array,
  *,
  temperature: float | jax.Array = 1.0,
  seq_chunk: int = DEFAULT_SEQ_CHUNK,
  vocab_chunk: int | None = DEFAULT_VOCAB_CHUNK,
  compute_entropy: bool = True,
  logit_dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, jax.Array | None]:
  """Per-token log π(y_t) and entropy of softmax(h_t·U / τ), chunked to bound memory.

  Equivalent to `logprobs_from_logits(h @ U, y, τ)` and `entropy_from_logits(h @ U, τ)` but never
  holds more than a `[seq_chunk, vocab_chunk or V]` block of logits, in the forward or the
  backward pass (chunk logits are recomputed there: one extra logits matmul per step). Gradients
  flow to `hidden_btd` and `unembed_dv` (and to `temperature` when it is an array). The B·T tokens
  (and a per-token temperature with them) are flattened and split into chunks of `seq_chunk`
  (the last one zero-padded, at temperature 1); with
  `vocab_chunk` each chunk also walks the vocabulary in blocks with an online log-sum-exp (see
  the module docstring). Jittable; chunk sizes are static.

  Memory of value-and-grad beyond its inputs and outputs: a few float32 `[S, W]` blocks
  (S = min(`seq_chunk`, B·T), W = `vocab_chunk` or V) and, when B·T > `seq_chunk`, one `[D, V]`
  partial gradient of the unembedding, which the backward pass adds into dU once per token
  chunk (3·D·V floats of memory traffic each time). Hence the defaults: one large token chunk
  that walks the vocabulary in blocks ("vocabulary-major"), so dU is written block by block in
  place; experiments/bench_logprobs.py measures them against the naive computation.

  Args:
    hidden_btd: last-layer hidden states [B, T, D] (after the final norm), any float dtype.
    unembed_dv: unembedding [D, V]; for tied embeddings pass `embedding_vd.T`.
    targets_bt: integer token ids [B, T] in [0, V) whose log-probabilities are wanted.
    temperature: τ > 0 dividing the logits: a Python number or a scalar array, or a [B, T]
      array giving each token its own τ (e.g. the temperatures a sampler drew each token at).
    seq_chunk: tokens per chunk of the flattened B·T axis (>= 1).
    vocab_chunk: vocabulary entries per block (>= 1), or None for the whole vocabulary at once.
    compute_entropy: whether to compute the entropy as well.
    logit_dtype: accumulation/output dtype of the logits matmul; statistics are float32.

  Returns:
    `(logprobs_bt, entropy_bt)`: float32 [B, T] each; `entropy_bt` is None unless
    `compute_entropy`.

  Raises:
    ValueError: for mismatched shapes, non-integer targets, chunk sizes < 1 or τ <= 0 (a
      traced τ is not checked).
  """
  _validate(hidden_btd, unembed_dv, targets_bt, temperature, seq_chunk, vocab_chunk)
  batch, length, dim = hidden_btd.shape
  vocab_size = unembed_dv.shape[1]
  num_tokens = batch * length
  if num_tokens == 0:
    empty_bt = jnp.zeros((batch, length), jnp.float32)
    return empty_bt, (empty_bt if compute_entropy else None)
  chunk = min(seq_chunk, num_tokens)
  num_chunks = -(-num_tokens // chunk)
  pad_n = num_chunks * chunk - num_tokens

  hidden_nd = hidden_btd.reshape(num_tokens, dim)
  targets_n = targets_bt.reshape(num_tokens).astype(jnp.int32)
  if pad_n:
    hidden_nd = jnp.pad(hidden_nd, ((0, pad_n), (0, 0)))
    targets_n = jnp.pad(targets_n, (0, pad_n))
  hidden_csd = hidden_nd.reshape(num_chunks, chunk, dim)
  targets_cs = targets_n.reshape(num_chunks, chunk)
  tau_cs = None
  if jnp.ndim(temperature) == 2:
    tau_n = jnp.asarray(temperature, jnp.float32).reshape(num_tokens)
    tau_cs = jnp.pad(tau_n, (0, pad_n), constant_values=1.0).reshape(num_chunks, chunk)

  if vocab_chunk is not None and vocab_chunk >= vocab_size:
    vocab_chunk = None

  chunk_fn = functools.partial(
    _chunk_outputs,
    vocab_size=vocab_size,
    vocab_chunk=vocab_chunk,
    temperature=temperature,
    logit_dtype=logit_dtype,
    compute_entropy=compute_entropy,
  )
  if vocab_chunk is None:
    # Remat the chunk: its backward recomputes the [S, V] logits instead of storing them.
    # (With vocabulary blocks the blocks are remat'd instead; remat of the chunk on top would
    # recompute every block's logits twice.)
    chunk_fn = jax.checkpoint(chunk_fn)

  if num_chunks == 1:
    # No loop: saves the per-chunk [D, V] partial of dU that the loop's backward adds up.
    tau_s = None if tau_cs is None else tau_cs[0]
    logprobs_s, entropy_s = chunk_fn(hidden_csd[0], targets_cs[0], tau_s, unembed_dv)
    logprobs_cs = logprobs_s[None]
    entropy_cs = None if entropy_s is None else entropy_s[None]
  else:

    def body(_, xs):
      h_sd, y_s, tau_s = xs
      return None, chunk_fn(h_sd, y_s, tau_s, unembed_dv)

    _, (logprobs_cs, entropy_cs) = lax.scan(body, None, (hidden_csd, targets_cs, tau_cs))
  logprobs_bt = logprobs_cs.reshape(-1)[:num_tokens].reshape(batch, length)
  if not compute_entropy:
    return logprobs_bt, None
  return logprobs_bt, entropy_cs.reshape(-1)[:num_tokens].reshape(batch, length)
