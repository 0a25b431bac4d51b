"""Critic warm-up: the decoder held bit for bit while the heads train, inside the one RL update
(grpojax/rl/critic_warmup.py, train.optimizer, and the update's pre-update value scoring)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from grpojax import models, objectives, train, types
from grpojax.objectives import gae
from grpojax.rl import critic_warmup, step
from tests.rl import tiny_policy

P, G, TP, N = 2, 4, 3, 5
B = P * G
CFG = tiny_policy.CFG


def _bits(x):
  x = np.asarray(x)
  return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def test_frozen_for_holds_params_bit_for_bit_then_runs_the_inner_from_its_start():
  params = {"w": jnp.asarray([1.5, -0.0, 0.0, -2.25], jnp.float32)}
  grads = {"w": jnp.asarray([0.3, -1.0, 2.0, 0.5], jnp.float32)}
  inner = optax.adam(0.1)
  opt = critic_warmup.frozen_for(inner, 2)
  state = opt.init(params)
  p = params
  for _ in range(2):
    updates, state = opt.update(grads, state, p)
    p = optax.apply_updates(p, updates)
    np.testing.assert_array_equal(_bits(p["w"]), _bits(params["w"]))  # −0.0 stays −0.0
  # The third step is Adam's first step: its state never moved while frozen.
  updates, _ = opt.update(grads, state, p)
  want, _ = inner.update(grads, inner.init(params), params)
  np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(want["w"]))
  assert np.all(np.asarray(updates["w"]) != 0)
  with pytest.raises(ValueError, match="steps"):
    critic_warmup.frozen_for(inner, -1)


def _batch(seed=0):
  rs = np.random.RandomState(seed)
  comp_mask = (np.arange(N)[None] < rs.randint(1, N + 1, (B, 1))).astype(np.int32)
  seqs = types.Sequences(
    tokens=jnp.asarray(rs.randint(3, 37, (B, TP + N)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([np.ones((B, TP), np.int32), comp_mask], 1)),
    completion_mask=jnp.asarray(comp_mask),
  )
  return step.Batch(
    seqs=seqs,
    sampler_logprobs=jnp.asarray(-rs.rand(B, N), jnp.float32),
    rewards=jnp.asarray([1, 0, 1, 1, 0, 0, 1, 0], jnp.float32),
  )


def _flat(params):
  return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(params)}


def test_a_warmup_step_trains_only_the_heads_then_the_decoder_moves():
  model = models.init_policy(CFG, seed=0, heads=models.HeadsConfig(value=True))
  objective = objectives.make(objectives.default_config("vapo"), group_size=G)
  optim = common.base().optim
  optim.warmup_steps = 0  # the first step runs at the peak rate
  opt = train.optimizer(optim, 10, head_rate=1e-2, critic_warmup_steps=1)
  graphdef, params0 = nnx.split(model)
  ucfg = step.UpdateConfig(group_size=G, seq_chunk=16, microbatch_rows=B)
  assert not step.fuses_old_logprobs(objective, ucfg)  # V_old is scored before the update
  update = jax.jit(step.build_update(graphdef, objective, opt, ucfg))
  state = step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params0,
    opt_state=opt.init(step.split_trainable(params0, nnx.Param)[0]),
    objective_state=objective.init(),
    ref_params=None,
    data=None,
  )
  before = _flat(params0)
  batch = _batch()

  state, metrics = update(state, batch, jax.random.key(0))
  after = _flat(state.params)
  heads_changed = []
  for path, value in before.items():
    if path[0] == "heads":
      heads_changed.append(not np.array_equal(value, after[path]))
    else:  # every decoder parameter, bit for bit
      np.testing.assert_array_equal(_bits(after[path]), _bits(value), err_msg=str(path))
  assert heads_changed and all(heads_changed)
  # The reported explained variance is the pre-update critic's, on this batch's returns.
  mask = batch.seqs.completion_mask
  v_old = models.split_and_score(
    graphdef, params0, batch.seqs, temperature=1.0, seq_chunk=16, vocab_chunk=None
  ).values
  returns = np.where(np.asarray(mask) > 0, np.asarray(batch.rewards)[:, None], 0.0)
  on = np.asarray(mask) > 0
  y, v = returns[on], np.asarray(v_old, np.float64)[on]
  np.testing.assert_allclose(
    float(metrics["value/explained_variance"]), 1 - np.var(y - v) / np.var(y), rtol=1e-4
  )
  np.testing.assert_allclose(
    float(metrics["value/explained_variance"]),
    float(gae.explained_variance(v_old, returns, mask)),
    rtol=1e-5,
  )

  state, _ = update(state, batch, jax.random.key(1))
  moved = _flat(state.params)
  decoder_changed = [
    not np.array_equal(after[path], moved[path]) for path in before if path[0] != "heads"
  ]
  assert any(decoder_changed)
