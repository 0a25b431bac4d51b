"""A tiny policy and a reference sampling loop for the precision tests.

The loop uses only the decoder's public contract (`__call__` with a cache, `logits`,
`init_cache`, `positions_from_mask`): prefill, then one token per step, sampled at temperature 1.
Bit-identical tokens and log-probs from two (graph, parameters) pairs mean the two compute the
same function in both the prefill (T > 1) and the decode (T = 1) paths.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import models, types
from grpojax.models import transformer

CFG = models.ModelConfig(
  model_type="qwen2",
  vocab_size=61,
  hidden_size=32,
  intermediate_size=64,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  attention_bias=True,
  tie_word_embeddings=False,
)
ROWS, TP, N = 6, 5, 6


def prompts():
  """[ROWS, TP] prompt ids and mask; row 0 is left-padded by two tokens."""
  tokens = jnp.asarray(np.random.RandomState(1).randint(3, 61, (ROWS, TP)), jnp.int32)
  return tokens, jnp.ones_like(tokens).at[0, :2].set(0)


@functools.partial(jax.jit, static_argnums=(0, 5))
def sample(graphdef, params, prompt_bt, mask_bt, key, n: int = N):
  """Samples n tokens per row; returns (tokens [B, n], their log-probs [B, n] float32)."""
  model = nnx.merge(graphdef, params)
  b, tp = prompt_bt.shape
  s = tp + n
  keys_bs = jnp.zeros((b, s), bool).at[:, :tp].set(mask_bt > 0)
  causal_ts = jnp.arange(s)[None, :] <= jnp.arange(tp)[:, None]
  out = model(
    prompt_bt,
    positions_bt=transformer.positions_from_mask(mask_bt),
    attn_mask_bts=causal_ts[None] & keys_bs[:, None, :],
    cache=transformer.init_cache(model.config, b, s, model.dtype),
    cache_index=0,
    return_logits=False,
  )
  logits_bv = model.logits(out.hidden[:, -1:])[:, 0]

  def step(carry, i):
    cache, logits_bv, keys_bs, position_b, key = carry
    key, sub = jax.random.split(key)
    token_b = jax.random.categorical(sub, logits_bv)
    logp_b = jnp.take_along_axis(jax.nn.log_softmax(logits_bv), token_b[:, None], -1)[:, 0]
    keys_bs = keys_bs.at[:, tp + i].set(True)
    out = model(
      token_b[:, None],
      positions_bt=position_b[:, None],
      attn_mask_bts=keys_bs[:, None, :],
      cache=cache,
      cache_index=tp + i,
      return_logits=False,
    )
    carry = (out.cache, model.logits(out.hidden)[:, 0], keys_bs, position_b + 1, key)
    return carry, (token_b, logp_b)

  start = (out.cache, logits_bv, keys_bs, jnp.sum(mask_bt, -1).astype(jnp.int32), key)
  _, (tokens_nb, logp_nb) = jax.lax.scan(step, start, jnp.arange(n))
  return tokens_nb.T, logp_nb.T


def sequences(prompt_bt, mask_bt, tokens_bn) -> types.Sequences:
  """Trainer rows of prompts and their sampled completions (every completion token real)."""
  return types.Sequences(
    tokens=jnp.concatenate([prompt_bt, tokens_bn], axis=1),
    attn_mask=jnp.concatenate([mask_bt, jnp.ones_like(tokens_bn)], axis=1),
    completion_mask=jnp.ones_like(tokens_bn),
  )


@functools.partial(jax.jit, static_argnums=0)
def trainer_logprobs(graphdef, params, seqs):
  """The trainer's log-probs of the completion tokens (`models.split_and_score`)."""
  out = models.split_and_score(
    graphdef, params, seqs, compute_entropy=False, seq_chunk=64, vocab_chunk=None
  )
  return out.logprobs


def nbytes(tree) -> int:
  """Bytes of every array in `tree`."""
  return sum(x.nbytes for x in jax.tree.leaves(tree))
