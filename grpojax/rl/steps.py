"""The jitted step functions of a run: score, gradient of one micro-batch, optimiser update, SFT.

Each is a pure function of explicit arrays; the NNX graph definition, the objective and the
optimiser are closed over as static structure, never as array constants. Parameters are an NNX
`State` of `nnx.Param`s; `nnx.merge` happens inside the jitted functions only.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from grpojax.objectives import masked
from grpojax.rl import sequences


class StepFns(NamedTuple):
  """The compiled functions the trainer calls."""

  graphdef: object
  score: callable
  grad: callable
  grad_on_policy: callable
  update: callable
  sft_grad: callable


def split_trainable(params, trainable=nnx.Param):
  """(the variables the optimiser updates, the frozen rest) of a model's state."""
  return nnx.split_state(params, trainable, ...)


def build(
  graphdef,
  objective,
  optimizer: optax.GradientTransformation,
  *,
  temperature: float,
  compute_entropy: bool,
  seq_chunk: int,
  vocab_chunk: int | None,
  trainable=nnx.Param,
) -> StepFns:
  """Builds the jitted step functions for one run.

  Args:
    graphdef: the policy's NNX graph definition.
    objective: the `objectives.make(...)` result.
    optimizer: the optax transformation applied to averaged gradients.
    temperature: the sampling temperature; trainer log-probs use the same.
    compute_entropy: whether the objective (or the metrics) need per-token entropy.
    seq_chunk, vocab_chunk: chunking of the log-prob computation.
    trainable: an NNX filter of the variables that get gradients and updates (`nnx.Param` for
      full fine-tuning, `nnx.LoRAParam` for adapters over a frozen base). `params` is always the
      model's whole state; gradients and optimiser state cover the trainable part only.
  """
  split = lambda params: split_trainable(params, trainable)
  kw = dict(temperature=temperature, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk)

  @jax.jit
  def score(params, seqs):
    out = sequences.split_and_score(graphdef, params, seqs, compute_entropy=compute_entropy, **kw)
    return out.logprobs, out.entropy

  def micro_loss(train_params, frozen, seqs, batch, obj_state, key):
    policy = sequences.split_and_score(
      graphdef, nnx.merge_state(train_params, frozen), seqs, compute_entropy=compute_entropy, **kw
    )
    loss_sum, denom, metrics, new_obj_state = objective.loss(policy, batch, obj_state, key)
    return loss_sum, (denom, metrics, new_obj_state)

  @jax.jit
  def grad(params, seqs, batch, obj_state, key):
    (loss_sum, (denom, metrics, new_obj_state)), g = jax.value_and_grad(micro_loss, has_aux=True)(
      *split(params), seqs, batch, obj_state, key
    )
    return g, loss_sum, denom, metrics, new_obj_state

  def on_policy_loss(train_params, frozen, seqs, batch, obj_state, key):
    policy = sequences.split_and_score(
      graphdef, nnx.merge_state(train_params, frozen), seqs, compute_entropy=compute_entropy, **kw
    )
    # One update per rollout: π_old is the current policy, so its log-probs come from this very
    # forward pass (detached) instead of a separate scoring pass.
    old = jax.lax.stop_gradient(policy.logprobs)
    batch = dataclasses.replace(batch, old_logprobs=old)
    loss_sum, denom, metrics, new_obj_state = objective.loss(policy, batch, obj_state, key)
    entropy = None if policy.entropy is None else jax.lax.stop_gradient(policy.entropy)
    return loss_sum, (denom, metrics, new_obj_state, old, entropy)

  @jax.jit
  def grad_on_policy(params, seqs, batch, obj_state, key):
    """`grad` with `batch.old_logprobs` ignored and taken from the same forward pass.

    Exact whenever the parameters have not moved since sampling (one epoch, one minibatch).

    Returns:
      `grad`'s outputs, then the old log-probs and the entropy of the micro-batch.
    """
    (loss_sum, (denom, metrics, new_obj_state, old, entropy)), g = jax.value_and_grad(
      on_policy_loss, has_aux=True
    )(*split(params), seqs, batch, obj_state, key)
    return g, loss_sum, denom, metrics, new_obj_state, old, entropy

  @jax.jit
  def sft_grad(params, seqs):
    """Sum of negative log-likelihood over the completion tokens, and their count."""

    def nll(p, frozen):
      out = sequences.split_and_score(
        graphdef,
        nnx.merge_state(p, frozen),
        seqs,
        compute_entropy=False,
        seq_chunk=seq_chunk,
        vocab_chunk=vocab_chunk,
      )
      return -masked.masked_sum(out.logprobs, seqs.completion_mask)

    loss_sum, g = jax.value_and_grad(nll)(*split(params))
    return g, loss_sum, jnp.sum(seqs.completion_mask).astype(jnp.float32)

  @jax.jit
  def update(params, opt_state, grad_sum, denominator):
    """One optimiser step on Σ grads / Σ denominators; a non-finite gradient changes nothing."""
    grads = jax.tree.map(lambda g: g / jnp.maximum(denominator, 1e-8), grad_sum)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm)
    train_params, frozen = split(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, train_params)
    new_params = nnx.merge_state(optax.apply_updates(train_params, updates), frozen)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    return keep(new_params, params), keep(new_opt_state, opt_state), grad_norm, finite

  return StepFns(
    graphdef=graphdef,
    score=score,
    grad=grad,
    grad_on_policy=grad_on_policy,
    update=update,
    sft_grad=sft_grad,
  )
