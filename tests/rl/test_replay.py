"""Tests for grpojax/rl/replay.py: circular writes and prioritised sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.rl import replay


def _buffer(capacity=4, alpha=1.0):
  return replay.replay_buffer(
    capacity=capacity, example={"id": jnp.int32(0), "vec": jnp.zeros(2)}, alpha=alpha
  )


def _items(ids):
  ids = np.asarray(ids, np.int32)
  return {"id": jnp.asarray(ids), "vec": jnp.asarray(np.stack([ids, -ids], 1), jnp.float32)}


def test_writes_are_circular_and_overwrite_the_oldest():
  buf = _buffer()
  state = buf.add(buf.init(), _items([1, 2, 3]), jnp.ones(3))
  assert int(state.size) == 3 and int(state.cursor) == 3
  state = buf.add(state, _items([4, 5]), jnp.ones(2))
  # Slots 3 then 0 are written: item 1 (the oldest) is gone.
  np.testing.assert_array_equal(state.items["id"], [5, 2, 3, 4])
  np.testing.assert_array_equal(state.items["vec"][0], [5.0, -5.0])
  assert int(state.size) == 4 and int(state.cursor) == 1


def test_sampling_follows_priority_without_replacement():
  # Priorities 1, 2, 3, 0 (empty weight): one draw picks slot i with probability p_i / 6 and
  # never the zero-priority slot; two draws never repeat a slot.
  buf = _buffer(alpha=1.0)
  state = buf.add(buf.init(), _items([10, 11, 12, 13]), jnp.array([1.0, 2.0, 3.0, 0.0]))
  keys = jax.random.split(jax.random.key(0), 6000)
  _, slots = jax.jit(jax.vmap(lambda k: buf.sample(state, k, 1)))(keys)
  freq = np.bincount(np.asarray(slots).ravel(), minlength=4) / len(keys)
  np.testing.assert_allclose(freq, [1 / 6, 2 / 6, 3 / 6, 0.0], atol=0.02)
  items, pairs = jax.vmap(lambda k: buf.sample(state, k, 2))(keys[:200])
  pairs = np.asarray(pairs)
  assert np.all(pairs[:, 0] != pairs[:, 1]) and not np.any(pairs == 3)
  np.testing.assert_array_equal(np.asarray(items["id"]), pairs + 10)


def test_alpha_zero_is_uniform_over_filled_slots_and_sampling_is_deterministic():
  buf = _buffer(alpha=0.0)
  state = buf.add(buf.init(), _items([1, 2]), jnp.array([1.0, 100.0]))
  keys = jax.random.split(jax.random.key(1), 4000)
  _, slots = jax.vmap(lambda k: buf.sample(state, k, 1))(keys)
  freq = np.bincount(np.asarray(slots).ravel(), minlength=4) / len(keys)
  np.testing.assert_allclose(freq, [0.5, 0.5, 0.0, 0.0], atol=0.03)
  a = buf.sample(state, jax.random.key(7), 2)[1]
  b = buf.sample(state, jax.random.key(7), 2)[1]
  np.testing.assert_array_equal(a, b)


def test_update_priority_changes_what_is_drawn():
  buf = _buffer()
  state = buf.add(buf.init(), _items([1, 2]), jnp.array([1.0, 1.0]))
  state = buf.update_priority(state, jnp.array([0]), jnp.array([0.0]))
  _, slots = jax.vmap(lambda k: buf.sample(state, k, 1))(jax.random.split(jax.random.key(2), 50))
  assert np.all(np.asarray(slots) == 1)


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": 2.5}, {"alpha": -1.0}])
def test_bad_settings_raise(kwargs):
  with pytest.raises(ValueError):
    replay.replay_buffer(**{"capacity": 4, "example": jnp.int32(0), **kwargs})
