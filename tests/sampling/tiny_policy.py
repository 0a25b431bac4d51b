"""A tiny random policy and helpers shared by the sampler tests.

Every test uses the same sizes, so that the jitted sampler compiles once per variant.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import models, sampling
from grpojax.models import transformer

CFG = models.ModelConfig(
  model_type="qwen2",
  vocab_size=37,
  hidden_size=16,
  intermediate_size=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  attention_bias=True,
)
# Prompts of 5, 8 and 2 tokens, padded to TP = 16: longer rows (a prompt plus appended tokens)
# prefill to states of the same shapes, so that their decodes share one compilation.
PROMPTS = [[5, 17, 33, 9, 31], [30, 3, 8, 12, 36, 11, 25, 23], [20, 14]]
# Samples per prompt, completion capacity, cache length (room for forks and appended tokens).
TP, G, N, CACHE = 16, 2, 8, 40
METHOD = sampling.Sample(1.0)


class Tiny:
  """A tiny policy whose weights are scaled up so that its next-token distributions are peaked
  (at the default initialisation every distribution is nearly uniform)."""

  def __init__(self):
    graphdef, params = nnx.split(models.Decoder(CFG, rngs=nnx.Rngs(0)))
    self.params = jax.tree.map(lambda x: 5.0 * x, params)
    self.graphdef = graphdef
    self.model = nnx.merge(graphdef, self.params)
    tokens, mask = sampling.pad_prompts(PROMPTS, pad_id=0, bucket=TP)
    self.prompts, self.prompt_mask = jnp.asarray(tokens), jnp.asarray(mask)
    # A stop id that ends some rows early: the most frequent token of a free generation.
    free = np.asarray(self.decode(self.prefill(key=1), METHOD, steps=N).tokens)
    self.stop = (int(np.bincount(free.ravel()).argmax()),)

  def prefill(self, key=0, prompts=None, prompt_mask=None, num_samples=G, cache_len=CACHE):
    """`sampling.prefill` of `PROMPTS` (or the given prompts) with the shared sizes."""
    return sampling.prefill(
      self.graphdef,
      self.params,
      self.prompts if prompts is None else prompts,
      self.prompt_mask if prompt_mask is None else prompt_mask,
      jax.random.key(key),
      num_samples=num_samples,
      max_new_tokens=N,
      cache_len=cache_len,
      pad_id=0,
    )

  def decode(self, state, method, *, steps=None, stop_ids=()):
    return sampling.decode(
      self.graphdef, self.params, state, method=method, steps=steps, stop_ids=stop_ids, pad_id=0
    )

  def extend(self, state, tokens_be, mask_be):
    return sampling.extend(
      self.graphdef, self.params, state, jnp.asarray(tokens_be), jnp.asarray(mask_be)
    )

  def sequence_logits(self, tokens_bt, mask_bt):
    """Teacher-forced logits [B, T, V] of left-padded rows with holes where `mask_bt` is 0."""
    return _forward(self.model, jnp.asarray(tokens_bt), jnp.asarray(mask_bt))


@nnx.jit
def _forward(model, tokens, mask):
  return model(
    tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
  ).logits


def left_pad(rows, *, pad_id=0, bucket=TP):
  """Token lists -> (tokens, mask) numpy arrays, left-padded (see `sampling.pad_prompts`)."""
  return sampling.pad_prompts([list(map(int, r)) for r in rows], pad_id=pad_id, bucket=bucket)


def sequences(state):
  """Each row's whole sequence as a list: real prompt tokens, then its completion tokens."""
  prompts, masks = np.asarray(state.prompt_tokens), np.asarray(state.prompt_mask)
  tokens, length = np.asarray(state.tokens), np.asarray(state.length)
  return [
    list(p[m > 0]) + list(t[:n]) for p, m, t, n in zip(prompts, masks, tokens, length, strict=True)
  ]
