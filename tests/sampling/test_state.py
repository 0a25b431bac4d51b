"""`completions` and the state's derived quantities."""

import numpy as np

from grpojax import sampling
from tests.sampling import tiny_policy

N = tiny_policy.N


def test_pending_rows_and_last_tokens_follow_decode(tiny):
  st = tiny.prefill(key=2)
  assert not np.asarray(sampling.state.pending(st)).any()
  np.testing.assert_array_equal(
    np.asarray(sampling.state.last_tokens(st)), [p[-1] for p in tiny_policy.PROMPTS for _ in "gg"]
  )
  st = tiny.decode(st, tiny_policy.METHOD, steps=2)
  # Every row sampled twice; its second token is not in the cache yet.
  assert np.asarray(sampling.state.pending(st)).all()
  np.testing.assert_array_equal(
    np.asarray(sampling.state.last_tokens(st)), np.asarray(st.tokens)[:, 1]
  )
  np.testing.assert_array_equal(
    np.asarray(st.position), np.asarray(sampling.state.prompt_length(st)) + 1
  )


def test_completions_mask_sampled_tokens_and_cover_appended_ones(tiny):
  st = tiny.decode(tiny.prefill(key=2), tiny_policy.METHOD, steps=2)
  mask = np.zeros((6, N), np.int32)
  mask[:3, :2] = 1
  st = tiny.extend(st, np.full((6, N), 4), mask)
  st = tiny.decode(st, sampling.Sample(0.5), steps=1)
  out = sampling.completions(st)
  np.testing.assert_array_equal(np.asarray(out.token_mask).sum(1), [5, 5, 5, 3, 3, 3])
  np.testing.assert_array_equal(np.asarray(out.mask)[0], [1, 1, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(out.tokens)[0, 2:4], [4, 4])
  np.testing.assert_array_equal(np.asarray(out.temperature)[0, :5], [1, 1, 1, 1, 0.5])
  np.testing.assert_array_equal(np.asarray(out.temperature)[3, :4], [1, 1, 0.5, 1])
  assert (np.asarray(out.sampling_logprobs)[:3, 2:4] == 0).all()  # appended
  assert (np.asarray(out.sampling_logprobs)[:, :2] < 0).all()
  assert out.finished.shape == (6,) and not np.asarray(out.finished).any()
