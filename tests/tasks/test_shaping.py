"""Tests for grpojax/tasks/shaping.py: DAPO's overlong penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.tasks import shaping

# L_max = 20, L_cache = 8, so the soft window is (12, 20]:
# |y| <= 12 -> 0; 13 -> (12 - 13) / 8 = -0.125; 16 -> -4/8 = -0.5; 19 -> -7/8 = -0.875;
# 20 -> -8/8 = -1; beyond 20 -> -1.
_LENGTHS = [0, 5, 12, 13, 16, 19, 20, 21, 100]
_EXPECTED = [0.0, 0.0, 0.0, -0.125, -0.5, -0.875, -1.0, -1.0, -1.0]


def test_hand_worked_table_numpy():
  got = shaping.overlong_penalty(np.array(_LENGTHS), max_length=20, cache_length=8)
  assert isinstance(got, np.ndarray)
  assert got.dtype == np.float64
  np.testing.assert_array_equal(got, _EXPECTED)


def test_hand_worked_table_jax_and_jit():
  lengths = jnp.array(_LENGTHS)
  eager = shaping.overlong_penalty(lengths, max_length=20, cache_length=8)
  jitted = jax.jit(lambda x: shaping.overlong_penalty(x, max_length=20, cache_length=8))(lengths)
  assert isinstance(eager, jax.Array)
  np.testing.assert_allclose(np.asarray(eager), _EXPECTED)
  np.testing.assert_allclose(np.asarray(jitted), _EXPECTED)


def test_keeps_shape_and_accepts_lists():
  got = shaping.overlong_penalty([[0, 13], [16, 30]], max_length=20, cache_length=8)
  np.testing.assert_array_equal(got, [[0.0, -0.125], [-0.5, -1.0]])


def test_cache_equal_to_max_length_ramps_from_zero():
  # L_max = L_cache = 4: the ramp starts at 0 tokens, -|y|/4.
  got = shaping.overlong_penalty(np.arange(6), max_length=4, cache_length=4)
  np.testing.assert_array_equal(got, [0.0, -0.25, -0.5, -0.75, -1.0, -1.0])


@pytest.mark.parametrize(
  "max_length, cache_length",
  [(0, 1), (10, 0), (10, 11), (10, -1), (10.0, 2), (10, 2.5), (True, 1)],
)
def test_rejects_bad_arguments(max_length, cache_length):
  with pytest.raises(ValueError):
    shaping.overlong_penalty([1, 2], max_length=max_length, cache_length=cache_length)
