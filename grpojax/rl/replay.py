"""A fixed-capacity replay buffer as checkpointed state, with prioritised sampling.

  buffer = replay_buffer(capacity=1024, example={"id": jnp.int32(0), "score": jnp.float32(0)})
  state = buffer.init()
  state = buffer.add(state, items, priority)          # items: leaves [n, ...]
  items, slots = buffer.sample(state, key, n)         # slots drawn ∝ priority^alpha
  state = buffer.update_priority(state, slots, new_priority)

Everything is a pure, jittable function of fixed-shape arrays, so the buffer lives in
`TrainState` and a resumed run draws exactly what the uninterrupted one would. Writes are
circular: once full, the oldest entries are overwritten first. Sampling is without replacement
among the filled slots (Gumbel top-k: the first n of the keys log p_i + Gumbel), with
p_i ∝ priority_i^alpha (alpha = 0: uniform), as in prioritised experience replay (Schaul et al.,
arXiv 1511.05952); `n` may not exceed the number of filled slots with positive priority.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ReplayState(NamedTuple):
  """items: leaves [C, ...]; priority: [C] float32 (0 on empty slots); size: filled slots;
  cursor: the next slot to write."""

  items: Any
  priority: jax.Array
  size: jax.Array
  cursor: jax.Array


class ReplayBuffer(NamedTuple):
  init: Callable[[], ReplayState]
  add: Callable[[ReplayState, Any, jax.Array], ReplayState]
  sample: Callable[[ReplayState, jax.Array, int], tuple[Any, jax.Array]]
  update_priority: Callable[[ReplayState, jax.Array, jax.Array], ReplayState]


def replay_buffer(*, capacity: int, example, alpha: float = 1.0) -> ReplayBuffer:
  """A buffer of `capacity` items shaped like `example` (a pytree of scalars or arrays).

  Args:
    capacity: C >= 1 slots.
    example: one item; its leaves' shapes and dtypes define the slots.
    alpha: priority exponent >= 0 (0: uniform over filled slots).

  Returns:
    A `ReplayBuffer` of pure functions.
  """
  if not isinstance(capacity, int) or capacity < 1:
    raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
  if not alpha >= 0:
    raise ValueError(f"alpha must be >= 0, got {alpha!r}")

  def init():
    items = jax.tree.map(
      lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example
    )
    zero = jnp.zeros((), jnp.int32)
    return ReplayState(items, jnp.zeros((capacity,), jnp.float32), zero, zero)

  def add(state, items, priority):
    priority = jnp.asarray(priority, jnp.float32)
    n = priority.shape[0]
    if n > capacity:
      raise ValueError(f"adding {n} items to a buffer of capacity {capacity}")
    slots = (state.cursor + jnp.arange(n)) % capacity
    new_items = jax.tree.map(lambda buf, x: buf.at[slots].set(x), state.items, items)
    return ReplayState(
      items=new_items,
      priority=state.priority.at[slots].set(priority),
      size=jnp.minimum(state.size + n, capacity),
      cursor=(state.cursor + n) % capacity,
    )

  def sample(state, key, n):
    filled = (jnp.arange(capacity) < state.size) & (state.priority > 0)
    weight = jnp.where(alpha == 0, 1.0, jnp.power(jnp.maximum(state.priority, 1e-30), alpha))
    logits = jnp.where(filled, jnp.log(weight), -jnp.inf)
    scores = logits + jax.random.gumbel(key, (capacity,))
    slots = jax.lax.top_k(scores, n)[1]
    return jax.tree.map(lambda buf: buf[slots], state.items), slots

  def update_priority(state, slots, priority):
    return state._replace(priority=state.priority.at[slots].set(jnp.asarray(priority, jnp.float32)))

  return ReplayBuffer(init=init, add=add, sample=sample, update_priority=update_priority)
