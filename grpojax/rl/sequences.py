"""Prompt + completion sequences for the trainer, and the policy's per-token outputs on them.

A rollout row is a left-padded prompt of Tp tokens followed by N generated tokens, so completion
token j sits at position Tp + j and is predicted by the hidden state at position Tp + j - 1. Only
those N hidden states go through the (chunked) unembedding: the prompt never costs a softmax.

Shapes: B rows, Tp padded prompt length, N completion length, L = Tp + N, D model dim.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.models import logprobs as logprobs_lib
from grpojax.models import transformer
from grpojax.objectives import compose


class Sequences(NamedTuple):
  """Token rows the trainer scores.

  Attributes:
    tokens: [B, L] prompt (left-padded) then completion (right-padded).
    attn_mask: [B, L] 1 on real tokens.
    completion_mask: [B, N] 1 on generated tokens that carry loss.
  """

  tokens: jax.Array
  attn_mask: jax.Array
  completion_mask: jax.Array


def from_completions(completions) -> Sequences:
  """Joins a sampler `Completions` into trainer rows."""
  return Sequences(
    tokens=jnp.concatenate([completions.prompt_tokens, completions.tokens], axis=1),
    attn_mask=jnp.concatenate([completions.prompt_mask, completions.mask], axis=1),
    completion_mask=completions.mask,
  )


def policy_outputs(
  model: transformer.Decoder,
  seqs: Sequences,
  *,
  temperature: float = 1.0,
  compute_entropy: bool = True,
  seq_chunk: int = 1024,
  vocab_chunk: int | None = None,
) -> compose.PolicyOutputs:
  """Per-token log-probs (and entropy) of the completion tokens under `model`.

  Args:
    model: the policy (merged inside the caller's jit).
    seqs: the rows to score.
    temperature: logits are divided by it, matching the sampling distribution's temperature.
    compute_entropy: also return the per-token entropy.
    seq_chunk, vocab_chunk: chunking of the unembedding (see `logprobs.token_logprobs_and_entropy`).

  Returns:
    `PolicyOutputs` with logprobs and entropy of shape [B, N].
  """
  n = seqs.completion_mask.shape[1]
  mask = seqs.attn_mask
  out = model(
    seqs.tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
    return_logits=False,
  )
  # The LM head in the dtype of the sampler's `model.logits`: both score the same function.
  head_dtype = jnp.float32 if model.lm_head_f32 else model.dtype
  hidden = out.hidden[:, -n - 1 : -1].astype(head_dtype)
  targets = seqs.tokens[:, -n:]
  logp, ent = logprobs_lib.token_logprobs_and_entropy(
    hidden,
    model.unembedding().astype(head_dtype),
    targets,
    temperature=temperature,
    seq_chunk=seq_chunk,
    vocab_chunk=vocab_chunk,
    compute_entropy=compute_entropy,
  )
  return compose.PolicyOutputs(logprobs=logp, entropy=ent, log_z=None, values=None)


def split_and_score(graphdef, params, seqs: Sequences, **kwargs) -> compose.PolicyOutputs:
  """`policy_outputs` for split NNX state, for use inside `jax.jit`."""
  return policy_outputs(nnx.merge(graphdef, params), seqs, **kwargs)
