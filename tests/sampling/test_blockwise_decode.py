"""Decoding with the cache read block by block (`transformer.blockwise_attention`) gives the
tokens and log-probs of decoding with the whole cache read each step, through prefill, decode,
extend and fork, for prompts of different lengths."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, sampling
from grpojax.parallel import mesh as mesh_lib
from tests.sampling import tiny_policy

N = tiny_policy.N
# The blocked policy gets twice the cache of the whole-cache one: `filled_attention` then takes
# its block-wise branch at every step here (the filled blocks stay within half of it), and the
# whole-cache runs share the other sampler tests' compilations. 6 does not divide 80, so the
# last block is shifted back and overlaps its predecessor.
BLOCK = 6
BLOCKED_CACHE = 2 * tiny_policy.CACHE


@pytest.fixture(scope="module")
def blocked_graphdef():
  """The tiny policy's graph with a cache block below its cache length (same parameters)."""
  assert BLOCKED_CACHE % BLOCK and BLOCK < tiny_policy.TP
  return nnx.split(models.Decoder(tiny_policy.CFG, rngs=nnx.Rngs(0), cache_block=BLOCK))[0]


def _run(tiny, graphdef, method, stop, cache_len):
  """prefill -> decode 2 -> extend 0-2 tokens -> decode 2 -> fork -> decode to the end."""
  params = tiny.params

  def decode(st, steps=None):
    return sampling.decode(
      graphdef, params, st, method=method, steps=steps, stop_ids=stop, pad_id=0
    )

  st = sampling.prefill(
    graphdef,
    params,
    tiny.prompts,
    tiny.prompt_mask,
    jax.random.key(5),
    num_samples=tiny_policy.G,
    max_new_tokens=N,
    cache_len=cache_len,
    pad_id=0,
  )
  stages = [decode(st, 2)]
  counts = np.asarray([0, 1, 2, 0, 2, 1])
  appended = np.arange(6 * N).reshape(6, N) % 30 + 5
  mask = (np.arange(N)[None] < counts[:, None]).astype(np.int32)
  stages.append(sampling.extend(graphdef, params, stages[-1], jnp.asarray(appended), mask))
  stages.append(decode(stages[-1], 2))
  rows, at = jnp.asarray([0, 1, 2, 4, 5, 5]), jnp.asarray([0, 1, 3, 2, 4, 1])
  forked = sampling.fork(stages[-1], rows, at, jax.random.key(9), pad_id=0)
  stages.append(decode(forked))
  return stages


def _assert_same(blocked, whole, what):
  s = whole.cache_mask.shape[1]
  filled = int(whole.cache_index)
  # The larger cache's extra slots stay closed, and the block-wise branch ran throughout.
  read = -(-filled // BLOCK) * BLOCK  # the blocks the last step read
  assert not np.asarray(blocked.cache_mask)[:, s:].any() and 2 * read <= BLOCKED_CACHE
  blocked = dataclasses.replace(blocked, cache_mask=blocked.cache_mask[:, :s])
  for field in ("tokens", "length", "loss_mask", "done", "cache_index", "cache_mask"):
    np.testing.assert_array_equal(
      np.asarray(getattr(blocked, field)),
      np.asarray(getattr(whole, field)),
      err_msg=f"{field} after {what}",
    )
  for field in ("sampling_logprobs", "policy_logprobs"):
    np.testing.assert_allclose(
      np.asarray(getattr(blocked, field)),
      np.asarray(getattr(whole, field)),
      atol=1e-5,
      err_msg=f"{field} after {what}",
    )


def test_greedy_blockwise_decode_gives_the_same_tokens(tiny, blocked_graphdef):
  def run(graphdef, cache_len):
    st = sampling.prefill(
      graphdef,
      tiny.params,
      tiny.prompts,
      tiny.prompt_mask,
      jax.random.key(5),
      num_samples=tiny_policy.G,
      max_new_tokens=N,
      cache_len=cache_len,
      pad_id=0,
    )
    return sampling.decode(
      graphdef, tiny.params, st, method=sampling.Greedy(), stop_ids=(), pad_id=0
    )

  blocked = run(blocked_graphdef, BLOCKED_CACHE)
  whole = run(tiny.graphdef, tiny_policy.CACHE)
  _assert_same(blocked, whole, "greedy decode")
  # Prompts of 5, 8 and 2 tokens (two rows each): the rows attend different slots.
  assert len({tuple(r) for r in np.asarray(blocked.tokens).tolist()}) == 3


def test_sampled_blockwise_decode_equals_whole_cache_decode_through_extend_and_fork(
  tiny, blocked_graphdef
):
  stages = ("decode", "extend", "decode again", "fork and decode")
  whole = _run(tiny, tiny.graphdef, tiny_policy.METHOD, tiny.stop, tiny_policy.CACHE)
  blocked = _run(tiny, blocked_graphdef, tiny_policy.METHOD, tiny.stop, BLOCKED_CACHE)
  for what, b, w in zip(stages, blocked, whole, strict=True):
    _assert_same(b, w, what)
  # The runs did something worth comparing: appended tokens, rows of several lengths, and more
  # cache slots than two blocks.
  assert np.asarray(blocked[1].loss_mask).sum() < np.asarray(blocked[1].length).sum()
  assert len(set(np.asarray(blocked[-1].length).tolist())) > 1
  assert int(blocked[-1].cache_index) > tiny_policy.TP + 2 * BLOCK


@pytest.mark.slow  # its own compilation for two devices (~7 s)
def test_blockwise_decode_keeps_rows_sharded(tiny, blocked_graphdef):
  mesh = mesh_lib.make_mesh({"data": 2}, devices=jax.devices()[:2])
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # After extend and decode.
  st = _run(tiny, blocked_graphdef, tiny_policy.METHOD, tiny.stop, BLOCKED_CACHE)[2]
  b = st.tokens.shape[0]
  sharded = jax.tree.map(
    lambda x: jax.device_put(x, rows if x.ndim and x.shape[0] == b else replicated), st
  )
  params = jax.device_put(tiny.params, replicated)

  def decode(state, params):
    return sampling.decode(
      blocked_graphdef, params, state, method=tiny_policy.METHOD, stop_ids=tiny.stop, pad_id=0
    )

  got, want = decode(sharded, params), decode(st, tiny.params)
  for field in ("tokens", "length", "loss_mask", "done", "cache_index", "cache_mask"):
    np.testing.assert_array_equal(np.asarray(getattr(got, field)), np.asarray(getattr(want, field)))
  for field in ("sampling_logprobs", "policy_logprobs"):
    np.testing.assert_allclose(
      np.asarray(getattr(got, field)), np.asarray(getattr(want, field)), atol=1e-6
    )
  assert got.tokens.sharding.spec[0] == "data" and got.cache[0][0].sharding.spec[0] == "data"
