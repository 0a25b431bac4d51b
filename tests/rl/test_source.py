"""Tests for grpojax/rl/source.py: the sequential prompt source."""

import jax
import numpy as np

from grpojax.rl import source


def test_sequential_source_reads_the_stream_in_order_and_is_jittable():
  src = source.sequential()
  state = src.init()
  ids, state = src.next(state, 3)
  np.testing.assert_array_equal(ids, [0, 1, 2])
  ids, state = jax.jit(src.next, static_argnums=1)(state, 2)
  np.testing.assert_array_equal(ids, [3, 4])
  assert int(state.position) == 5
  assert src.observe(state, ids, np.zeros((1, 2))) == state
