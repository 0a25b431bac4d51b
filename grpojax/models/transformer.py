"""Decoder-only transformer (Qwen2, Qwen3, Llama 3.x) in Flax NNX.

Einsum legend: B batch, T query length, S key length (cache length), D model dim, N query heads,
K key/value heads, G query heads per kv head (N = K·G), M = T·G query rows of a kv head, H head
dim, V vocabulary, F MLP width.

The attribute names mirror Hugging Face's module names so that a parameter path such as
`layers/3/self_attn/q_proj/kernel` maps to `model.layers.3.self_attn.q_proj.weight` by rule.

The key/value cache stores K transposed, `[B, K, H, S]`, and V as `[B, K, S, H]`, written in place
with `dynamic_update_slice`; on CPU this layout made grouped decode attention the fastest of the
layouts measured. The same attention code serves training (no cache), prefill and
decode, so that sampler and trainer compute the same function; a decode step reads only the filled
blocks of a long cache (`filled_attention`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.models import config as config_lib
from grpojax.models import heads as heads_lib
from grpojax.models import modules
from grpojax.precision import policy as precision_policy

Array = jax.Array
LayerCache = tuple[Array, Array]  # (k_bkhs, v_bksh)
# Frozen values, so one instance serves as every build's default.
DEFAULT_PRECISION = precision_policy.PrecisionPolicy()
NO_HEADS = heads_lib.HeadsConfig()
# Cache slots per block of cached attention: caches up to this long are read whole (the fastest
# short decode on CPU), longer ones block by block up to the filled slots (`filled_attention`).
CACHE_BLOCK = 128


class DecoderOutput(NamedTuple):
  """What a forward pass returns.

  Attributes:
    logits: [B, T, V] float32, or None when `return_logits=False`.
    hidden: [B, T, D] last-layer hidden states after the final norm (the unembedding's input).
    cache: updated per-layer (k, v) cache, or None when none was given.
  """

  logits: Array | None
  hidden: Array
  cache: tuple[LayerCache, ...] | None


def rope_cos_sin(positions_bt: Array, inv_freq_h: Array) -> tuple[Array, Array]:
  """cos and sin of position·frequency, each [B, T, H/2], float32."""
  angles = positions_bt.astype(jnp.float32)[..., None] * inv_freq_h
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_btnh: Array, cos_bth: Array, sin_bth: Array) -> Array:
  """Rotates the two halves of the head dimension (the Hugging Face `rotate_half` layout)."""
  half = x_btnh.shape[-1] // 2
  x1, x2 = x_btnh[..., :half], x_btnh[..., half:]
  cos = cos_bth[:, :, None, :].astype(x_btnh.dtype)
  sin = sin_bth[:, :, None, :].astype(x_btnh.dtype)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def dense_attention(q_bkmh: Array, k_bkhs: Array, v_bksh: Array, mask_bts: Array) -> Array:
  """Softmax attention of the M = T·G query rows of each kv head over all S keys.

  Args:
    q_bkmh: [B, K, M, H] queries, row m = t·G + g.
    k_bkhs: [B, K, H, S] keys (transposed).
    v_bksh: [B, K, S, H] values.
    mask_bts: [B, T, S] bool, True where query t may attend key s.

  Returns:
    [B, K, M, H] attention outputs in the queries' dtype.
  """
  dtype, h = q_bkmh.dtype, q_bkmh.shape[-1]
  g = q_bkmh.shape[2] // mask_bts.shape[1]
  scores = jnp.einsum(
    "BKMH,BKHS->BKMS", q_bkmh, k_bkhs.astype(dtype), preferred_element_type=jnp.float32
  ) * (h**-0.5)
  mask_bms = jnp.repeat(mask_bts, g, axis=1)
  scores = jnp.where(mask_bms[:, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  return jnp.einsum("BKMS,BKSH->BKMH", probs, v_bksh.astype(dtype))


def blockwise_attention(
  q_bkmh: Array,
  k_bkhs: Array,
  v_bksh: Array,
  mask_bts: Array,
  *,
  num_filled: Array | int,
  block: int,
) -> Array:
  """`dense_attention` over only the first `num_filled` cache slots, read in blocks of C slots.

  A `lax.fori_loop` runs over ceil(num_filled / C) blocks with an online softmax (running
  maximum and normaliser, arXiv:1805.02867, as in FlashAttention arXiv:2205.14135), so a decode
  step at cache index t reads O(t) slots instead of all S, with one compilation for every t. The
  last block is shifted back to end at slot S when S is not a multiple of C; its slots that the
  previous block covered are masked out. Slots past `num_filled` must be masked out by
  `mask_bts` (the sampler's cache masks never open an unwritten slot).

  Args:
    q_bkmh, k_bkhs, v_bksh, mask_bts: as in `dense_attention`.
    num_filled: [] int, the slots that can hold keys (cache index + T after the write).
    block: C, slots per block, at most S.

  Returns:
    [B, K, M, H] attention outputs in the queries' dtype; equal to `dense_attention` up to
    float rounding wherever a query attends at least one key.
  """
  b, k_heads, m, h = q_bkmh.shape
  s = k_bkhs.shape[-1]
  if not 1 <= block <= s:
    raise ValueError(f"block must be in [1, S={s}], got {block}")
  dtype = q_bkmh.dtype
  g = m // mask_bts.shape[1]
  lowest = jnp.finfo(jnp.float32).min
  num_blocks = (jnp.asarray(num_filled, jnp.int32) + block - 1) // block

  def accumulate(j, carry):
    max_bkm, norm_bkm, acc_bkmh = carry
    start = jnp.minimum(j * block, s - block)
    k_bkhc = jax.lax.dynamic_slice_in_dim(k_bkhs, start, block, axis=3)
    v_bkch = jax.lax.dynamic_slice_in_dim(v_bksh, start, block, axis=2)
    fresh_c = start + jnp.arange(block) >= j * block
    mask_btc = jax.lax.dynamic_slice_in_dim(mask_bts, start, block, axis=2) & fresh_c
    scores = jnp.einsum(
      "BKMH,BKHC->BKMC", q_bkmh, k_bkhc.astype(dtype), preferred_element_type=jnp.float32
    ) * (h**-0.5)
    scores = jnp.where(jnp.repeat(mask_btc, g, axis=1)[:, None], scores, lowest)
    new_max = jnp.maximum(max_bkm, jnp.max(scores, axis=-1))
    # Until a row meets its first attendable key its masked scores count with weight 1; the
    # first real key's rescale factor exp(lowest - real) = 0 then wipes them.
    rescale = jnp.exp(max_bkm - new_max)
    probs = jnp.exp(scores - new_max[..., None])
    norm_bkm = norm_bkm * rescale + jnp.sum(probs, axis=-1)
    acc_bkmh = acc_bkmh * rescale[..., None] + jnp.einsum(
      "BKMC,BKCH->BKMH",
      probs.astype(dtype),
      v_bkch.astype(dtype),
      preferred_element_type=jnp.float32,
    )
    return new_max, norm_bkm, acc_bkmh

  init = (
    jnp.full((b, k_heads, m), lowest, jnp.float32),
    jnp.zeros((b, k_heads, m), jnp.float32),
    jnp.zeros((b, k_heads, m, h), jnp.float32),
  )
  _, norm_bkm, acc_bkmh = jax.lax.fori_loop(0, num_blocks, accumulate, init)
  return (acc_bkmh / norm_bkm[..., None]).astype(dtype)


def filled_attention(
  q_bkmh: Array,
  k_bkhs: Array,
  v_bksh: Array,
  mask_bts: Array,
  *,
  num_filled: Array | int,
  block: int,
) -> Array:
  """Attention over a cache of which only the first `num_filled` slots can hold keys.

  Reads the filled blocks (`blockwise_attention`) while they cover at most half of the cache,
  and the whole cache (`dense_attention`) after, or when `num_filled` is a Python int: each
  block is copied out of the cache before its matmuls, which on CPU made a block's slots cost
  about twice a whole-cache read's.

  Args:
    q_bkmh, k_bkhs, v_bksh, mask_bts, num_filled, block: as in `blockwise_attention`.

  Returns:
    [B, K, M, H] attention outputs in the queries' dtype.
  """
  if isinstance(num_filled, int):
    # A known count (prefill) would unroll a short block loop, and XLA on CPU then fuses the
    # slices into slow matmuls: prefill reads the whole cache once instead.
    return dense_attention(q_bkmh, k_bkhs, v_bksh, mask_bts)
  s = k_bkhs.shape[-1]
  read = (jnp.asarray(num_filled, jnp.int32) + block - 1) // block * block
  return jax.lax.cond(
    2 * read <= s,
    lambda: blockwise_attention(
      q_bkmh, k_bkhs, v_bksh, mask_bts, num_filled=num_filled, block=block
    ),
    lambda: dense_attention(q_bkmh, k_bkhs, v_bksh, mask_bts),
  )


class Attention(nnx.Module):
  """Grouped-query attention with RoPE, optional q/k/v bias and optional q/k RMSNorm."""

  def __init__(
    self,
    cfg: config_lib.ModelConfig,
    *,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    precision: precision_policy.PrecisionPolicy,
    path: str,
  ):
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    bias, out_bias = cfg.attention_bias, cfg.attention_out_bias
    at = lambda name: precision.projection(f"{path}/{name}")
    self.q_proj = modules.Dense(d, n * h, use_bias=bias, precision=at("q_proj"), **kw)
    self.k_proj = modules.Dense(d, k * h, use_bias=bias, precision=at("k_proj"), **kw)
    self.v_proj = modules.Dense(d, k * h, use_bias=bias, precision=at("v_proj"), **kw)
    self.o_proj = modules.Dense(n * h, d, use_bias=out_bias, precision=at("o_proj"), **kw)
    if cfg.qk_norm:
      self.q_norm = modules.RMSNorm(h, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
      self.k_norm = modules.RMSNorm(h, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    else:
      self.q_norm = self.k_norm = None
    self.num_kv_heads, self.group_size, self.head_dim = k, cfg.group_size, h

  def __call__(
    self,
    x_btd: Array,
    cos_sin,
    mask_bts: Array,
    cache: LayerCache | None,
    cache_index: Array | None,
    cache_block: int = CACHE_BLOCK,
  ) -> tuple[Array, LayerCache | None]:
    b, t, _ = x_btd.shape
    k_heads, g, h = self.num_kv_heads, self.group_size, self.head_dim
    q = self.q_proj(x_btd).reshape(b, t, k_heads * g, h)
    k = self.k_proj(x_btd).reshape(b, t, k_heads, h)
    v = self.v_proj(x_btd).reshape(b, t, k_heads, h)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
    k_bkhs = k.transpose(0, 2, 3, 1)
    v_bksh = v.transpose(0, 2, 1, 3)
    if cache is not None:
      k_cache, v_cache = cache
      k_bkhs = jax.lax.dynamic_update_slice(
        k_cache, k_bkhs.astype(k_cache.dtype), (0, 0, 0, cache_index)
      )
      v_bksh = jax.lax.dynamic_update_slice(
        v_cache, v_bksh.astype(v_cache.dtype), (0, 0, cache_index, 0)
      )
      cache = (k_bkhs, v_bksh)
    # The T queries and the G query heads of a kv head share one matmul over M = T·G rows:
    # with T = 1 (decode) a separate T axis made XLA's CPU dot ~8x slower, and training gains too.
    q_bkmh = q.reshape(b, t, k_heads, g, h).transpose(0, 2, 1, 3, 4).reshape(b, k_heads, t * g, h)
    if cache is not None and k_bkhs.shape[-1] > cache_block:
      out = filled_attention(
        q_bkmh, k_bkhs, v_bksh, mask_bts, num_filled=cache_index + t, block=cache_block
      )
    else:
      out = dense_attention(q_bkmh, k_bkhs, v_bksh, mask_bts)
    out = out.reshape(b, k_heads, t, g, h).transpose(0, 2, 1, 3, 4)
    return self.o_proj(out.reshape(b, t, k_heads * g * h)), cache


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) · up(x))."""

  def __init__(
    self,
    cfg: config_lib.ModelConfig,
    *,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    precision: precision_policy.PrecisionPolicy,
    path: str,
  ):
    kw = dict(use_bias=cfg.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    d, f = cfg.hidden_size, cfg.intermediate_size
    at = lambda name: precision.projection(f"{path}/{name}")
    self.gate_proj = modules.Dense(d, f, precision=at("gate_proj"), **kw)
    self.up_proj = modules.Dense(d, f, precision=at("up_proj"), **kw)
    self.down_proj = modules.Dense(f, d, precision=at("down_proj"), **kw)

  def __call__(self, x: Array) -> Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
  """Pre-norm residual block: attention then MLP."""

  def __init__(
    self,
    cfg: config_lib.ModelConfig,
    *,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    precision: precision_policy.PrecisionPolicy,
    path: str,
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, precision=precision)
    self.input_layernorm = modules.RMSNorm(
      cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype
    )
    self.self_attn = Attention(cfg, path=f"{path}/self_attn", **kw)
    self.post_attention_layernorm = modules.RMSNorm(
      cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype
    )
    self.mlp = MLP(cfg, path=f"{path}/mlp", **kw)

  def __call__(self, x, cos_sin, mask_bts, cache, cache_index, cache_block=CACHE_BLOCK):
    attn, cache = self.self_attn(
      self.input_layernorm(x), cos_sin, mask_bts, cache, cache_index, cache_block
    )
    x = x + attn
    return x + self.mlp(self.post_attention_layernorm(x)), cache


class Decoder(nnx.Module):
  """A causal language model: tokens [B, T] -> logits [B, T, V] and hidden states [B, T, D].

  Built once from its constructor arguments and never changed afterwards: everything that
  decides the computed function (precision, rematerialisation, activation sharding, heads) is
  part of the graph definition, so two builds with the same arguments have equal graph
  definitions, and the sampler's graph is a build under the sampler's precision policy
  (`grpojax.models.build.policy_graphdef`).

  Attributes:
    config: the `ModelConfig` it was built from.
    dtype: compute dtype of activations and matmuls (parameters keep `param_dtype`).
    precision: the `grpojax.precision.PrecisionPolicy` it was built under.
    remat: rematerialisation policy of each layer's forward when no cache is given (training),
      a key of `REMAT_POLICIES`.
    activation_sharding: None, or a `NamedSharding` (rows over the batch axes) that each
      layer's output hidden states are pinned to. Under FSDP, XLA's propagation otherwise
      gathers whole micro-batches of activations onto every device instead of gathering the
      weights: 10x the gradient step's temporary memory for a 7B policy over 32 devices
      (experiments/scaling.md). Rows that the batch axes do not divide are left unconstrained.
    heads: the `heads.Heads` on the last hidden states (parameters under `heads/`), or None
      when `HeadsConfig` enables none.
    cache_block: with a cache longer than this, a decode step's attention reads the cache in
      blocks of this many slots up to the filled ones while they cover at most half of it
      (`filled_attention`), so its cost grows with the filled length, not the cache length;
      shorter caches are read whole.
  """

  def __init__(
    self,
    cfg: config_lib.ModelConfig,
    *,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    precision: precision_policy.PrecisionPolicy = DEFAULT_PRECISION,
    remat: str = "none",
    activation_sharding: jax.sharding.NamedSharding | None = None,
    heads: heads_lib.HeadsConfig = NO_HEADS,
    cache_block: int = CACHE_BLOCK,
  ):
    """Builds the decoder.

    Args:
      cfg: shapes and numerics of the architecture.
      rngs: the decoder's parameters draw from `rngs.params()` in a fixed order (embedding,
        then each layer's q, k, v, o, gate, up, down kernels, then the LM head), whatever the
        precision policy; the heads are built last and draw one key from `rngs.heads()` (NNX
        falls back to the default stream), so they never shift the decoder's draws.
      dtype: compute dtype.
      param_dtype: dtype of the parameters (LoRA adapters and quantised codes have their own).
      precision: the precision policy (`PrecisionPolicy.projection` configures each
        decoder-layer projection; the LM head follows `lm_head_f32`).
      remat: a key of `REMAT_POLICIES`.
      activation_sharding: see the class attributes.
      heads: which heads to build.
      cache_block: see the class attributes.

    Raises:
      ValueError: an unknown `remat`, or `cache_block` below 1.
    """
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat={remat!r}; expected one of {sorted(REMAT_POLICIES)}")
    if isinstance(cache_block, bool) or int(cache_block) != cache_block or cache_block < 1:
      raise ValueError(f"cache_block must be a positive integer, got {cache_block!r}")
    self.config = cfg
    self.dtype = dtype
    self.precision = precision
    self.remat = remat
    self.activation_sharding = activation_sharding
    self.cache_block = int(cache_block)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.embed_tokens = modules.Embed(
      cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs
    )
    self.layers = nnx.List(
      [
        DecoderLayer(cfg, precision=precision, path=f"layers/{i}", **kw)
        for i in range(cfg.num_layers)
      ]
    )
    self.norm = modules.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    self.lm_head = (
      None
      if cfg.tie_word_embeddings
      else modules.Dense(cfg.hidden_size, cfg.vocab_size, use_bias=False, **kw)
    )
    self.heads = (
      heads_lib.Heads(cfg.hidden_size, heads, param_dtype=param_dtype, rngs=rngs)
      if heads.enabled
      else None
    )

  @property
  def logits_dtype(self):
    """The dtype the LM head multiplies in: float32 with `lm_head_f32`, else the compute dtype."""
    return jnp.float32 if self.precision.lm_head_f32 else self.dtype

  def _constrain(self, x: Array) -> Array:
    sharding = self.activation_sharding
    if sharding is None or not sharding.spec or sharding.spec[0] is None:
      return x
    axes = sharding.spec[0]
    axes = (axes,) if isinstance(axes, str) else axes
    shards = 1
    for a in axes:
      shards *= sharding.mesh.shape[a]
    if x.shape[0] % shards:
      return x
    return jax.lax.with_sharding_constraint(x, sharding)

  def unembedding(self) -> Array:
    """The output projection [D, V] (the transposed embedding when tied)."""
    if self.lm_head is None:
      return self.embed_tokens.embedding[...].T
    return self.lm_head.kernel[...]

  def logits(self, hidden_btd: Array) -> Array:
    """Float32 logits [B, T, V] from last-layer hidden states."""
    b, t, d = hidden_btd.shape
    dtype = self.logits_dtype
    w = self.unembedding().astype(dtype)
    out = jnp.dot(hidden_btd.reshape(b * t, d).astype(dtype), w, preferred_element_type=jnp.float32)
    return out.reshape(b, t, -1)

  def __call__(
    self,
    tokens_bt: Array,
    *,
    positions_bt: Array | None = None,
    attn_mask_bts: Array | None = None,
    cache: tuple[LayerCache, ...] | None = None,
    cache_index: Array | int | None = None,
    return_logits: bool = True,
  ) -> DecoderOutput:
    """Runs the decoder.

    Args:
      tokens_bt: int token ids [B, T].
      positions_bt: RoPE positions [B, T]; defaults to 0..T-1 (see `positions_from_mask` for
        padded batches).
      attn_mask_bts: bool [B, T, S], True where query t may attend to key s; defaults to causal.
        S is T without a cache and the cache length with one.
      cache: per-layer (k [B, K, H, S], v [B, K, S, H]) from `init_cache`; the new keys and
        values are written at `cache_index`, and attention may read only the slots before
        `cache_index + T` (`filled_attention`): every later slot must be masked out.
      cache_index: where along S this call's T tokens are written.
      return_logits: False skips the [B, T, V] unembedding (the chunked log-prob path uses
        `hidden` and `unembedding()` instead).

    Returns:
      A `DecoderOutput`.
    """
    b, t = tokens_bt.shape
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t), (b, t))
    if attn_mask_bts is None:
      if cache is not None:
        raise ValueError("attn_mask_bts is required when a cache is given")
      attn_mask_bts = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    if cache is not None and cache_index is None:
      raise ValueError("cache_index is required when a cache is given")
    cos_sin = rope_cos_sin(positions_bt, jnp.asarray(self.config.rope_inv_freq()))
    x = self.embed_tokens(tokens_bt).astype(self.dtype)
    new_cache = [] if cache is not None else None
    remat = cache is None and self.remat != "none"
    for i, layer in enumerate(self.layers):
      if remat:
        x = self._constrain(_remat_layer(layer, x, cos_sin, attn_mask_bts, self.remat))
        continue
      x, layer_cache = layer(
        x,
        cos_sin,
        attn_mask_bts,
        None if cache is None else cache[i],
        cache_index,
        self.cache_block,
      )
      x = self._constrain(x)
      if cache is not None:
        new_cache.append(layer_cache)
    hidden = self.norm(x)
    logits = self.logits(hidden) if return_logits else None
    return DecoderOutput(logits, hidden, None if cache is None else tuple(new_cache))


# Which intermediates of a layer's forward are kept for the backward pass; the rest are
# recomputed. "full" keeps only the layer inputs (least memory, one extra forward); "dots" keeps
# matmul outputs and recomputes the cheap elementwise work (norms, SwiGLU, softmax).
REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  "dots_all": jax.checkpoint_policies.dots_saveable,
}


def _remat_layer(layer, x, cos_sin, mask_bts, policy: str):
  # A pure function of the layer's state under `jax.checkpoint` (rather than `nnx.remat` on the
  # module): the layer may be merged from parameters of an outer trace (a `lax.scan` over
  # micro-batches closes over them), which NNX's transforms refuse to touch.
  graphdef, state = nnx.split(layer)

  def forward(state, x, cos_sin, mask_bts):
    return nnx.merge(graphdef, state)(x, cos_sin, mask_bts, None, None)[0]

  return jax.checkpoint(forward, policy=REMAT_POLICIES[policy])(state, x, cos_sin, mask_bts)


def init_cache(
  cfg: config_lib.ModelConfig, batch: int, length: int, dtype=jnp.float32
) -> tuple[LayerCache, ...]:
  """Zeroed per-layer (k [B, K, H, S], v [B, K, S, H]) cache."""
  k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, length)
  v_shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
  return tuple(
    (jnp.zeros(k_shape, dtype), jnp.zeros(v_shape, dtype)) for _ in range(cfg.num_layers)
  )


def positions_from_mask(mask_bt: Array) -> Array:
  """RoPE positions for a (left- or right-) padded batch: the count of real tokens before each."""
  return jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=-1) - 1, 0)


def causal_padding_mask(mask_bt: Array) -> Array:
  """[B, T, T] attention mask: causal, and no attention to padding keys."""
  t = mask_bt.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  return causal[None] & (mask_bt[:, None, :] > 0)
