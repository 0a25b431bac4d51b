"""The per-turn update (SeeUPO) inside the jitted RL update: against a turn-by-turn reference
loop, the order, empty turns, one turn = plain GSPO, and a batch without turns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import models, objectives, types
from grpojax.objectives import advantages as adv_lib
from grpojax.objectives import aggregation, base, surrogates
from grpojax.objectives import seeupo as seeupo_lib
from grpojax.objectives import transforms as t
from grpojax.rl import step
from tests.rl import tiny_policy

P, G, TP, N = 2, 4, 3, 6
B = P * G
CFG = tiny_policy.CFG
SCORE_KW = dict(temperature=1.0, compute_entropy=False, seq_chunk=16, vocab_chunk=None)


def _batch(turns_bn):
  """Rows with turn 1 on tokens 0-2 (token 2 an environment reply), turn 2 on 3-5 where present."""
  rs = np.random.RandomState(0)
  turns_bn = np.asarray(turns_bn, np.int32)
  comp_mask = (turns_bn > 0).astype(np.int32)
  comp_mask[:, 2] = 0  # the environment's reply to turn 1: no loss
  seqs = types.Sequences(
    tokens=jnp.asarray(rs.randint(3, 37, (B, TP + N)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([np.ones((B, TP), np.int32), turns_bn > 0], 1), jnp.int32),
    completion_mask=jnp.asarray(comp_mask),
  )
  return step.Batch(
    seqs=seqs,
    sampler_logprobs=jnp.asarray(-rs.rand(B, N), jnp.float32),
    rewards=jnp.asarray([1, 0, 0, 1, 1, 1, 0, 1], jnp.float32),
    turns=jnp.asarray(turns_bn),
  )


def _two_turns():
  turns = np.zeros((B, N), np.int32)
  turns[:, :3] = 1
  turns[::2, 3:] = 2  # even rows take a second turn
  turns[1, 3:5] = 2
  return turns


OPT = optax.adamw(1e-2, weight_decay=0.1)
# Linear in the gradient, so float32 rounding is not amplified as Adam's first steps amplify it.
SGD = optax.sgd(0.5)


def _state(model, objective, opt=OPT):
  params = nnx.state(model)
  return step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=opt.init(step.split_trainable(params)[0]),
    objective_state=objective.init(),
    ref_params=None,
    data=None,
  )


def _update(objective, max_turns=2, minibatches=1, opt=OPT):
  model = models.init_policy(CFG, seed=0)
  graphdef, _ = nnx.split(model)
  cfg = step.UpdateConfig(
    group_size=G,
    microbatch_rows=B // minibatches,
    minibatches=minibatches,
    seq_chunk=16,
    max_turns=max_turns,
  )
  return model, graphdef, jax.jit(step.build_update(graphdef, objective, opt, cfg))


SEEUPO = seeupo_lib.seeupo(kl_coef=0.0)


def _reference(graphdef, params, batch, order):
  """Turn by turn, outside any jit: float64 advantages, the objective's loss on the turn's
  tokens, one SGD step, re-score, ρ and M in float64."""
  score = jax.jit(lambda p: models.split_and_score(graphdef, p, batch.seqs, **SCORE_KW).logprobs)

  @jax.jit
  def grad(p, mask_k, adv, before):
    def loss(p):
      x = objectives.LossInputs(logprobs=score(p), mask=mask_k, old_logprobs=before, advantages=adv)
      s, d, _, _ = SEEUPO.loss(SEEUPO.init(), x)
      return aggregation.finalize(s, d)

    return jax.grad(loss)(p)

  mask = np.asarray(batch.seqs.completion_mask) > 0
  turns = np.asarray(batch.turns)
  r = np.asarray(batch.rewards, np.float64).reshape(P, G)
  centred = (r - r.mean(1, keepdims=True)).reshape(-1)
  z = np.clip(centred / (centred.std(ddof=1) + 1e-6), -3, 3)
  opt_state, m, rhos = SGD.init(params), np.ones(B), []
  before = score(params)
  for k in order:
    mask_k = mask & (turns == k)
    adv = jnp.asarray(np.where(mask_k, (z * m)[:, None], 0.0), jnp.float32)
    grads = grad(params, jnp.asarray(mask_k, jnp.float32), adv, before)
    updates, opt_state = SGD.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    after = score(params)
    delta = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    has = mask_k.any(1)
    mean = np.where(mask_k, delta, 0).sum(1) / np.maximum(mask_k.sum(1), 1)
    rho = np.where(has, np.clip(np.exp(np.clip(mean, -10, 10)), 0.8, 1.2), 1.0)
    rhos.append(rho[has])
    m = np.clip(m * rho, 0.8, 1.2)
    before = after
  return params, m, np.concatenate(rhos)


@pytest.fixture(scope="module")
def two_turn_run():
  model, graphdef, update = _update(SEEUPO, opt=SGD)
  batch = _batch(_two_turns())
  state, metrics = update(_state(model, SEEUPO, SGD), batch, jax.random.key(0))
  return graphdef, nnx.state(model), batch, state, metrics


@pytest.mark.slow  # compiles the update (about 15 s on a shared CPU)
def test_two_turns_equal_the_reference_loop_in_reverse_order(two_turn_run):
  graphdef, params0, batch, state, metrics = two_turn_run
  expected, m, rhos = _reference(graphdef, params0, batch, order=(2, 1))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(metrics["turn/rho_mean"], rhos.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["turn/m_mean"], m.mean(), rtol=1e-5)
  assert float(metrics["turn/active"]) == 2 and float(metrics["turn/untrained_frac"]) == 0
  # The other order is a different update: the comparison above can tell them apart.
  forward, _, _ = _reference(graphdef, params0, batch, order=(1, 2))
  gap = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(jax.tree.leaves(forward), jax.tree.leaves(expected), strict=True)
  )
  assert gap > 1e-4


@pytest.mark.slow  # compiles the update (about 15 s on a shared CPU)
def test_turn_losses_see_m_from_the_turn_updated_first(two_turn_run):
  # At each turn's first step the ratio is 1 (π_old = the policy before that turn), so the GSPO
  # loss is −mean over rows with that turn's tokens of Â_i M_i: turn 2 with M = 1, turn 1 with
  # M = ρ_2 from turn 2's update (reverse order).
  graphdef, params0, batch, _, metrics = two_turn_run
  mask = np.asarray(batch.seqs.completion_mask) > 0
  turns = np.asarray(batch.turns)
  r = np.asarray(batch.rewards, np.float64).reshape(P, G)
  centred = (r - r.mean(1, keepdims=True)).reshape(-1)
  z = np.clip(centred / (centred.std(ddof=1) + 1e-6), -3, 3)
  has2 = (mask & (turns == 2)).any(1)
  has1 = (mask & (turns == 1)).any(1)
  np.testing.assert_allclose(metrics["turn/loss_2"], -z[has2].mean(), rtol=1e-5, atol=1e-7)
  _, m_after_2, _ = _reference(graphdef, params0, batch, order=(2,))
  np.testing.assert_allclose(
    metrics["turn/loss_1"], -(z * m_after_2)[has1].mean(), rtol=1e-5, atol=1e-7
  )
  assert not np.allclose(m_after_2, 1.0)


@pytest.mark.slow  # compiles the update (about 15 s on a shared CPU)
def test_turns_without_tokens_leave_params_and_optimizer_bit_identical():
  # Every completion token belongs to turn 3, beyond max_turns = 2: both turns are empty.
  model, _, update = _update(SEEUPO)
  turns = np.zeros((B, N), np.int32)
  turns[:, :4] = 3
  state0 = _state(model, SEEUPO)
  state, metrics = update(state0, _batch(turns), jax.random.key(0))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state0.params), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(state0.opt_state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert float(metrics["turn/active"]) == 0 and float(metrics["turn/untrained_frac"]) == 1
  # AdamW on a zero gradient would have moved the weights (weight decay) and counted a step.
  train, _ = step.split_trainable(state0.params)
  zeros = jax.tree.map(jnp.zeros_like, train)
  updates, _ = OPT.update(zeros, OPT.init(train), train)
  assert any(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates))


@pytest.mark.slow  # compiles the update (about 15 s on a shared CPU)
def test_one_turn_equals_plain_gspo_with_the_seeupo_advantage():
  # Independent reference: the existing update with an objective built from existing pieces
  # (SeeUPO's advantage, GSPO with clip 0.2, seq-mean-token-mean), no turns. Two minibatches,
  # so both score the rollout first.
  gspo = base.Objective(
    advantage=t.group_advantages(adv_lib.seeupo_advantages, clip=3.0),
    terms=t.policy_loss(surrogates.gspo, epsilon_low=0.2, epsilon_high=0.2),
    aggregate=aggregation.seq_mean_token_mean,
  )
  turns = np.zeros((B, N), np.int32)
  turns[:, :5] = 1
  batch = _batch(turns)
  model, _, update = _update(SEEUPO, max_turns=1, minibatches=2)
  state, metrics = update(_state(model, SEEUPO), batch, jax.random.key(0))
  _, _, plain = _update(gspo, max_turns=1, minibatches=2)
  ref_state, ref_metrics = plain(_state(model, gspo), batch._replace(turns=None), jax.random.key(0))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
  np.testing.assert_allclose(metrics["turn/loss_1"], ref_metrics["loss"], rtol=1e-6)


def test_a_batch_without_turns_fails_naming_them():
  model, graphdef, _ = _update(SEEUPO)
  update = step.build_update(
    graphdef, SEEUPO, OPT, step.UpdateConfig(group_size=G, microbatch_rows=B)
  )
  batch = _batch(_two_turns())._replace(turns=None)
  with pytest.raises(ValueError, match=r"objective\.recipe.*Batch\.turns is None"):
    jax.eval_shape(update, _state(model, SEEUPO), batch, jax.random.key(0))
