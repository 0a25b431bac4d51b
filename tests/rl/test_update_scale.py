"""The update's learning-rate scale (VCPO's ESS scaling, arXiv 2602.17616): a scale s makes the
optimiser step exactly s times the unscaled one, and leaves the optimiser's statistics alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax.rl import step


def test_scale_multiplies_the_optimiser_update():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  params = nnx.state(model)
  split = lambda p: step.split_trainable(p)
  train_params, _ = split(params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), train_params)
  for optimizer in (optax.sgd(0.1), optax.adamw(0.1, weight_decay=0.01)):
    opt_state = optimizer.init(train_params)
    full, full_state, _, _ = step._apply_gradients(optimizer, split, params, opt_state, grads, 2.0)
    half, half_state, _, _ = step._apply_gradients(
      optimizer, split, params, opt_state, grads, 2.0, scale=jnp.float32(0.25)
    )
    before = jax.tree.leaves(params)
    for b, f, h in zip(before, jax.tree.leaves(full), jax.tree.leaves(half), strict=True):
      np.testing.assert_allclose(np.asarray(h - b), 0.25 * np.asarray(f - b), rtol=1e-5, atol=1e-8)
    for a, c in zip(jax.tree.leaves(full_state), jax.tree.leaves(half_state), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
