"""The policy's per-token outputs on trainer rows, from one forward pass: log-probs and entropy of
the completion tokens, and the heads' outputs.

A row is a left-padded prompt of Tp tokens followed by N completion tokens, so completion token j
sits at position Tp + j and is predicted by the hidden state at position Tp + j - 1. Only those N
hidden states (positions Tp - 1 .. L - 2) go through the chunked unembedding, so the prompt never
costs a softmax. The value and temperature heads read the same N hidden states (V(s_t) is the
value of the state in which completion token t is chosen), and the log-Z head pools the hidden
states of the real prompt tokens (positions 0 .. Tp - 1 where `attn_mask` is 1).

Shapes: B rows, Tp padded prompt length, N completion length, L = Tp + N, D model dim.
"""

import jax.numpy as jnp
from flax import nnx

from grpojax import types
from grpojax.models import logprobs as logprobs_lib
from grpojax.models import transformer


def policy_outputs(
  model: transformer.Decoder,
  seqs: types.Sequences,
  *,
  temperature: float = 1.0,
  compute_entropy: bool = True,
  seq_chunk: int = 1024,
  vocab_chunk: int | None = None,
  compute_prompt_logprobs: bool = False,
) -> types.PolicyOutputs:
  """Per-token log-probs, entropy and head outputs of the completion tokens under `model`.

  Args:
    model: the policy (merged inside the caller's jit).
    seqs: the rows to score. When `seqs.temperature` is a [B, N] array, each completion token
      is scored at the temperature it was sampled at (a non-positive entry, e.g. on padding, is
      read as 1: those tokens carry no loss); otherwise every token at `temperature`.
    temperature: logits are divided by it, matching the sampling distribution's temperature.
    compute_entropy: also return the per-token entropy.
    seq_chunk, vocab_chunk: chunking of the unembedding (see
      `logprobs.token_logprobs_and_entropy`).
    compute_prompt_logprobs: also score the prompt tokens, each from the hidden state before
      it, at `temperature` (ProGRPO's prompt confidence c(q)); the same forward pass, one more
      pass through the chunked unembedding over the Tp - 1 prompt positions.

  Returns:
    `types.PolicyOutputs`: logprobs and entropy [B, N] (float32); values [B, N], log_z [B] and
    temperature [B, N] (float32) for the heads the model has, else None. Everything is
    differentiable in the parameters; the heads' gradients flow into the decoder.
  """
  n = seqs.completion_mask.shape[1]
  tp = seqs.tokens.shape[1] - n
  mask = seqs.attn_mask
  out = model(
    seqs.tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
    return_logits=False,
  )
  hidden_bnd = out.hidden[:, -n - 1 : -1]
  tau = temperature
  if seqs.temperature is not None:
    tau = jnp.where(seqs.temperature > 0, seqs.temperature, 1.0).astype(jnp.float32)
  # The LM head in the dtype of the sampler's `model.logits`: both score the same function.
  head_dtype = model.logits_dtype
  logp, ent = logprobs_lib.token_logprobs_and_entropy(
    hidden_bnd.astype(head_dtype),
    model.unembedding().astype(head_dtype),
    seqs.tokens[:, -n:],
    temperature=tau,
    seq_chunk=seq_chunk,
    vocab_chunk=vocab_chunk,
    compute_entropy=compute_entropy,
  )
  prompt_logp = None
  if compute_prompt_logprobs:
    prompt_logp = _prompt_logprobs(model, out.hidden, seqs.tokens, mask, tp, temperature)
  heads = model.heads
  if heads is None:
    return types.PolicyOutputs(logprobs=logp, entropy=ent, prompt_logprobs=prompt_logp)
  return types.PolicyOutputs(
    logprobs=logp,
    entropy=ent,
    prompt_logprobs=prompt_logp,
    values=None if heads.value is None else heads.value(hidden_bnd),
    log_z=None if heads.log_z is None else heads.log_z(out.hidden[:, :tp], mask[:, :tp]),
    temperature=None if heads.temperature is None else heads.temperature(hidden_bnd),
  )


def prompt_token_mask(attn_mask, tp: int):
  """[B, Tp] 1 on prompt tokens that have a real token before them (the ones scored)."""
  prompt = attn_mask[:, :tp] > 0
  before = jnp.pad(prompt[:, :-1], ((0, 0), (1, 0)))
  return (prompt & before).astype(jnp.int32)


def _prompt_logprobs(model, hidden_bld, tokens_bl, attn_mask, tp: int, temperature):
  """log π(prompt token p | tokens < p) [B, Tp]: position p from hidden state p - 1; 0 where
  `prompt_token_mask` is 0."""
  if tp < 2:
    return jnp.zeros(tokens_bl.shape[:1] + (tp,), jnp.float32)
  head_dtype = model.logits_dtype
  logp, _ = logprobs_lib.token_logprobs_and_entropy(
    hidden_bld[:, : tp - 1].astype(head_dtype),
    model.unembedding().astype(head_dtype),
    tokens_bl[:, 1:tp],
    temperature=temperature,
    compute_entropy=False,
  )
  logp = jnp.pad(logp, ((0, 0), (1, 0)))
  return jnp.where(prompt_token_mask(attn_mask, tp) > 0, logp, 0.0)


def split_and_score(graphdef, params, seqs: types.Sequences, **kwargs) -> types.PolicyOutputs:
  """`policy_outputs` for split NNX state, for use inside `jax.jit`.

  Args:
    graphdef: the policy's graph definition (`nnx.split(model)[0]`).
    params: its state (all variables, e.g. trainable and frozen merged back together).
    seqs: the rows to score.
    **kwargs: the keyword arguments of `policy_outputs`.

  Returns:
    `policy_outputs(nnx.merge(graphdef, params), seqs, **kwargs)`.
  """
  return policy_outputs(nnx.merge(graphdef, params), seqs, **kwargs)
