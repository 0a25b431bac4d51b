"""The KV-cache sampler against `transformers` generate, teacher-forced forward passes and
prefills of the same sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models, sampling
from grpojax.models import logprobs, transformer
from tests.sampling import tiny_policy

EOS = 2
N = tiny_policy.N
PROMPTS = [[5, 17, 33, 9, 41], [60, 3, 8, 12, 90, 11, 45, 23, 7], [70, 14, 4]]


@pytest.fixture(scope="module")
def qwen2(hf_checkpoint):
  hf_model, path = hf_checkpoint("qwen2")
  return hf_model, models.from_pretrained(path)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama3"])
def test_greedy_equals_transformers_generate(hf_checkpoint, family):
  torch = pytest.importorskip("torch", reason="needs the `reference` extra")
  hf_model, path = hf_checkpoint(family)
  model = models.from_pretrained(path)
  out = sampling.generate(
    model, PROMPTS, key=jax.random.key(0), max_new_tokens=16, temperature=0.0, eos_ids=[EOS]
  )
  for i, prompt in enumerate(PROMPTS):
    ref = hf_model.generate(
      torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=EOS, pad_token_id=0
    )[0, len(prompt) :].numpy()
    n = int(out.mask[i].sum())
    np.testing.assert_array_equal(np.asarray(out.tokens[i, :n]), ref, err_msg=f"prompt {i}")
    assert bool(out.finished[i]) == (ref[-1] == EOS)
  assert len(set(np.asarray(out.tokens).ravel().tolist())) > 3  # not a degenerate repetition


@nnx.jit
def _teacher_forced_logits(model, tokens, mask):
  return model(
    tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
  ).logits


@pytest.mark.parametrize(
  "method",
  [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8, min_p=0.05),
  ],
)
def test_logprobs_equal_a_teacher_forced_forward(qwen2, method):
  _, model = qwen2
  out = sampling.generate(
    model, PROMPTS, key=jax.random.key(1), max_new_tokens=12, num_samples=3, eos_ids=[EOS], **method
  )
  tokens = jnp.concatenate([out.prompt_tokens, out.tokens], axis=1)
  mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
  logits = _teacher_forced_logits(model, tokens, mask)
  tp = out.prompt_tokens.shape[1]
  step_logits = logits[:, tp - 1 : -1]  # logits at position t predict token t + 1
  b, n, v = step_logits.shape
  policy = jnp.take_along_axis(jax.nn.log_softmax(step_logits, -1), out.tokens[..., None], -1)
  params = sampling.Sample(**method)
  processed = sampling.processed_logits(step_logits.reshape(b * n, v), params).reshape(b, n, v)
  sampled = jnp.take_along_axis(jax.nn.log_softmax(processed, -1), out.tokens[..., None], -1)
  m = np.asarray(out.mask, bool)
  assert m.sum() > 40
  np.testing.assert_allclose(
    np.asarray(out.policy_logprobs)[m], np.asarray(policy[..., 0])[m], atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(out.sampling_logprobs)[m], np.asarray(sampled[..., 0])[m], atol=1e-5
  )
  assert np.all(np.asarray(out.sampling_logprobs)[~m] == 0)


def test_groups_are_contiguous_and_stop_tokens_end_rows(qwen2):
  _, model = qwen2
  out = sampling.generate(
    model,
    PROMPTS,
    key=jax.random.key(2),
    max_new_tokens=12,
    num_samples=4,
    temperature=0.0,
    eos_ids=[EOS],
  )
  tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
  assert tokens.shape == (12, 12)
  for p in range(3):
    rows = slice(4 * p, 4 * p + 4)
    assert (np.asarray(out.prompt_tokens)[rows] == np.asarray(out.prompt_tokens)[4 * p]).all()
    assert (tokens[rows] == tokens[4 * p]).all()  # greedy: one answer per prompt
  for row, msk, fin in zip(tokens, mask, np.asarray(out.finished), strict=True):
    n = int(msk.sum())
    assert (msk[:n] == 1).all() and (msk[n:] == 0).all()
    if fin:
      assert row[n - 1] == EOS and EOS not in row[: n - 1] and (row[n:] == 0).all()
    else:
      assert n == 12 and EOS not in row


def test_stop_ids_and_top_k_one(qwen2):
  _, model = qwen2
  greedy = sampling.generate(
    model, PROMPTS, key=jax.random.key(0), max_new_tokens=10, temperature=0.0
  )
  top1 = sampling.generate(
    model, PROMPTS, key=jax.random.key(9), max_new_tokens=10, temperature=1.0, top_k=1
  )
  np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(top1.tokens))
  assert np.all(np.asarray(top1.sampling_logprobs) == 0)  # a point mass
  # Stop at the third token of the first row's greedy answer.
  stop = int(greedy.tokens[0, 2])
  stopped = sampling.generate(
    model, PROMPTS, key=jax.random.key(0), max_new_tokens=10, temperature=0.0, stop_ids=[stop]
  )
  first = np.asarray(greedy.tokens[0]).tolist()
  assert int(stopped.mask[0].sum()) == first.index(stop) + 1


def test_deterministic_from_key_and_no_recompile_for_new_prompts(qwen2):
  _, model = qwen2
  kw = dict(max_new_tokens=8, num_samples=2, eos_ids=[EOS])
  a = sampling.generate(model, PROMPTS, key=jax.random.key(3), **kw)
  before = sampling.sample._cache_size()
  b = sampling.generate(model, PROMPTS, key=jax.random.key(3), **kw)
  c = sampling.generate(model, PROMPTS, key=jax.random.key(4), **kw)
  other = [[t + 1 for t in p] for p in PROMPTS]
  sampling.generate(model, other, key=jax.random.key(3), **kw)
  assert sampling.sample._cache_size() == before
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


@pytest.mark.parametrize(
  "kwargs, culprit",
  [
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-0.5), "temperature"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_samples=0), "num_samples"),
    (dict(top_k=0), "top_k"),
    (dict(min_p=1.0), "min_p"),
    (dict(eos_ids=[500]), "vocabulary"),
  ],
)
def test_bad_arguments_are_named(qwen2, kwargs, culprit):
  _, model = qwen2
  args = dict(key=jax.random.key(0), max_new_tokens=4) | kwargs
  with pytest.raises(ValueError, match=culprit):
    sampling.generate(model, PROMPTS, **args)


def test_bad_prompts_are_named(qwen2):
  _, model = qwen2
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampling.generate(model, [[3], []], key=jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="prompt 0 has token ids"):
    sampling.generate(model, [[3, 1000]], key=jax.random.key(0), max_new_tokens=2)


# --- the state API on a tiny random policy ---------------------------------------------------


@pytest.mark.parametrize("per", ["row", "token"])
def test_temperature_arrays_give_teacher_forced_logprobs(tiny, per):
  rs = np.random.RandomState(0)
  t_bn = rs.uniform(0.5, 1.5, (6, N)).astype(np.float32)
  if per == "row":
    t_bn[:] = t_bn[:, :1]
  method = sampling.Sample(jnp.asarray(t_bn[:, 0] if per == "row" else t_bn))
  out = sampling.completions(tiny.decode(tiny.prefill(key=4), method))
  tokens = np.concatenate([out.prompt_tokens, out.tokens], axis=1)
  mask = np.concatenate([out.prompt_mask, out.token_mask], axis=1)
  tp = out.prompt_tokens.shape[1]
  step_logits = tiny.sequence_logits(tokens, mask)[:, tp - 1 : -1]
  m = np.asarray(out.mask, bool)
  assert m.all()  # no stop ids: every row fills its buffer
  sampled = logprobs.logprobs_from_logits(step_logits, out.tokens, jnp.asarray(t_bn))
  policy = logprobs.logprobs_from_logits(step_logits, out.tokens)
  np.testing.assert_allclose(np.asarray(out.sampling_logprobs), np.asarray(sampled), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.policy_logprobs), np.asarray(policy), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.temperature), t_bn)


def test_decoding_in_chunks_equals_one_decode(tiny):
  method, stop = sampling.Sample(0.9), tiny.stop
  whole = tiny.decode(tiny.prefill(key=7), method, stop_ids=stop)
  assert np.asarray(whole.done).any()
  st = tiny.prefill(key=7)
  for steps in (3, 1, None):
    st = tiny.decode(st, method, steps=steps, stop_ids=stop)
  for field in ("tokens", "length", "loss_mask", "done", "step"):
    np.testing.assert_array_equal(np.asarray(getattr(st, field)), np.asarray(getattr(whole, field)))
  for field in ("sampling_logprobs", "policy_logprobs"):
    np.testing.assert_allclose(
      np.asarray(getattr(st, field)), np.asarray(getattr(whole, field)), atol=1e-6
    )


def test_decode_under_jit_with_the_state_donated(tiny):
  method = sampling.Sample(0.8)
  want = tiny.decode(tiny.prefill(key=3), method, steps=N)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  step = jax.jit(
    lambda params, st, m: sampling.decode(
      tiny.graphdef, params, st, method=m, steps=N, stop_ids=(), pad_id=0
    ),
    in_shardings=(one, one, one),
    out_shardings=one,
    donate_argnums=(1,),
  )
  st = tiny.prefill(key=3)
  got = step(tiny.params, st, method)
  assert st.cache[0][0].is_deleted()
  for field in ("tokens", "length", "loss_mask", "sampling_logprobs", "policy_logprobs"):
    np.testing.assert_array_equal(np.asarray(getattr(got, field)), np.asarray(getattr(want, field)))
  assert got.tokens.sharding == one


def test_decode_stops_when_the_cache_is_full(tiny):
  # Room for the prompt and 3 fed tokens: each row samples 4 tokens, the first 4 of a full run.
  short = tiny.decode(tiny.prefill(key=6, cache_len=tiny_policy.TP + 3), tiny_policy.METHOD)
  full = tiny.decode(tiny.prefill(key=6), tiny_policy.METHOD)
  np.testing.assert_array_equal(np.asarray(short.length), [4] * 6)
  np.testing.assert_array_equal(np.asarray(short.tokens)[:, :4], np.asarray(full.tokens)[:, :4])
  assert int(short.cache_index) == tiny_policy.TP + 3 and not np.asarray(short.done).any()
  # No room to append: the logits say so instead of attending overwritten slots.
  over = tiny.extend(short, np.ones((6, N), np.int32), np.ones((6, N), np.int32))
  assert np.isnan(np.asarray(over.logits)).all()
