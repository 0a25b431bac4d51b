"""Where the prompts of each RL step come from, as checkpointed state: `PromptSource`s.

A source is an optax-style pair of pure functions over a NamedTuple state, plus `observe`:

  state = source.init()
  ids, state = source.next(state, n)              # the example ids of the next n prompts
  state = source.observe(state, ids, rewards_pg)  # what the rollout of those prompts earned

Ids index the task's deterministic example stream (`Task.train(i)`), so a state of a few
integers (and, for learned curricula, a few arrays) pins down every future prompt, and a run
killed anywhere resumes bit for bit from its checkpoint. `sequential()` is the stream in order;
curricula and replay mixes are further sources of the same shape.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class SourceState(NamedTuple):
  """The sequential source's state: the id of the next unread example."""

  position: jax.Array


class PromptSource(NamedTuple):
  """init() -> state; next(state, n) -> (ids [n] int32, state); observe(state, ids, rewards_pg)
  -> state. All pure and jittable; `n` is static."""

  init: Callable[[], Any]
  next: Callable[[Any, int], tuple[jax.Array, Any]]
  observe: Callable[[Any, jax.Array, jax.Array], Any]


def sequential() -> PromptSource:
  """The task's example stream in order: ids position, position + 1, ..."""

  def init():
    return SourceState(position=jnp.zeros((), jnp.int32))

  def next_ids(state, n):
    ids = state.position + jnp.arange(n, dtype=jnp.int32)
    return ids, SourceState(position=state.position + n)

  def observe(state, ids, rewards_pg):
    del ids, rewards_pg
    return state

  return PromptSource(init=init, next=next_ids, observe=observe)


class DataState(NamedTuple):
  """The data side of `TrainState`: the prompt source's state, a replay buffer's, DEEP-GRPO's
  pivot window (`rl.pivots.PivotState`) and the rollouts sampled for later steps
  (`rl.pipeline.Stale`'s ring of batches), each None when unused."""

  source: Any
  replay: Any = None
  pivots: Any = None
  pending: Any = None
