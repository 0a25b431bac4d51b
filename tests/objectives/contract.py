"""Checks every per-token objective piece must pass, shared by the objective test modules.

Each piece takes `(logprobs, old_logprobs, advantages, mask, *extras)` [B, T] arrays and returns
`(loss_bt, metrics)`.
"""

import jax
import jax.numpy as jnp
import numpy as np


def assert_jit_and_vmap_match_eager(fn, batches):
  """`jit(fn)` and `jit(vmap(fn))` over stacked `batches` equal eager `fn` on each batch."""
  stacked = [np.stack(a) for a in zip(*batches, strict=True)]
  loss_v, metrics_v = jax.jit(jax.vmap(fn))(*stacked)
  for i, args in enumerate(batches):
    loss, metrics = fn(*args)
    np.testing.assert_allclose(jax.jit(fn)(*args)[0], loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loss_v[i], loss, rtol=1e-6, atol=1e-7)
    for k, v in metrics.items():
      assert v.shape == () and v.dtype == jnp.float32
      np.testing.assert_allclose(metrics_v[k][i], v, rtol=1e-6, atol=1e-7)


def assert_padding_is_zero_and_finite(fn, args, valid):
  """Loss and d loss / d logprobs are finite, exactly 0 off `valid`; an empty mask gives 0."""
  lp, rest = args[0], args[1:]
  loss, metrics = jax.jit(fn)(*args)
  grad = jax.grad(lambda x: jnp.sum(fn(x, *rest)[0]))(lp)
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
  assert np.all(np.asarray(loss)[~valid] == 0.0)
  assert np.all(np.asarray(grad)[~valid] == 0.0)
  assert all(np.isfinite(v) for v in metrics.values())
  # A batch with no valid token at all gives zeros and finite metrics.
  empty = (*args[:3], np.zeros_like(args[3]), *args[4:])
  loss, metrics = fn(*empty)
  assert np.all(np.asarray(loss) == 0.0)
  assert all(np.isfinite(v) for v in metrics.values())
