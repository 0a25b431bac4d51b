"""Tests for grpojax/models/logprobs.py: chunked log-probs and entropy equal the naive ones."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.models import logprobs

TOL = dict(rtol=1e-5, atol=1e-5)

# (B, T, D, V, seq_chunk, vocab_chunk, temperature)
CASES = [
  pytest.param(2, 5, 8, 13, 3, 4, 1.0, id="seq3_of_10-vocab4_of_13"),
  pytest.param(2, 5, 8, 13, 4, None, 1.0, id="seq4_of_10-vocab_none"),
  pytest.param(2, 5, 8, 13, 3, 5, 0.7, id="temperature0.7"),
  pytest.param(2, 5, 8, 13, 4, None, 1.6, id="temperature1.6-vocab_none"),
  pytest.param(1, 3, 8, 13, 16, 5, 1.0, id="tokens3_lt_chunk16"),
  pytest.param(1, 3, 8, 13, 16, None, 1.0, id="tokens3_lt_chunk16-vocab_none"),
  pytest.param(2, 6, 8, 12, 4, 4, 1.0, id="chunks_divide"),
  pytest.param(2, 5, 8, 13, 10, 13, 1.0, id="one_chunk_each"),
  pytest.param(2, 5, 8, 13, 7, 64, 1.0, id="vocab_chunk_gt_vocab"),
  pytest.param(2, 3, 4, 7, 1, 1, 0.9, id="chunks_of_one"),
]


def _inputs(batch, length, dim, vocab, seed=0, scale=1.0):
  """float32 hidden [B, T, D], unembed [D, V], targets [B, T] and loss weights w1, w2 [B, T]."""
  rng = np.random.default_rng(seed)
  hidden = (scale * rng.standard_normal((batch, length, dim))).astype(np.float32)
  unembed = (rng.standard_normal((dim, vocab)) / math.sqrt(dim)).astype(np.float32)
  targets = rng.integers(0, vocab, (batch, length)).astype(np.int32)
  # Always exercise the first and last vocabulary entries (the last is in the narrower last block).
  targets.flat[0], targets.flat[-1] = 0, vocab - 1
  w1 = rng.standard_normal((batch, length)).astype(np.float32)
  w2 = rng.standard_normal((batch, length)).astype(np.float32)
  return hidden, unembed, targets, w1, w2


def _reference64(hidden, unembed, targets, w1, w2, temperature, *, temperature_grad=False):
  """float64 NumPy log π(y), entropy, and the gradients of Σ w1·logπ + w2·H wrt h and U (and,
  with `temperature_grad`, wrt a per-token temperature [B, T])."""
  b, t, d = hidden.shape
  if np.ndim(temperature):
    temperature = np.asarray(temperature, np.float64).reshape(-1, 1)
  h_nd = hidden.reshape(b * t, d).astype(np.float64)
  u_dv = unembed.astype(np.float64)
  y_n = targets.reshape(-1)
  z_nv = h_nd @ u_dv / temperature
  m_n = z_nv.max(-1, keepdims=True)
  logz_n = (m_n + np.log(np.exp(z_nv - m_n).sum(-1, keepdims=True)))[:, 0]
  p_nv = np.exp(z_nv - logz_n[:, None])
  logprobs_n = z_nv[np.arange(b * t), y_n] - logz_n
  mean_z_n = (p_nv * z_nv).sum(-1)
  entropy_n = logz_n - mean_z_n
  # d logπ_y / dz = onehot(y) - p;  dH / dz_v = -p_v (z_v - Σ_k p_k z_k).
  onehot_nv = np.eye(z_nv.shape[1])[y_n]
  dz_nv = (
    w1.reshape(-1, 1) * (onehot_nv - p_nv) - w2.reshape(-1, 1) * p_nv * (z_nv - mean_z_n[:, None])
  ) / temperature
  grad_h = (dz_nv @ u_dv.T).reshape(b, t, d)
  grad_u = h_nd.T @ dz_nv
  out = logprobs_n.reshape(b, t), entropy_n.reshape(b, t), grad_h, grad_u
  if temperature_grad:
    # z = h·U / τ, so dz/dτ = -z / τ and dL/dτ = -Σ_v (dL/dz_v / τ) z_v = -Σ_v dz_nv z_v.
    return out + (-(dz_nv * z_nv).sum(-1).reshape(b, t),)
  return out


def _naive(hidden, unembed, targets, *, temperature):
  logits_btv = jnp.einsum("BTD,DV->BTV", hidden, unembed)
  return (
    logprobs.logprobs_from_logits(logits_btv, targets, temperature),
    logprobs.entropy_from_logits(logits_btv, temperature),
  )


def _objective(fn, w1, w2):
  def loss(hidden, unembed, targets):
    lp, ent = fn(hidden, unembed, targets)
    return jnp.sum(w1 * lp + w2 * ent)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))


@pytest.mark.parametrize("b,t,d,v,seq_chunk,vocab_chunk,temperature", CASES)
def test_forward_matches_float64_reference_and_naive(
  b, t, d, v, seq_chunk, vocab_chunk, temperature
):
  hidden, unembed, targets, w1, w2 = _inputs(b, t, d, v)
  chunked = jax.jit(
    functools.partial(
      logprobs.token_logprobs_and_entropy,
      temperature=temperature,
      seq_chunk=seq_chunk,
      vocab_chunk=vocab_chunk,
    )
  )
  lp, ent = chunked(hidden, unembed, targets)
  assert lp.shape == ent.shape == (b, t)
  assert lp.dtype == ent.dtype == jnp.float32
  lp64, ent64, _, _ = _reference64(hidden, unembed, targets, w1, w2, temperature)
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)
  naive_lp, naive_ent = _naive(hidden, unembed, targets, temperature=temperature)
  np.testing.assert_allclose(lp, naive_lp, **TOL)
  np.testing.assert_allclose(ent, naive_ent, **TOL)


@pytest.mark.parametrize("b,t,d,v,seq_chunk,vocab_chunk,temperature", CASES)
def test_gradients_match_naive_and_float64_reference(
  b, t, d, v, seq_chunk, vocab_chunk, temperature
):
  hidden, unembed, targets, w1, w2 = _inputs(b, t, d, v, seed=1)
  chunked = functools.partial(
    logprobs.token_logprobs_and_entropy,
    temperature=temperature,
    seq_chunk=seq_chunk,
    vocab_chunk=vocab_chunk,
  )
  grad_h, grad_u = _objective(chunked, w1, w2)(hidden, unembed, targets)
  naive_h, naive_u = _objective(functools.partial(_naive, temperature=temperature), w1, w2)(
    hidden, unembed, targets
  )
  _, _, ref_h, ref_u = _reference64(hidden, unembed, targets, w1, w2, temperature)
  assert grad_h.shape == hidden.shape and grad_u.shape == unembed.shape
  np.testing.assert_allclose(grad_h, naive_h, **TOL)
  np.testing.assert_allclose(grad_u, naive_u, **TOL)
  np.testing.assert_allclose(grad_h, ref_h, **TOL)
  np.testing.assert_allclose(grad_u, ref_u, **TOL)


def test_jit_of_value_and_grad_with_traced_temperature():
  hidden, unembed, targets, w1, w2 = _inputs(2, 5, 8, 13, seed=2)

  @jax.jit
  def step(hidden, unembed, targets, temperature):
    def loss(hidden, unembed):
      lp, ent = logprobs.token_logprobs_and_entropy(
        hidden, unembed, targets, temperature=temperature, seq_chunk=3, vocab_chunk=4
      )
      return jnp.sum(w1 * lp + w2 * ent), (lp, ent)

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(hidden, unembed)

  (_, (lp, ent)), (grad_h, grad_u) = step(hidden, unembed, targets, jnp.float32(0.8))
  lp64, ent64, ref_h, ref_u = _reference64(hidden, unembed, targets, w1, w2, 0.8)
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)
  np.testing.assert_allclose(grad_h, ref_h, **TOL)
  np.testing.assert_allclose(grad_u, ref_u, **TOL)


def test_gradient_wrt_array_temperature_matches_naive():
  hidden, unembed, targets, w1, w2 = _inputs(2, 5, 8, 13, seed=7)

  def loss(temperature, fn):
    lp, ent = fn(hidden, unembed, targets, temperature=temperature)
    return jnp.sum(w1 * lp + w2 * ent)

  chunked = functools.partial(logprobs.token_logprobs_and_entropy, seq_chunk=3, vocab_chunk=4)
  grad = jax.jit(jax.grad(loss), static_argnums=1)(jnp.float32(0.8), chunked)
  want = jax.jit(jax.grad(loss), static_argnums=1)(jnp.float32(0.8), _naive)
  np.testing.assert_allclose(grad, want, **TOL)


# (B, T, seq_chunk, vocab_chunk): chunkings for the per-token temperature.
PER_TOKEN_CASES = [(2, 5, 3, 4), (2, 5, 4, None), (2, 5, 10, 13), (2, 3, 1, 1), (1, 3, 16, 5)]


def _temperatures(b, t, seed=0):
  return np.random.default_rng(seed).uniform(0.4, 1.8, (b, t)).astype(np.float32)


@pytest.mark.parametrize("b,t,seq_chunk,vocab_chunk", PER_TOKEN_CASES)
def test_per_token_temperature_matches_float64_reference(b, t, seq_chunk, vocab_chunk):
  hidden, unembed, targets, w1, w2 = _inputs(b, t, 8, 13, seed=9)
  tau = _temperatures(b, t)
  fn = functools.partial(
    logprobs.token_logprobs_and_entropy, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk
  )

  def loss(hidden, unembed, tau):
    lp, ent = fn(hidden, unembed, targets, temperature=tau)
    return jnp.sum(w1 * lp + w2 * ent), (lp, ent)

  (_, (lp, ent)), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
    hidden, unembed, tau
  )
  lp64, ent64, ref_h, ref_u, ref_tau = _reference64(
    hidden, unembed, targets, w1, w2, tau, temperature_grad=True
  )
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)
  for got, want in zip(grads, (ref_h, ref_u, ref_tau), strict=True):
    np.testing.assert_allclose(got, want, **TOL)
  # The naive helpers take per-token temperatures too.
  naive_lp, naive_ent = _naive(hidden, unembed, targets, temperature=tau)
  np.testing.assert_allclose(naive_lp, lp64, **TOL)
  np.testing.assert_allclose(naive_ent, ent64, **TOL)


def test_constant_per_token_temperature_equals_the_scalar():
  hidden, unembed, targets, _, _ = _inputs(2, 5, 8, 13, seed=10)
  kw = dict(seq_chunk=3, vocab_chunk=4)
  scalar = logprobs.token_logprobs_and_entropy(hidden, unembed, targets, temperature=0.8, **kw)
  per_token = logprobs.token_logprobs_and_entropy(
    hidden, unembed, targets, temperature=np.full((2, 5), 0.8, np.float32), **kw
  )
  for a, b in zip(scalar, per_token, strict=True):
    np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize(
  "temperature,match",
  [
    (np.ones((2, 4), np.float32), "per-token temperature must be"),
    (np.ones((2, 5, 1), np.float32), "temperature must be a scalar"),
    (np.array([[1.0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.float32), "every per-token temperature"),
  ],
)
def test_invalid_per_token_temperature_is_named(temperature, match):
  hidden, unembed, targets, _, _ = _inputs(2, 5, 8, 13)
  with pytest.raises(ValueError, match=match):
    logprobs.token_logprobs_and_entropy(hidden, unembed, targets, temperature=temperature)


def test_without_entropy_returns_none_and_same_logprobs():
  hidden, unembed, targets, _, _ = _inputs(2, 5, 8, 13, seed=3)
  kwargs = dict(seq_chunk=4, vocab_chunk=5)
  lp, ent = logprobs.token_logprobs_and_entropy(
    hidden, unembed, targets, compute_entropy=False, **kwargs
  )
  assert ent is None
  lp_with, _ = logprobs.token_logprobs_and_entropy(hidden, unembed, targets, **kwargs)
  np.testing.assert_allclose(lp, lp_with, **TOL)


def test_default_chunking_matches_float64_reference():
  hidden, unembed, targets, w1, w2 = _inputs(2, 5, 8, 13, seed=8)
  lp, ent = logprobs.token_logprobs_and_entropy(hidden, unembed, targets)
  lp64, ent64, _, _ = _reference64(hidden, unembed, targets, w1, w2, 1.0)
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)


def test_no_tokens_gives_empty_outputs():
  hidden, unembed, _, _, _ = _inputs(2, 5, 8, 13)
  lp, ent = logprobs.token_logprobs_and_entropy(hidden[:, :0], unembed, np.zeros((2, 0), np.int32))
  assert lp.shape == ent.shape == (2, 0)


def test_uniform_logits_hand_worked():
  # U = 0 makes every logit 0: π is uniform over V = 10, so log π(y) = -log 10 = -2.302585 and
  # H = log 10 = 2.302585 nats, at any temperature.
  hidden = np.ones((1, 3, 4), np.float32)
  unembed = np.zeros((4, 10), np.float32)
  targets = np.array([[0, 4, 9]], np.int32)
  lp, ent = logprobs.token_logprobs_and_entropy(
    hidden, unembed, targets, temperature=0.5, seq_chunk=2, vocab_chunk=3
  )
  np.testing.assert_allclose(lp, np.full((1, 3), -2.302585), **TOL)
  np.testing.assert_allclose(ent, np.full((1, 3), 2.302585), **TOL)


@pytest.mark.parametrize("vocab_chunk", [None, 4])
def test_large_logits_stay_finite_and_exact(vocab_chunk):
  # Hidden states scaled by 60 give logits of up to ~200: exp would overflow (> 88.7) unshifted.
  hidden, unembed, targets, w1, w2 = _inputs(2, 5, 8, 13, seed=4, scale=60.0)
  fn = functools.partial(logprobs.token_logprobs_and_entropy, seq_chunk=3, vocab_chunk=vocab_chunk)
  lp, ent = fn(hidden, unembed, targets)
  grad_h, grad_u = _objective(fn, w1, w2)(hidden, unembed, targets)
  lp64, ent64, ref_h, ref_u = _reference64(hidden, unembed, targets, w1, w2, 1.0)
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)
  # Gradients are checked norm-wise: an entry of dU = Σ_n h_n·dz_n that cancels from terms of
  # size |h| ~ 60 carries float32 rounding of ~3e-5 in any float32 implementation (the naive
  # full-logits one was measured at 2.7e-5 here), so elementwise 1e-5 is not a float32 property.
  for got, want in [(grad_h, ref_h), (grad_u, ref_u)]:
    assert np.all(np.isfinite(got))
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_bfloat16_inputs_match_float32_on_the_same_values():
  hidden, unembed, targets, w1, w2 = _inputs(2, 5, 8, 13, seed=5)
  hidden16 = jnp.asarray(hidden, jnp.bfloat16)
  unembed16 = jnp.asarray(unembed, jnp.bfloat16)
  fn = functools.partial(logprobs.token_logprobs_and_entropy, seq_chunk=3, vocab_chunk=4)
  lp, ent = fn(hidden16, unembed16, targets)
  assert lp.dtype == ent.dtype == jnp.float32
  # bf16 x bf16 products are exact in float32, so the float32 reference on the rounded values
  # is the right target.
  lp64, ent64, _, _ = _reference64(
    np.asarray(hidden16, np.float32), np.asarray(unembed16, np.float32), targets, w1, w2, 1.0
  )
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)
  grad_h, grad_u = _objective(fn, w1, w2)(hidden16, unembed16, targets)
  assert grad_h.dtype == grad_u.dtype == jnp.bfloat16


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(
  num_tokens=st.integers(1, 9),
  vocab=st.integers(1, 11),
  seq_chunk=st.integers(1, 12),
  vocab_chunk=st.one_of(st.none(), st.integers(1, 12)),
)
def test_any_chunking_equals_float64_reference(num_tokens, vocab, seq_chunk, vocab_chunk):
  hidden, unembed, targets, w1, w2 = _inputs(1, num_tokens, 4, vocab, seed=num_tokens * vocab)
  lp, ent = logprobs.token_logprobs_and_entropy(
    hidden, unembed, targets, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk
  )
  lp64, ent64, _, _ = _reference64(hidden, unembed, targets, w1, w2, 1.0)
  np.testing.assert_allclose(lp, lp64, **TOL)
  np.testing.assert_allclose(ent, ent64, **TOL)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_naive_helpers_match_float64_reference(temperature):
  rng = np.random.default_rng(6)
  logits = (3 * rng.standard_normal((2, 3, 4, 9))).astype(np.float32)  # extra leading axis
  targets = rng.integers(0, 9, (2, 3, 4))
  z = logits.astype(np.float64) / temperature
  logp = (
    z
    - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    - z.max(-1, keepdims=True)
  )
  want_lp = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  want_ent = -(np.exp(logp) * logp).sum(-1)
  np.testing.assert_allclose(
    logprobs.logprobs_from_logits(logits, targets, temperature), want_lp, **TOL
  )
  np.testing.assert_allclose(logprobs.entropy_from_logits(logits, temperature), want_ent, **TOL)


@pytest.mark.parametrize("seq_chunk,vocab_chunk", [(128, None), (128, 1000), (1024, 1000)])
def test_backward_pass_does_not_store_logits(seq_chunk, vocab_chunk):
  # Compile-only: XLA's buffer assignment for value-and-grad. The naive program keeps several
  # [N, V] = [1024, 8192] float32 buffers (32 MiB each); the chunked one a few [S, W] blocks.
  shapes = [((4, 256, 32), jnp.float32), ((32, 8192), jnp.float32), ((4, 256), jnp.int32)]
  args = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]

  def temp_bytes(fn):
    def loss(hidden, unembed, targets):
      lp, ent = fn(hidden, unembed, targets)
      return jnp.sum(lp) + jnp.sum(ent)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  naive = temp_bytes(functools.partial(_naive, temperature=1.0))
  chunked = temp_bytes(
    functools.partial(
      logprobs.token_logprobs_and_entropy, seq_chunk=seq_chunk, vocab_chunk=vocab_chunk
    )
  )
  assert naive >= 4 * 1024 * 8192 * 4
  assert chunked <= naive / 8


@pytest.mark.parametrize(
  "overrides,name",
  [
    (dict(seq_chunk=0), "seq_chunk"),
    (dict(seq_chunk=2.0), "seq_chunk"),
    (dict(vocab_chunk=0), "vocab_chunk"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(hidden_btd=np.zeros((2, 5, 7), np.float32)), "unembed_dv"),
    (dict(hidden_btd=np.zeros((10, 8), np.float32)), "hidden_btd"),
    (dict(unembed_dv=np.zeros((8, 13, 1), np.float32)), "unembed_dv"),
    (dict(targets_bt=np.zeros((2, 4), np.int32)), "targets_bt"),
    (dict(targets_bt=np.zeros((2, 5), np.float32)), "targets_bt"),
  ],
)
def test_invalid_arguments_raise_naming_the_argument(overrides, name):
  hidden, unembed, targets, _, _ = _inputs(2, 5, 8, 13)
  kwargs = dict(hidden_btd=hidden, unembed_dv=unembed, targets_bt=targets) | overrides
  with pytest.raises(ValueError, match=name):
    logprobs.token_logprobs_and_entropy(**kwargs)
