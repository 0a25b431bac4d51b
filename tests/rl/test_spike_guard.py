"""Tests for grpojax/rl/spike_guard.py: a gradient-norm spike skips the update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grpojax.rl import spike_guard


def _run(norms, factor=3.0):
  """Feeds gradients [n, 0] (global norm n) through guard(sgd(1)); returns (param, state)."""
  opt = spike_guard.spike_guard(optax.sgd(1.0), factor=factor)
  params = {"w": jnp.zeros(2)}
  state = opt.init(params)
  for n in norms:
    updates, state = opt.update({"w": jnp.array([n, 0.0])}, state, params)
    params = optax.apply_updates(params, updates)
  return float(params["w"][0]), state


def test_no_guard_before_enough_history():
  # 7 accepted norms < MIN_HISTORY = 8: a 100x step still goes through.
  w, state = _run([1.0] * 7 + [100.0])
  assert w == -107.0 and int(state.spikes) == 0


def test_spike_is_skipped_and_normal_steps_go_on():
  # Median of eight 1.0s and one 2.0 is 1.0; 3.5 > 3 x 1.0 is skipped, 2.5 is not.
  w, state = _run([1.0] * 8 + [2.0, 3.5, 2.5])
  assert w == -(8.0 + 2.0 + 2.5)
  assert int(state.spikes) == 1 and int(state.accepted) == 10
  assert spike_guard.spikes(state) == 1
  # The skipped norm never entered the window.
  assert 3.5 not in np.asarray(state.spike_norms).tolist()


def test_skip_leaves_the_inner_state_unchanged():
  opt = spike_guard.spike_guard(optax.adam(1.0), factor=2.0)
  params = {"w": jnp.zeros(2)}
  state = opt.init(params)
  for _ in range(8):
    _, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
  updates, after = opt.update({"w": jnp.array([100.0, 0.0])}, state, params)
  assert float(jnp.abs(updates["w"]).max()) == 0.0
  for a, b in zip(jax.tree.leaves(after.inner), jax.tree.leaves(state.inner), strict=True):
    np.testing.assert_array_equal(a, b)


def test_spikes_is_none_without_a_guard():
  assert spike_guard.spikes(optax.sgd(1.0).init({"w": jnp.zeros(1)})) is None
