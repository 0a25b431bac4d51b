"""The one RL update: against an explicit reference step, exact over micro-batches, the
non-finite guard, head-only steps, and its metrics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import models, objectives, types
from grpojax.objectives import aggregation, base
from grpojax.objectives import transforms as t
from grpojax.rl import step
from tests.rl import tiny_policy

P, G, TP, N = 2, 4, 3, 5
B = P * G
CFG = tiny_policy.CFG


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
    rewards=jnp.asarray(rs.randint(0, 2, B), jnp.float32),
  )


def _state(model, objective, opt, trainable=nnx.Param):
  params = nnx.state(model)
  return step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=opt.init(step.split_trainable(params, trainable)[0]),
    objective_state=objective.init(),
    ref_params=None,
    data=None,
  )


def _setup(recipe="dapo", **cfg):
  model = models.init_policy(CFG, seed=0)
  objective = objectives.make(objectives.default_config(recipe), group_size=G)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  ucfg = step.UpdateConfig(
    group_size=G, temperature=0.8, seq_chunk=16, **{"microbatch_rows": B, **cfg}
  )
  return model, objective, opt, ucfg


def test_update_equals_an_explicit_reference_step():
  # Reference: score the rollout (old log-probs), z-score advantages, DAPO's loss on the whole
  # batch, its gradient, one clip + AdamW step. The update does the same in one jitted
  # function, taking the old log-probs from its own forward pass.
  model, objective, opt, ucfg = _setup()
  graphdef, params = nnx.split(model)
  batch = _batch()
  update = jax.jit(step.build_update(graphdef, objective, opt, ucfg))
  state, metrics = update(_state(model, objective, opt), batch, jax.random.key(0))

  score = lambda p: models.split_and_score(
    graphdef, p, batch.seqs, temperature=0.8, compute_entropy=True, seq_chunk=16, vocab_chunk=None
  )
  old = score(params)
  adv, _ = objective.advantages(
    batch.rewards.reshape(P, G), objective.init(), base.GroupInputs(mask=batch.seqs.completion_mask)
  )

  def loss(p):
    out = score(p)
    x = objectives.LossInputs(
      logprobs=out.logprobs,
      mask=batch.seqs.completion_mask,
      old_logprobs=old.logprobs,
      sampler_logprobs=batch.sampler_logprobs,
      advantages=adv,
      entropy=out.entropy,
      rewards=batch.rewards,
    )
    s, d, _, _ = objective.loss(objective.init(), x)
    return aggregation.finalize(s, d)

  value, grads = jax.value_and_grad(loss)(params)
  updates, _ = opt.update(grads, opt.init(params), params)
  expected = optax.apply_updates(params, updates)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
  mask = np.asarray(batch.seqs.completion_mask) > 0
  np.testing.assert_allclose(
    metrics["entropy/mean"], np.asarray(old.entropy)[mask].mean(), rtol=1e-5
  )
  assert float(metrics["update/nonfinite"]) == 0 and int(state.step) == 1


def test_micro_batches_and_minibatches_are_exact():
  # The same batch in 1 or 4 micro-batches: the same step (sums are exact). Plain SGD, whose
  # step is linear in the gradient (Adam's first step divides tiny gradients by themselves).
  model, objective, _, ucfg = _setup()
  opt = optax.sgd(1.0)
  graphdef, _ = nnx.split(model)
  batch = _batch(1)
  run = lambda cfg: jax.jit(step.build_update(graphdef, objective, opt, cfg))(
    _state(model, objective, opt), batch, jax.random.key(0)
  )
  whole, m1 = run(ucfg)
  split, m4 = run(dataclasses.replace(ucfg, microbatch_rows=B // 4))
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
  # Token-weighted metric merging: ratio_mean over all tokens is the same however split.
  np.testing.assert_allclose(m4["objective/ratio_mean"], m1["objective/ratio_mean"], rtol=1e-6)
  np.testing.assert_allclose(m4["objective/ratio_max"], m1["objective/ratio_max"], rtol=1e-6)


def test_a_non_finite_gradient_changes_nothing_and_is_counted():
  model, objective, opt, ucfg = _setup()

  def poisoned(logprobs, old_logprobs, advantages, mask):
    return jnp.where(mask > 0, jnp.nan * logprobs, 0.0), {}

  bad = objective._replace(terms=objectives.chain(t.policy_loss(poisoned)))
  graphdef, _ = nnx.split(model)
  state0 = _state(model, bad, opt)
  state, metrics = jax.jit(step.build_update(graphdef, bad, opt, ucfg))(
    jax.tree.map(jnp.copy, state0), _batch(), jax.random.key(0)
  )
  assert float(metrics["update/nonfinite"]) == 1.0
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state0.params), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(state0.opt_state), strict=True):
    np.testing.assert_array_equal(a, b)


def _value_regression():
  """A critic-only objective: (V(s_t) − R)² over the response tokens, token mean."""

  def update(terms, state, x):
    loss = jnp.square(x.values - x.rewards[:, None]) * terms.mask
    return terms._replace(loss=terms.loss + loss), state

  terms = base.LossTransform(init=lambda: (), update=update, requires=frozenset({"values"}))
  return objectives.Objective(
    advantage=t.group_advantages(lambda r, v: r), terms=terms, aggregate=aggregation.token_mean
  )


def test_head_only_update_leaves_the_decoder_bit_identical():
  model = models.init_policy(CFG, seed=0, heads=models.HeadsConfig(value=True))
  objective = _value_regression()
  opt = optax.adamw(1e-2)
  heads_only = nnx.PathContains("heads")
  graphdef, _ = nnx.split(model)
  ucfg = step.UpdateConfig(group_size=G, seq_chunk=16, microbatch_rows=B)
  state0 = _state(model, objective, opt, trainable=heads_only)
  update = jax.jit(step.build_update(graphdef, objective, opt, ucfg, trainable=heads_only))
  state, metrics = update(jax.tree.map(jnp.copy, state0), _batch(), jax.random.key(0))
  changed = []
  for path, a in nnx.to_flat_state(state.params):
    b = dict(nnx.to_flat_state(state0.params))[path]
    same = np.array_equal(a.get_value(), b.get_value())
    if path[0] == "heads":
      changed.append(not same)
    else:
      assert same, path
  assert changed and all(changed)
  assert float(metrics["loss"]) > 0


def test_mismatch_metrics_hand_worked():
  # δ = log π_trainer − log π_sampler = [ln 3, ln 0.5, 0]:
  # |δ| mean = (1.098612 + 0.693147 + 0)/3 = 0.597253;
  # k3 = ρ − 1 − ln ρ: (3 − 1 − 1.098612) + (0.5 − 1 + 0.693147) + 0 = 1.094535, mean 0.364845;
  # beyond the TIS cap 2 (|δ| > ln 2): only ρ = 3 -> 1/3.
  trainer = jnp.log(jnp.array([[3.0, 0.5, 1.0, 9.0]]))
  sampler = jnp.zeros((1, 4))
  mask = jnp.array([[1, 1, 1, 0]])
  m = step.mismatch_metrics(trainer, sampler, mask)
  np.testing.assert_allclose(m["mismatch/abs_logprob"], 0.597253, rtol=1e-5)
  np.testing.assert_allclose(m["mismatch/k3_kl"], 0.364845, rtol=1e-5)
  np.testing.assert_allclose(m["mismatch/beyond_tis_frac"], 1 / 3, rtol=1e-6)


def test_merge_metrics_weights_means_by_tokens_and_keeps_extrema():
  metrics = {
    "ratio_max": jnp.array([1.5, 2.5]),
    "ratio_min": jnp.array([0.5, 0.25]),
    "ratio_mean": jnp.array([1.0, 2.0]),
  }
  merged = step.merge_metrics(metrics, jnp.array([3.0, 1.0]))
  assert merged == {"ratio_max": 2.5, "ratio_min": 0.25, "ratio_mean": 1.25}  # (3·1 + 1·2)/4


def test_mismatch_metrics_against_numpy():
  rs = np.random.RandomState(0)
  trainer, sampler = rs.randn(4, 5) * 0.3, rs.randn(4, 5) * 0.3
  mask = (rs.rand(4, 5) > 0.3).astype(np.float32)
  got = step.mismatch_metrics(
    jnp.asarray(trainer, jnp.float32),
    jnp.asarray(sampler, jnp.float32),
    jnp.asarray(mask),
    tis_cap=1.5,
  )
  d = (trainer - sampler)[mask > 0]
  np.testing.assert_allclose(got["mismatch/abs_logprob"], np.abs(d).mean(), rtol=1e-5)
  np.testing.assert_allclose(got["mismatch/k3_kl"], (np.exp(d) - 1 - d).mean(), rtol=1e-4)
  np.testing.assert_allclose(got["mismatch/beyond_tis_frac"], (np.abs(d) > np.log(1.5)).mean())


def test_rematerialised_layers_give_the_same_update():
  # Layers merged inside the update's scans (closing over the parameters) rematerialise too.
  _, objective, opt, ucfg = _setup()
  ucfg = dataclasses.replace(ucfg, microbatch_rows=B // 2, epochs=2)
  out = []
  for remat in ("none", "full"):
    model = models.init_policy(CFG, seed=0, remat=remat)
    graphdef, _ = nnx.split(model)
    update = jax.jit(step.build_update(graphdef, objective, opt, ucfg))
    out.append(update(_state(model, objective, opt), _batch(2), jax.random.key(0))[0].params)
  for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1]), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_sft_update_equals_an_explicit_reference_step():
  # Reference: the gradient of the token-mean NLL in one jit, clip + AdamW in another.
  model = models.init_policy(CFG, seed=0)
  graphdef, params = nnx.split(model)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b2=0.98))
  seqs = _batch(3).seqs
  sft = jax.jit(step.build_sft_update(graphdef, opt, seq_chunk=16))
  state = _state(model, _value_regression(), opt)._replace(objective_state=None)
  new_state, metrics = sft(state, seqs)

  def nll(p):
    out = models.split_and_score(
      graphdef, p, seqs, temperature=1.0, compute_entropy=False, seq_chunk=16, vocab_chunk=None
    )
    return -jnp.sum(jnp.where(seqs.completion_mask > 0, out.logprobs, 0.0))

  total, grads = jax.jit(jax.value_and_grad(nll))(params)
  count = jnp.sum(seqs.completion_mask)
  grads = jax.tree.map(lambda g: g / count, grads)
  updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  expected = optax.apply_updates(params, updates)
  np.testing.assert_allclose(metrics["sft/nll"], total / count, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
