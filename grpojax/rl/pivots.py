"""DEEP-GRPO's pivot branching (arXiv 2602.14169, the paper's "variant 1: branch expansion").

After the root rollout, each failed chain (correctness 0) is cut into nodes of `tokens_per_node`
tokens. Of a chain of S nodes the candidate pivots are k = 0 .. S-1: keep the first k nodes and
sample again from there, at normalised depth x_k = (k + 1) / (S + 1) (the authors' chain counts
the empty root node as node 0, so the whole chain has S + 1 nodes and the last node, which
regenerates nothing, is no candidate). One pivot per failed chain is drawn with probability

  P(pick k) ∝ P_φ(success | x_k) · x_k^γ,

where P_φ is a logistic regression on the single feature x, refit before each selection on a
sliding window of (x, any branch of that pivot succeeded) pairs; until the window holds more
than 10 pairs of both classes P_φ ≡ 1. γ (`position_bias`) = 2.0 and the window (10,000) follow
the authors' code (AgentCombo/DEEP-GRPO@b49943b, `recipe/deep_grpo/branching_strategy.py`,
`verl/trainer/config/rollout/rollout.yaml`), whose sklearn `LogisticRegression(solver="lbfgs")`
minimises ½w² + C Σ log-loss with C = 1 and the intercept unpenalised: `fit_logistic` solves
the same problem by Newton's method, in JAX, so that the window is checkpointed state.

Each pivot is branched `samples_per_prompt` times (the authors' 8) with `sampling.fork`, which
copies the source row's key/value cache: the prefix is never prefilled again. The branches of a
pivot form one group of the training batch, so the group advantage transform gives them a local
baseline (their own group's mean and spread); their shared prefix is out of their loss mask.

The update's shape is static: a step budgets `max_pivots` branch groups. When more chains fail,
a uniformly random subset of them branches; when fewer do, the rest of the budget is filler rows
with an empty loss mask. Everything here is pure JAX except `branch_rows`, the host-side step
that samples, verifies and lays out the branch rows.

Shapes: B rows, N completion capacity, K pivots (branch groups), G branches per pivot, W window,
J candidate nodes per chain (ceil(N / tokens_per_node)).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import types
from grpojax.parallel import host_data
from grpojax.rl import evaluation

Array = jax.Array

# The authors fit only once the window holds more than this many pairs (and both classes).
MIN_FIT_SAMPLES = 10


class PivotState(NamedTuple):
  """The sliding window of the success model, as checkpointed data-side state.

  Attributes:
    depth: [W] float32 normalised depths x of past pivots (a ring buffer).
    success: [W] float32 1 where some branch of that pivot was correct.
    filled: [W] bool, slots that hold an observation.
    position: [] int32, the slot the next observation goes to.
  """

  depth: Array
  success: Array
  filled: Array
  position: Array


def init(window: int) -> PivotState:
  """An empty window of `window` pairs."""
  if int(window) != window or window < 1:
    raise ValueError(f"window must be a positive integer, got {window!r}")
  return PivotState(
    depth=jnp.zeros((window,), jnp.float32),
    success=jnp.zeros((window,), jnp.float32),
    filled=jnp.zeros((window,), bool),
    position=jnp.zeros((), jnp.int32),
  )


def observe(state: PivotState, depth_k: Array, success_k: Array, valid_k: Array) -> PivotState:
  """Appends the valid (depth, success) pairs in order, overwriting the oldest when full."""
  w = state.depth.shape[0]
  valid_k = jnp.asarray(valid_k, bool)
  slot_k = (state.position + jnp.cumsum(valid_k.astype(jnp.int32)) - 1) % w
  slot_k = jnp.where(valid_k, slot_k, w)  # out of range: the write is dropped
  put = lambda buf, val: buf.at[slot_k].set(jnp.asarray(val, buf.dtype), mode="drop")
  return PivotState(
    depth=put(state.depth, depth_k),
    success=put(state.success, success_k),
    filled=put(state.filled, True),
    position=(state.position + jnp.sum(valid_k, dtype=jnp.int32)) % w,
  )


def fit_logistic(x: Array, y: Array, valid: Array, *, c: float = 1.0, iterations: int = 30):
  """L2-regularised logistic regression of y on one feature x (sklearn's objective).

  Minimises ½w² + c Σ_i v_i [log(1 + e^{z_i}) − y_i z_i], z_i = w·x_i + b, the intercept b
  unpenalised (sklearn `LogisticRegression(C=c)`), by `iterations` Newton steps from 0.

  Args:
    x, y: [W] features and 0/1 labels.
    valid: [W] which pairs count.
    c: the inverse regularisation strength.
    iterations: Newton steps (the problem is 2-dimensional and strictly convex in w).

  Returns:
    (w, b) float32 scalars.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  v = jnp.asarray(valid, jnp.float32)

  def newton(_, wb):
    w, b = wb
    p = jax.nn.sigmoid(w * x + b)
    r, s = v * (p - y), v * p * (1.0 - p)
    g = jnp.stack([w + c * jnp.sum(r * x), c * jnp.sum(r)])
    h_ww, h_wb, h_bb = 1.0 + c * jnp.sum(s * x * x), c * jnp.sum(s * x), c * jnp.sum(s) + 1e-12
    det = h_ww * h_bb - h_wb * h_wb
    dw = (h_bb * g[0] - h_wb * g[1]) / det
    db = (h_ww * g[1] - h_wb * g[0]) / det
    return w - dw, b - db

  return jax.lax.fori_loop(0, iterations, newton, (jnp.float32(0.0), jnp.float32(0.0)))


def success_probability(state: PivotState, depth: Array) -> Array:
  """P_φ(success | x) at the given depths: the window's logistic fit, or 1 before it may fit."""
  count = jnp.sum(state.filled)
  wins = jnp.sum(jnp.where(state.filled, state.success, 0.0))
  ready = (count > MIN_FIT_SAMPLES) & (wins > 0) & (wins < count)
  w, b = fit_logistic(state.depth, state.success, state.filled)
  return jnp.where(ready, jax.nn.sigmoid(w * depth + b), 1.0)


def candidates(lengths_b: Array, *, tokens_per_node: int, max_nodes: int):
  """Candidate pivots of each chain: (depth [B, J], kept tokens [B, J], valid [B, J]).

  A chain of L tokens has S = ceil(L / tokens_per_node) nodes; candidate k < S keeps the first
  k·tokens_per_node tokens and has depth (k + 1) / (S + 1).
  """
  s_b = -(-jnp.asarray(lengths_b, jnp.int32) // tokens_per_node)
  k_j = jnp.arange(max_nodes, dtype=jnp.int32)
  depth = (k_j[None, :] + 1).astype(jnp.float32) / (s_b[:, None] + 1).astype(jnp.float32)
  return depth, k_j[None, :] * tokens_per_node + 0 * s_b[:, None], k_j[None, :] < s_b[:, None]


def pivot_probabilities(
  state: PivotState, lengths_b: Array, *, tokens_per_node: int, max_nodes: int, gamma: float
) -> Array:
  """[B, J] P(pick k) = P_φ(x_k)·x_k^γ / Σ over the chain's candidates (0 off them)."""
  depth, _, valid = candidates(lengths_b, tokens_per_node=tokens_per_node, max_nodes=max_nodes)
  weight = jnp.where(valid, success_probability(state, depth) * depth**gamma, 0.0)
  return weight / jnp.maximum(jnp.sum(weight, axis=1, keepdims=True), 1e-30)


class Pivots(NamedTuple):
  """The pivots of one step, K of them (some invalid: filler).

  Attributes:
    rows: [K] int32 source rows of the root batch.
    at: [K] int32 completion tokens each branch keeps.
    depth: [K] float32 normalised depth x of the pivot.
    valid: [K] bool, False for filler pivots (no failed chain left).
  """

  rows: Array
  at: Array
  depth: Array
  valid: Array


def select_pivots(
  state: PivotState,
  lengths_b: Array,
  failed_b: Array,
  key: Array,
  *,
  max_pivots: int,
  tokens_per_node: int,
  max_nodes: int,
  gamma: float,
) -> Pivots:
  """Up to `max_pivots` failed chains (a uniform random subset) and one pivot in each."""
  failed_b = jnp.asarray(failed_b, bool) & (jnp.asarray(lengths_b) > 0)
  k_rows, k_node = jax.random.split(key)
  score = jnp.where(failed_b, jax.random.uniform(k_rows, failed_b.shape), -1.0)
  _, rows = jax.lax.top_k(score, max_pivots)
  valid = failed_b[rows]
  probs = pivot_probabilities(
    state, lengths_b[rows], tokens_per_node=tokens_per_node, max_nodes=max_nodes, gamma=gamma
  )
  node = jax.random.categorical(k_node, jnp.log(jnp.where(probs > 0, probs, 1e-38)), axis=-1)
  node = jnp.where(jnp.any(probs > 0, axis=1), node, 0)
  depth, at, _ = candidates(lengths_b[rows], tokens_per_node=tokens_per_node, max_nodes=max_nodes)
  take = lambda a: jnp.take_along_axis(a, node[:, None], axis=1)[:, 0]
  return Pivots(rows=rows.astype(jnp.int32), at=take(at), depth=take(depth), valid=valid)


class Branches(NamedTuple):
  """The branch rows of a step, laid out after the root rows of the batch.

  Attributes:
    seqs: [K·G] trainer rows; the completion mask covers only each branch's own suffix.
    sampler_logprobs: [K·G, N].
    rewards: [K·G] float32 (0 on filler rows).
    pivots: the new `PivotState`.
    metrics: branch-side metrics.
  """

  seqs: types.Sequences
  sampler_logprobs: Array
  rewards: np.ndarray
  pivots: Any
  metrics: dict


def branch_rows(run, layout, brancher, params, config, root_state, examples, correct, pivots, key):
  """Branches the failed chains of a root rollout and verifies the branches.

  Args:
    run: the run's static pieces (`setup.Run`).
    layout: the run's `Layout`.
    brancher: `(params, state, rows, at, key) -> sampling.Completions`: fork, then decode.
    params: the sampler's copy of the policy.
    config: the run config (`rollout.branch`, `rollout.samples_per_prompt`).
    root_state: the root rollout's sampler state (its caches are forked).
    examples: row -> the task example of root row `row`.
    correct: [B] float32 correctness of every root row.
    pivots: the `PivotState`.
    key: this step's branching key.

  Returns:
    `Branches`.
  """
  br, g = config.rollout.branch, config.rollout.samples_per_prompt
  n = root_state.tokens.shape[1]
  max_nodes = -(-n // br.tokens_per_node)
  lengths = jnp.sum(root_state.loss_mask, axis=1)
  k_select, k_fork = jax.random.split(key)
  chosen = select_pivots(
    pivots,
    lengths,
    jnp.asarray(correct) <= 0,
    k_select,
    max_pivots=br.max_pivots,
    tokens_per_node=br.tokens_per_node,
    max_nodes=max_nodes,
    gamma=br.position_bias,
  )
  rows_r = jnp.repeat(chosen.rows, g)
  at_r = jnp.repeat(chosen.at, g)
  comp = brancher(params, root_state, rows_r, at_r, k_fork)
  b = rows_r.shape[0]
  row_sharding = layout.rows(b)
  comp = jax.tree.map(lambda x: jax.device_put(x, row_sharding), comp)
  owned = host_data.owned_rows(row_sharding, b)
  src = host_data.to_numpy(rows_r)
  tokens = host_data.local_rows(comp.tokens, owned)
  mask = host_data.local_rows(comp.mask, owned)
  texts = [
    run.tokenizer.decode(t[: int(m.sum())].tolist()) for t, m in zip(tokens, mask, strict=True)
  ]
  exs = [examples(int(src[r])) for r in owned]
  local_rewards = np.asarray([run.task.reward_fn(t, e) for t, e in zip(texts, exs, strict=True)])
  local_correct = evaluation.correctness(texts, exs, run.task.reward_fn).astype(np.float32)
  gather = lambda v: host_data.to_numpy(
    host_data.from_rows(row_sharding, owned, np.asarray(v, np.float32), b)
  )
  valid_r = np.repeat(host_data.to_numpy(chosen.valid), g)
  rewards = np.where(valid_r, gather(local_rewards), 0.0).astype(np.float32)
  correct_r = np.where(valid_r, gather(local_correct), 0.0)
  success_k = correct_r.reshape(-1, g).max(axis=1)
  new_pivots = observe(pivots, chosen.depth, jnp.asarray(success_k), chosen.valid)

  # Only the suffix after the pivot is the branch's own; filler rows train on nothing.
  cols = jnp.arange(n)[None, :]
  own = (cols >= at_r[:, None]) & jnp.asarray(valid_r)[:, None]
  completion_mask = comp.mask * own.astype(comp.mask.dtype)
  seqs = types.Sequences(
    tokens=jnp.concatenate([comp.prompt_tokens, comp.tokens], axis=1),
    attn_mask=jnp.concatenate([comp.prompt_mask, comp.token_mask], axis=1),
    completion_mask=completion_mask,
  )
  valid_k = host_data.to_numpy(chosen.valid)
  suffix_tokens = float(np.sum(host_data.to_numpy(completion_mask)))
  root_tokens = float(np.sum(host_data.to_numpy(lengths)))
  metrics = {
    "branch/pivots": float(valid_k.sum()),
    "branch/success_rate": float(correct_r[valid_r].mean()) if valid_r.any() else 0.0,
    "branch/pivot_success": float(success_k[valid_k].mean()) if valid_k.any() else 0.0,
    "branch/depth": float(host_data.to_numpy(chosen.depth)[valid_k].mean())
    if valid_k.any()
    else 0.0,
    "branch/token_frac": suffix_tokens / max(suffix_tokens + root_tokens, 1.0),
    "branch/generated_tokens": suffix_tokens,  # a branch samples only its suffix
  }
  return Branches(
    seqs=seqs,
    sampler_logprobs=comp.sampling_logprobs,
    rewards=rewards,
    pivots=new_pivots,
    metrics=metrics,
  )


def extend(run, layout, sampler, params, config, ro, key):
  """The rollout `ro` with its branch groups appended: P + K groups of G rows.

  Args:
    run, layout, config: the run's pieces.
    sampler: the run's `rollout.Sampler` (its `branch` forks and decodes).
    params: the sampler's copy of the policy (the one the root rows were sampled with).
    ro: the root `rollout.Rollout`, with `sampler_state`, `correct` and `example_ids`.
    key: this step's branching key.

  Returns:
    The extended `rollout.Rollout`; `batch.stream` is 1 on the branch rows, and
    `data.pivots` holds the window with this step's pivots.
  """
  if ro.sampler_state is None:
    raise ValueError(
      "branching needs the root rollout's sampler state in batch order (no refill edit)"
    )
  g = config.rollout.samples_per_prompt
  ids = ro.example_ids
  examples = lambda row: run.task.train(int(ids[row // g]))
  br = branch_rows(
    run,
    layout,
    sampler.branch,
    params,
    config,
    ro.sampler_state,
    examples,
    ro.correct,
    ro.data.pivots,
    key,
  )
  root_rows, branch_count = ro.batch.rewards.shape[0], br.rewards.shape[0]
  total = root_rows + branch_count
  put = lambda a, b: jax.device_put(jnp.concatenate([a, b], axis=0), layout.rows(total))
  seqs = jax.tree.map(put, ro.batch.seqs, br.seqs)
  stream = np.concatenate([np.zeros(root_rows, np.int32), np.ones(branch_count, np.int32)])
  batch = ro.batch._replace(
    seqs=seqs,
    sampler_logprobs=put(ro.batch.sampler_logprobs, br.sampler_logprobs),
    rewards=put(ro.batch.rewards, jnp.asarray(br.rewards)),
    stream=layout.put_rows(stream),
  )
  data = ro.data._replace(pivots=jax.tree.map(layout.put_replicated, br.pivots))
  metrics = {**ro.metrics, **br.metrics}
  metrics["rollout/generated_tokens"] = (
    ro.metrics["rollout/generated_tokens"] + br.metrics["branch/generated_tokens"]
  )
  return ro._replace(batch=batch, data=data, metrics=metrics)
