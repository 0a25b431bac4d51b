"""Tests for grpojax/objectives/aggregation.py."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import aggregation

B, T = 6, 5
MAX_LEN = 8


def _reference(loss, mask, mode, max_len=MAX_LEN):
  """Full-batch aggregated loss in float64, straight from the formulas."""
  loss = np.asarray(loss, np.float64)
  mask = np.asarray(mask, np.float64)
  lengths = mask.sum(-1)
  valid = lengths > 0
  seq_sums = (loss * mask).sum(-1)
  if mode == "token_mean":
    return seq_sums.sum() / lengths.sum() if lengths.sum() else 0.0
  n_valid = valid.sum()
  if not n_valid:
    return 0.0
  if mode == "seq_mean_token_mean":
    return (seq_sums[valid] / lengths[valid]).mean()
  if mode == "seq_mean_token_sum":
    return seq_sums[valid].mean()
  assert mode == "seq_mean_token_sum_norm"
  return seq_sums[valid].sum() / (n_valid * max_len)


def _random_batch(seed, batch=B, length=T, lengths=None):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(batch, length)).astype(np.float32)
  if lengths is None:
    lengths = rng.integers(0, length + 1, size=batch)
    lengths[0] = 0  # Always one all-padding row.
    lengths[1] = length
  mask = (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
  # Garbage in the padding must never matter.
  loss = np.where(mask > 0, loss, np.float32(1e30))
  return loss, mask


MODES = {
  "token_mean": aggregation.token_mean,
  "seq_mean_token_mean": aggregation.seq_mean_token_mean,
  "seq_mean_token_sum": aggregation.seq_mean_token_sum,
  "seq_mean_token_sum_norm": aggregation.seq_mean_token_sum_norm,
}


def _aggregate(loss_bt, mask_bt, *, mode, max_len=MAX_LEN):
  if mode == "seq_mean_token_sum_norm":
    return aggregation.seq_mean_token_sum_norm(loss_bt, mask_bt, max_len=max_len)
  return MODES[mode](loss_bt, mask_bt)


_aggregate_jit = jax.jit(_aggregate, static_argnames=("mode", "max_len"))


def test_hand_worked_values():
  loss = jnp.array([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
  mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  # Row sums 6 and 4 (row 2 is all padding); 4 tokens; 2 valid sequences.
  # token_mean: (1+2+3+4)/4 = 10/4 = 2.5
  s, d = _aggregate(loss, mask, mode="token_mean")
  np.testing.assert_allclose([s, d], [10.0, 4.0])
  # seq_mean_token_mean: (6/3 + 4/1)/2 = (2+4)/2 = 3
  s, d = _aggregate(loss, mask, mode="seq_mean_token_mean")
  np.testing.assert_allclose([s, d], [6.0, 2.0])
  # seq_mean_token_sum: (6+4)/2 = 5
  s, d = _aggregate(loss, mask, mode="seq_mean_token_sum")
  np.testing.assert_allclose([s, d], [10.0, 2.0])
  # seq_mean_token_sum_norm, L_max = 4: 10/(2·4) = 1.25
  s, d = _aggregate(loss, mask, mode="seq_mean_token_sum_norm", max_len=4)
  np.testing.assert_allclose([s, d], [10.0, 8.0])
  np.testing.assert_allclose(aggregation.finalize(s, d), 1.25)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_float64_reference(mode, seed):
  loss, mask = _random_batch(seed)
  s, d = _aggregate_jit(loss, mask, mode=mode)
  np.testing.assert_allclose(aggregation.finalize(s, d), _reference(loss, mask, mode), rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(data=st.data())
def test_exact_under_any_micro_batch_split(mode, data):
  lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")
  seed = data.draw(st.integers(0, 2**16), label="seed")
  order = data.draw(st.permutations(range(B)), label="order")
  # Micro-batch boundaries: any subset of cut points splits the permuted rows into contiguous,
  # non-empty chunks, so every partition of the rows into micro-batches is reachable.
  cuts = data.draw(st.sets(st.integers(1, B - 1)), label="cuts")
  loss, mask = _random_batch(seed, lengths=lengths)
  bounds = [0, *sorted(cuts), B]
  total_sum, total_denom = 0.0, 0.0
  for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
    rows = np.asarray(order[start:stop])
    s, d = _aggregate_jit(loss[rows], mask[rows], mode=mode)
    total_sum, total_denom = total_sum + s, total_denom + d
  full = aggregation.finalize(*_aggregate_jit(loss, mask, mode=mode))
  split = aggregation.finalize(total_sum, total_denom)
  np.testing.assert_allclose(split, _reference(loss, mask, mode), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(split, full, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_micro_batches_sums_to_full_batch(mode):
  loss, mask = _random_batch(3, batch=6)
  fn = jax.jit(jax.vmap(lambda x, m: _aggregate(x, m, mode=mode)))
  sums, denoms = fn(loss.reshape(3, 2, T), mask.reshape(3, 2, T))
  assert sums.shape == denoms.shape == (3,)
  np.testing.assert_allclose(
    aggregation.finalize(sums.sum(), denoms.sum()), _reference(loss, mask, mode), rtol=1e-5
  )


@pytest.mark.parametrize("mode", MODES)
def test_all_padding_is_zero_with_finite_gradient(mode):
  loss = jnp.full((2, T), jnp.inf)
  mask = jnp.zeros((2, T))

  def f(loss_bt):
    return aggregation.finalize(*_aggregate(loss_bt, mask, mode=mode))

  value, grad = jax.jit(jax.value_and_grad(f))(loss)
  assert value == 0.0
  np.testing.assert_array_equal(grad, np.zeros((2, T)))


def test_gradients_match_normalisers():
  loss, mask = _random_batch(4)
  lengths = mask.sum(-1, keepdims=True)
  n_valid = (lengths > 0).sum()
  expected = {
    "token_mean": mask / mask.sum(),
    "seq_mean_token_mean": mask / np.maximum(lengths, 1) / n_valid,
    "seq_mean_token_sum": mask / n_valid,
    "seq_mean_token_sum_norm": mask / (n_valid * MAX_LEN),
  }
  for mode, want in expected.items():
    grad = jax.grad(lambda x, mode=mode: aggregation.finalize(*_aggregate_jit(x, mask, mode=mode)))(
      jnp.asarray(loss)
    )
    np.testing.assert_allclose(grad, want, rtol=1e-6, err_msg=mode)


def test_finalize_zero_denominator():
  np.testing.assert_array_equal(aggregation.finalize(jnp.float32(3.0), jnp.float32(0.0)), 0.0)
  np.testing.assert_allclose(aggregation.finalize(jnp.float32(3.0), jnp.float32(4.0)), 0.75)
  grad = jax.grad(aggregation.finalize, argnums=(0, 1))(jnp.float32(3.0), jnp.float32(0.0))
  assert all(np.isfinite(g) for g in grad)


def test_default_max_len_is_the_padded_length():
  # Dr. GRPO's L_max defaults to T, the generation budget of a batch of rollouts.
  loss, mask = _random_batch(0)
  s, d = aggregation.seq_mean_token_sum_norm(loss, mask)
  s_t, d_t = aggregation.seq_mean_token_sum_norm(loss, mask, max_len=loss.shape[-1])
  assert float(s) == float(s_t) and float(d) == float(d_t)


@pytest.mark.parametrize("max_len", [0, -3, True, "8"])
def test_bad_max_len_raises(max_len):
  loss, mask = _random_batch(0)
  with pytest.raises(ValueError, match="max_len"):
    aggregation.seq_mean_token_sum_norm(loss, mask, max_len=max_len)
