"""DEEP-GRPO's pivots: selection, the success model, fork-based branches, the dual-stream loss,
and two steps of its config."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import models, objectives, sampling, train, types
from grpojax.objectives import branch_recipes
from grpojax.rl import pivots
from tests.sampling import tiny_policy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pivot_probabilities_hand_worked():
  # An empty window: P_φ ≡ 1. A chain of 3 one-token nodes has candidates k = 0, 1, 2 at depths
  # 1/4, 2/4, 3/4; with γ = 2 the weights are 1/16, 4/16, 9/16, so P = 1/14, 4/14, 9/14.
  # A chain of 5 tokens in nodes of 2 has S = 3 nodes too (same depths), and 1 token: S = 1,
  # one candidate (keep nothing) at depth 1/2.
  state = pivots.init(8)
  probs = pivots.pivot_probabilities(
    state, jnp.asarray([3, 1]), tokens_per_node=1, max_nodes=4, gamma=2.0
  )
  np.testing.assert_allclose(probs[0], [1 / 14, 4 / 14, 9 / 14, 0], rtol=1e-6)
  np.testing.assert_allclose(probs[1], [1, 0, 0, 0], rtol=1e-6)
  depth, at, valid = pivots.candidates(jnp.asarray([5]), tokens_per_node=2, max_nodes=3)
  np.testing.assert_allclose(depth[0], [1 / 4, 2 / 4, 3 / 4], rtol=1e-6)
  np.testing.assert_array_equal(at[0], [0, 2, 4])
  np.testing.assert_array_equal(valid[0], [True, True, True])


def test_pivot_probabilities_use_the_fitted_success_model():
  # 12 pivots at depth 0.25 all failed, 12 at 0.75 all succeeded: P_φ rises with depth and
  # multiplies x^γ (γ = 0 leaves P_φ alone).
  x = np.r_[np.full(12, 0.25), np.full(12, 0.75)]
  y = np.r_[np.zeros(12), np.ones(12)]
  state = pivots.observe(pivots.init(32), jnp.asarray(x), jnp.asarray(y), jnp.ones(24, bool))
  w, b = pivots.fit_logistic(state.depth, state.success, state.filled)
  p = 1 / (1 + np.exp(-(float(w) * np.asarray([0.25, 0.5, 0.75]) + float(b))))
  probs = pivots.pivot_probabilities(
    state, jnp.asarray([3]), tokens_per_node=1, max_nodes=3, gamma=0
  )
  np.testing.assert_allclose(probs[0], p / p.sum(), rtol=1e-5)
  assert probs[0, 2] > probs[0, 1] > probs[0, 0]


def test_logistic_fit_matches_scikit_learn():
  sklearn = pytest.importorskip("sklearn.linear_model")
  rng = np.random.default_rng(0)
  x = rng.uniform(0.05, 1.0, 300)
  y = (rng.uniform(size=300) < 1 / (1 + np.exp(-(3 * x - 1.5)))).astype(np.float64)
  valid = np.ones(400, bool)
  valid[300:] = False  # unfilled slots of the window count for nothing
  xp, yp = np.r_[x, np.full(100, 0.9)], np.r_[y, np.zeros(100)]
  w, b = pivots.fit_logistic(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(valid))
  ref = sklearn.LogisticRegression(solver="lbfgs", tol=1e-10).fit(x[:, None], y)
  np.testing.assert_allclose(float(w), ref.coef_[0, 0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(b), ref.intercept_[0], rtol=1e-4, atol=1e-5)


def test_success_model_waits_for_more_than_ten_pairs_of_both_classes():
  state = pivots.observe(pivots.init(16), jnp.full(11, 0.5), jnp.zeros(11), jnp.ones(11, bool))
  np.testing.assert_array_equal(pivots.success_probability(state, jnp.asarray([0.3])), [1.0])
  state = pivots.observe(state, jnp.asarray([0.9]), jnp.asarray([1.0]), jnp.asarray([True]))
  assert float(pivots.success_probability(state, jnp.asarray([0.3]))[0]) < 0.5


def test_window_keeps_the_newest_pairs_and_skips_invalid_ones():
  state = pivots.init(3)
  state = pivots.observe(state, jnp.asarray([0.1, 0.2]), jnp.asarray([0, 1]), jnp.asarray([1, 1]))
  state = pivots.observe(
    state, jnp.asarray([0.3, 0.9, 0.4]), jnp.asarray([1, 1, 0]), jnp.asarray([1, 0, 1], bool)
  )
  # Slots 0, 1, 2 then 0 again: 0.4 overwrote 0.1; the invalid 0.9 was never written.
  np.testing.assert_allclose(state.depth, [0.4, 0.2, 0.3], rtol=1e-6)
  np.testing.assert_array_equal(state.success, [0, 1, 1])
  assert int(state.position) == 1 and bool(state.filled.all())


def test_select_pivots_takes_only_failed_chains_and_pads_with_filler():
  lengths = jnp.asarray([4, 3, 5, 2, 6, 1])
  failed = jnp.asarray([False, True, False, True, False, False])
  got = pivots.select_pivots(
    pivots.init(8),
    lengths,
    failed,
    jax.random.key(0),
    max_pivots=4,
    tokens_per_node=1,
    max_nodes=6,
    gamma=2.0,
  )
  valid = np.asarray(got.valid)
  assert valid.sum() == 2 and sorted(np.asarray(got.rows)[valid]) == [1, 3]
  for row, at, depth in zip(*(np.asarray(a)[valid] for a in got[:3]), strict=True):
    s = int(lengths[row])
    assert 0 <= at < s  # keeps k whole nodes of a chain of s, never the whole chain
    np.testing.assert_allclose(depth, (at + 1) / (s + 1), rtol=1e-6)


def test_fork_branches_score_like_a_teacher_forced_forward():
  """Branch log-probs from `fork` (the root cache reused) equal scoring the full rows afresh."""
  tiny = tiny_policy.Tiny()
  n = tiny_policy.N
  root = tiny.decode(tiny.prefill(key=3), tiny_policy.METHOD)
  rows = jnp.asarray([0, 0, 3, 3, 5, 5])
  at = jnp.asarray([1, 1, 2, 2, 0, 0])
  forked = sampling.fork(root, rows, at, jax.random.key(4), pad_id=0)
  out = sampling.completions(tiny.decode(forked, tiny_policy.METHOD))
  seqs = types.Sequences(
    tokens=jnp.concatenate([out.prompt_tokens, out.tokens], axis=1),
    attn_mask=jnp.concatenate([out.prompt_mask, out.token_mask], axis=1),
    completion_mask=out.mask,
  )
  scored = models.split_and_score(tiny.graphdef, tiny.params, seqs, compute_entropy=False)
  suffix = (np.arange(n)[None] >= np.asarray(at)[:, None]) & (np.asarray(out.mask) > 0)
  assert suffix.sum() > 6
  np.testing.assert_allclose(
    np.asarray(scored.logprobs)[suffix], np.asarray(out.policy_logprobs)[suffix], atol=1e-5
  )
  # The kept prefix is the source row's own.
  for r, (src, a) in enumerate(zip(np.asarray(rows), np.asarray(at), strict=True)):
    np.testing.assert_array_equal(np.asarray(out.tokens)[r, :a], np.asarray(root.tokens)[src, :a])


def test_dual_stream_loss_against_numpy():
  rng = np.random.default_rng(1)
  b, t, lam, eps = 6, 5, 0.5, 0.2
  mask = (rng.uniform(size=(b, t)) < 0.8).astype(np.float64)
  mask[:, 0] = 1
  logp = rng.normal(-1.0, 0.3, (b, t))
  old = logp + rng.normal(0, 0.3, (b, t))
  adv = np.repeat(rng.normal(size=(b, 1)), t, axis=1)
  adv[2] = 0.0  # a zero-advantage row leaves the denominator
  stream = np.asarray([0, 0, 0, 1, 1, 1])
  objective = branch_recipes.deep_grpo(branch_lambda=lam, epsilon_low=eps, epsilon_high=eps)
  inputs = objectives.LossInputs(
    logprobs=jnp.asarray(logp, jnp.float32),
    mask=jnp.asarray(mask, jnp.int32),
    old_logprobs=jnp.asarray(old, jnp.float32),
    advantages=jnp.asarray(adv, jnp.float32),
    stream=jnp.asarray(stream, jnp.int32),
  )
  loss_sum, denominator, _, _ = objective.loss(objective.init(), inputs)
  ratio = np.exp(logp - old)
  per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps))
  weight = mask * (adv != 0) * np.where(stream == 1, lam, 1.0)[:, None]
  want = (per_token * weight).sum() / weight.sum()
  np.testing.assert_allclose(float(loss_sum / denominator), want, rtol=1e-5)
  np.testing.assert_allclose(float(denominator), weight.sum(), rtol=1e-6)


def test_deep_grpo_config_runs_two_steps(tmp_path):
  sys.path.insert(0, REPO)
  from configs import deep_grpo

  config = deep_grpo.get_config("local")
  final = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= final["greedy_accuracy"] <= 1.0
  lines = open(os.path.join(tmp_path, "metrics.jsonl")).read()
  assert "branch/token_frac" in lines and "branch/success_rate" in lines
  # Tokens sampled a step: the root rows' completions plus the branches' suffixes.
  rows = config.rollout.prompts_per_step * config.rollout.samples_per_prompt
  steps = [json.loads(line) for line in lines.splitlines() if "branch/generated_tokens" in line]
  assert steps
  for m in steps:
    root = m["rollout/generated_tokens"] - m["branch/generated_tokens"]
    assert root == pytest.approx(m["response/length"] * rows, rel=1e-6)
    assert m["branch/generated_tokens"] >= 0
