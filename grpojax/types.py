"""Pytrees shared across the package: trainer rows and the policy's per-token outputs.

This module is the root of the import graph: it imports nothing of grpojax, so every layer
(models, sampling, objectives, rl) can name these types without importing each other.

Shapes: B rows, L = Tp + N tokens per row (Tp left-padded prompt, N completion), N completion
length.
"""

from typing import NamedTuple

import jax

Array = jax.Array


class Sequences(NamedTuple):
  """Token rows the trainer scores: a left-padded prompt, then the completion.

  Attributes:
    tokens: [B, L] prompt (left-padded) then completion (right-padded).
    attn_mask: [B, L] 1 on real tokens (prompt, sampled and appended completion tokens).
    completion_mask: [B, N] 1 on completion tokens that carry loss (sampled by the policy);
      0 on padding, on groups kept only to fill a batch, and on appended tokens (environment
      observations, teacher prefixes) that the policy did not choose.
    temperature: None, or [B, N] the temperature each completion token was sampled at; the
      trainer then scores every token at its own temperature instead of the run's scalar one.
  """

  tokens: Array
  attn_mask: Array
  completion_mask: Array
  temperature: Array | None = None


class PolicyOutputs(NamedTuple):
  """What the trainer computes from the current parameters on `Sequences` (differentiable).

  Attributes:
    logprobs: log π_θ of the completion tokens [B, N].
    entropy: full-vocabulary entropy H_t [B, N], or None when not computed.
    values: value-head outputs V(s_t) [B, N] (the state before completion token t), or None.
    log_z: log-Z-head output log Z_φ(x) [B] (pooled over the prompt), or None.
    temperature: temperature-head outputs [B, N], or None.
    prompt_logprobs: log π_θ of each prompt token given the tokens before it [B, Tp] (0 at the
      first real prompt token and on padding), or None when not computed.
  """

  logprobs: Array
  entropy: Array | None = None
  values: Array | None = None
  log_z: Array | None = None
  temperature: Array | None = None
  prompt_logprobs: Array | None = None


def path_to_str(path) -> str:
  """A pytree key path as 'a/b/0/c', without NNX's trailing `value` attribute.

  The same names serve sharding rules, noise patterns and parameter partitions, so a rule
  written for `layers/3/self_attn/q_proj/kernel` matches in the parameters and in the optimiser
  state alike.
  """
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(key.name)
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key))
  if parts and parts[-1] == "value":
    parts.pop()
  return "/".join(parts)
