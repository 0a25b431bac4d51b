"""Tests for grpojax/models/heads.py: each head's output and gradients (w.r.t. its parameters and
the hidden states) against float64 NumPy references with hand-written backward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from flax import nnx

from grpojax import types
from grpojax.models import heads as heads_lib

B, T, D, W = 3, 5, 8, 6
TOL = dict(rtol=1e-5, atol=1e-6)
ALL = heads_lib.HeadsConfig(value=True, log_z=True, log_z_width=W, temperature=True)


# ---------------------------------------------------------------------------------------------
# float64 NumPy layers: forward returns (y, cache); backward maps dy to (dx, parameter grads).


def _linear(x, p):
  return x @ p["kernel"] + p["bias"], x


def _linear_bwd(dy, x, p):
  x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  return dy @ p["kernel"].T, {"kernel": x2.T @ dy2, "bias": dy2.sum(0)}


def _gelu(x):
  return x * 0.5 * (1 + scipy.special.erf(x / np.sqrt(2))), x


def _gelu_bwd(dy, x):
  # d/dx x·Φ(x) = Φ(x) + x·φ(x).
  cdf = 0.5 * (1 + scipy.special.erf(x / np.sqrt(2)))
  return dy * (cdf + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))


def _layer_norm(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  rstd = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
  n = (x - mu) * rstd
  return n * p["scale"] + p["bias"], (n, rstd)


def _layer_norm_bwd(dy, cache, p):
  n, rstd = cache
  dn = dy * p["scale"]
  dx = rstd * (dn - dn.mean(-1, keepdims=True) - n * (dn * n).mean(-1, keepdims=True))
  return dx, {"scale": (dy * n).sum(0), "bias": dy.sum(0)}


def _mlp_ref(x, p, names):
  """Linear -> GELU (-> LayerNorm) blocks then a final Linear(1); value and gradient function."""
  caches = []
  for fc, ln in names:
    x, c1 = _linear(x, p[fc])
    x, c2 = _gelu(x)
    c3 = None
    if ln:
      x, c3 = _layer_norm(x, p[ln])
    caches.append((c1, c2, c3))
  out, c_out = _linear(x, p["out"])

  def backward(dout):
    grads = {}
    dx, grads["out"] = _linear_bwd(dout[..., None], c_out, p["out"])
    for (fc, ln), (c1, c2, c3) in zip(reversed(names), reversed(caches), strict=True):
      if ln:
        dx, grads[ln] = _layer_norm_bwd(dx, c3, p[ln])
      dx = _gelu_bwd(dx, c2)
      dx, grads[fc] = _linear_bwd(dx, c1, p[fc])
    return dx, grads

  return out[..., 0], backward


def _reference(name, p, hidden, mask):
  """(output, d Σ w·out / d params, d Σ w·out / d hidden) of head `name` for weights w."""
  if name == "value":
    out, x = _linear(hidden, p)
    return out[..., 0], lambda w: _linear_bwd(w[..., None], x, p)[::-1]
  if name == "temperature":
    out, backward = _mlp_ref(hidden, p, [("fc1", None)])
    return out, lambda w: backward(w)[::-1]
  denom = np.maximum(mask.sum(-1), 1.0)
  pooled = np.einsum("btd,bt->bd", hidden, mask) / denom[:, None]
  out, backward = _mlp_ref(pooled, p, [("fc1", "ln1"), ("fc2", "ln2")])

  def grads(w):
    dpooled, g = backward(w)
    return g, mask[..., None] * (dpooled / denom[:, None])[:, None, :]

  return out, grads


# ---------------------------------------------------------------------------------------------


def _random_heads(seed=0):
  """All three heads with every parameter random (so LayerNorm scales and biases matter too)."""
  module = heads_lib.Heads(D, ALL, param_dtype=jnp.float32, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(module)
  rng = np.random.default_rng(seed)
  state = jax.tree.map(
    lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), jnp.float32), state
  )
  return graphdef, state


def _inputs(seed=1):
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((B, T, D)).astype(np.float32)
  mask = np.ones((B, T), np.float32)
  mask[0, :2] = 0  # left padding
  mask[2, :] = 0  # a row without real tokens: log Z of the zero vector, not NaN
  w = rng.standard_normal((B, T)).astype(np.float32)
  return hidden, mask, w


def _to_numpy(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(tree))


@pytest.mark.parametrize("name", ["value", "log_z", "temperature"])
def test_head_output_and_gradients_match_float64_reference(name):
  graphdef, state = _random_heads()
  hidden, mask, w = _inputs()
  w = w[:, 0] if name == "log_z" else w

  def loss(state, hidden):
    head = getattr(nnx.merge(graphdef, state), name)
    out = head(hidden, mask) if name == "log_z" else head(hidden)
    return jnp.sum(w * out), out

  (_, out), (g_state, g_hidden) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
    state, hidden
  )
  params = _to_numpy(state)[name]
  want, ref_grads = _reference(name, params, hidden.astype(np.float64), mask.astype(np.float64))
  assert out.shape == want.shape == ((B,) if name == "log_z" else (B, T))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, want, **TOL)
  want_params, want_hidden = ref_grads(w.astype(np.float64))
  np.testing.assert_allclose(g_hidden, want_hidden, **TOL)
  got_params = _to_numpy(g_state)[name]
  for got, ref in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params), strict=True):
    np.testing.assert_allclose(got, ref, **TOL)
  # Every parameter of the head (and only of this head) receives a gradient.
  others = {k: v for k, v in _to_numpy(g_state).items() if k not in (name, "config")}
  assert all(not np.any(x) for x in jax.tree.leaves(others))


def test_log_z_pooling_ignores_padding():
  graphdef, state = _random_heads()
  head = nnx.merge(graphdef, state).log_z
  hidden, mask, _ = _inputs()
  noise = np.random.default_rng(2).standard_normal(hidden.shape).astype(np.float32)
  # Any values at padded positions give the same log Z.
  scrambled = np.where(mask[..., None] > 0, hidden, 100 * noise)
  np.testing.assert_array_equal(head(hidden, mask), head(scrambled, mask))
  # Row 0 (two pad positions) equals the head on its real tokens alone.
  alone = head(hidden[:1, 2:], mask[:1, 2:])
  np.testing.assert_allclose(head(hidden, mask)[0], alone[0], rtol=1e-6)
  assert np.isfinite(np.asarray(head(hidden, mask))).all()  # the all-padding row too


def test_parameter_paths_and_shapes():
  module = heads_lib.Heads(D, ALL, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  got = {types.path_to_str(p): v.get_value().shape for p, v in nnx.to_flat_state(nnx.state(module))}
  linear = lambda name, i, o: {f"{name}/kernel": (i, o), f"{name}/bias": (o,)}
  norm = lambda name, n: {f"{name}/scale": (n,), f"{name}/bias": (n,)}
  want = {
    **linear("value", D, 1),
    **linear("log_z/fc1", D, W),
    **norm("log_z/ln1", W),
    **linear("log_z/fc2", W, W),
    **norm("log_z/ln2", W),
    **linear("log_z/out", W, 1),
    **linear("temperature/fc1", D, D // 2),
    **linear("temperature/out", D // 2, 1),
  }
  assert got == want
  assert all(isinstance(v, nnx.Param) for _, v in nnx.to_flat_state(nnx.state(module)))
  # The log-Z head's width defaults to D; disabled heads have no parameters.
  only = heads_lib.Heads(
    D, heads_lib.HeadsConfig(log_z=True), param_dtype=jnp.float32, rngs=nnx.Rngs(0)
  )
  assert only.value is None and only.temperature is None
  assert only.log_z.fc2.kernel.get_value().shape == (D, D)


def test_heads_initialise_independently_of_each_other():
  both = heads_lib.Heads(D, ALL, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  one = heads_lib.Heads(
    D, heads_lib.HeadsConfig(temperature=True), param_dtype=jnp.float32, rngs=nnx.Rngs(0)
  )
  both_leaves = jax.tree.leaves(nnx.state(both.temperature))
  for a, b in zip(both_leaves, jax.tree.leaves(nnx.state(one.temperature)), strict=True):
    np.testing.assert_array_equal(a, b)
  # PyTorch's nn.Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for kernel and bias.
  kernel = np.asarray(both.log_z.fc1.kernel.get_value())
  assert np.abs(kernel).max() <= 1 / np.sqrt(D) and kernel.std() > 0.5 / np.sqrt(3 * D)


def test_invalid_width_is_named():
  with pytest.raises(ValueError, match="log_z_width"):
    heads_lib.HeadsConfig(log_z=True, log_z_width=0)
  assert not heads_lib.HeadsConfig().enabled and ALL.enabled
