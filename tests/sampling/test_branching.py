"""`fork` and `extend`: a branched or extended state equals prefilling and decoding the same
sequences afresh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import sampling
from tests.sampling import tiny_policy

N = tiny_policy.N
METHOD = tiny_policy.METHOD


def _branched_source(tiny):
  """Six rows with a history: 2 sampled steps, 0-2 appended tokens, 2 more sampled steps.

  Returns:
    (state, stop_ids).
  """
  stop = tiny.stop
  st = tiny.decode(tiny.prefill(key=1), METHOD, steps=2, stop_ids=stop)
  counts = np.asarray([0, 1, 2, 0, 2, 1])
  appended = np.arange(6 * N).reshape(6, N) % 30 + 5
  st = tiny.extend(st, appended, (np.arange(N)[None] < counts[:, None]).astype(np.int32))
  st = tiny.decode(st, METHOD, steps=2, stop_ids=stop)
  return st, stop


def test_fork_then_decode_equals_decoding_the_prefix_fresh(tiny):
  src, stop = _branched_source(tiny)
  done, length = np.asarray(src.done), np.asarray(src.length)
  assert done.any() and not done.all()
  d, live = int(np.argmax(done)), int(np.argmin(done))
  rows = np.asarray([d, d, live, live, 2, 5])
  # Full lengths (the done row continues after its stop token), 0, and partial prefixes.
  at = np.minimum([length[d], 0, length[live], 1, 2, 3], length[rows])
  key = jax.random.key(11)
  forked = sampling.fork(src, jnp.asarray(rows), jnp.asarray(at), key, pad_id=0)
  got = tiny.decode(forked, METHOD, stop_ids=stop)

  fresh = sampling.prefill(
    tiny.graphdef,
    tiny.params,
    src.prompt_tokens[rows],
    src.prompt_mask[rows],
    key,
    num_samples=1,
    max_new_tokens=N,
    cache_len=tiny_policy.CACHE,
    pad_id=0,
  )
  prefix_mask = (np.arange(N)[None] < at[:, None]).astype(np.int32)
  fresh = tiny.extend(fresh, np.asarray(src.tokens)[rows], prefix_mask)
  want = tiny.decode(fresh, METHOD, stop_ids=stop)

  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
  np.testing.assert_array_equal(np.asarray(got.length), np.asarray(want.length))
  np.testing.assert_array_equal(np.asarray(got.done), np.asarray(want.done))
  assert (np.asarray(got.length) > at).all()  # every branch sampled something new
  new = ~prefix_mask.astype(bool)
  np.testing.assert_array_equal(np.asarray(got.loss_mask)[new], np.asarray(want.loss_mask)[new])
  for field in ("sampling_logprobs", "policy_logprobs"):
    np.testing.assert_allclose(
      np.asarray(getattr(got, field))[new], np.asarray(getattr(want, field))[new], atol=1e-5
    )
  # The kept prefix keeps what the source recorded (sampled or appended).
  kept = prefix_mask.astype(bool)
  for field in ("tokens", "loss_mask", "sampling_logprobs", "policy_logprobs", "temperature"):
    np.testing.assert_array_equal(
      np.asarray(getattr(got, field))[kept], np.asarray(getattr(src, field))[rows][kept]
    )


def test_fork_clears_everything_after_the_prefix(tiny):
  src, _ = _branched_source(tiny)
  forked = sampling.fork(src, jnp.asarray([1, 1, 0]), 1, jax.random.key(5), pad_id=0)
  assert forked.tokens.shape == (3, N) and not forked.logits_current
  np.testing.assert_array_equal(np.asarray(forked.length), [1, 1, 1])
  assert not np.asarray(forked.done).any() and int(forked.step) == 0
  assert int(forked.cache_index) == int(src.cache_index)
  np.testing.assert_array_equal(
    np.asarray(forked.tokens)[:, 0], np.asarray(src.tokens)[[1, 1, 0], 0]
  )
  for field, cleared in [
    ("tokens", 0),
    ("loss_mask", 0),
    ("sampling_logprobs", 0),
    ("temperature", 1),
  ]:
    assert (np.asarray(getattr(forked, field))[:, 1:] == cleared).all(), field
  # Each new row is pending on its first completion token, whose slot became a hole.
  np.testing.assert_array_equal(np.asarray(sampling.state.pending(forked)), [True] * 3)
  lengths = np.asarray(sampling.state.prompt_length(forked))
  np.testing.assert_array_equal(np.asarray(forked.cache_mask).sum(1), lengths)


def _log_softmax(logits):
  return np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))


@pytest.mark.parametrize("decoded", [0, 3], ids=["after_prefill", "after_decode"])
def test_extend_equals_prefilling_the_concatenation(tiny, decoded):
  st = tiny.prefill()
  if decoded:
    st = tiny.decode(st, sampling.Greedy(), steps=decoded, stop_ids=tiny.stop)
    assert not st.logits_current
  counts = np.asarray([0, 2, 1, 0, 4, 3])
  tokens_be = np.random.RandomState(decoded).randint(1, 37, (6, N))
  mask_be = (np.arange(N)[None] < counts[:, None]).astype(np.int32)
  got = tiny.extend(st, tokens_be, mask_be)

  rows = [
    s + list(t[:c]) for s, t, c in zip(tiny_policy.sequences(st), tokens_be, counts, strict=True)
  ]
  assert tiny_policy.sequences(got) == rows
  ref_tokens, ref_mask = tiny_policy.left_pad(rows)
  ref = tiny.prefill(
    prompts=jnp.asarray(ref_tokens), prompt_mask=jnp.asarray(ref_mask), num_samples=1
  )
  assert got.logits_current
  np.testing.assert_allclose(_log_softmax(got.logits), _log_softmax(ref.logits), atol=1e-5)
  # Appended tokens carry no loss and no log-probs; rows that received some are not done.
  old_len, new_len = np.asarray(st.length), np.asarray(got.length)
  np.testing.assert_array_equal(new_len, old_len + counts)
  for b in range(6):
    np.testing.assert_array_equal(np.asarray(got.loss_mask)[b], np.asarray(st.loss_mask)[b])
    assert (np.asarray(got.policy_logprobs)[b, old_len[b] :] == 0).all()
  np.testing.assert_array_equal(np.asarray(got.done), np.asarray(st.done) & (counts == 0))

  cont, ref_cont = tiny.decode(got, sampling.Greedy()), tiny.decode(ref, sampling.Greedy())
  for b in range(6):
    if bool(got.done[b]):
      np.testing.assert_array_equal(np.asarray(cont.tokens[b]), np.asarray(got.tokens[b]))
      continue
    k = N - new_len[b]
    np.testing.assert_array_equal(
      np.asarray(cont.tokens)[b, new_len[b] :], np.asarray(ref_cont.tokens)[b, :k]
    )
