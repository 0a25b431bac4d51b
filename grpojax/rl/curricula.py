"""Learned curricula: prompt sources that score a pool of candidates and take the best.

Each step a candidate-pool source reads the next `pool_size` ids of the task's stream (K),
estimates every candidate's success probability p̂ under the current policy, and takes the
`prompts_per_step` (n) candidates of highest utility; the rest of the pool is skipped. After the
rollout, `observe` compares p̂ with the observed group accuracy and learns from it. Everything
the choice depends on (pool position, the estimator's parameters, the replay buffer, the key) is
a pytree state inside `DataState`, so a run killed anywhere resumes bit for bit.

The estimate reads the policy, so `next` takes one more argument than a sequential source:

  ids, state = source.next(state, n, scorer)     # scorer: ids [K] -> PromptScores
  source = bind(source, scorer)                  # the plain (state, n) PromptSource of one step

`make_scorer` builds the scorer: one jitted forward of the policy on the candidates' prompts,
returning the mean last hidden state over the prompt tokens and, when the policy has one, the
log-Z head's output. Without a scorer (the supervised warm-start steps) a pool source reads the
stream in order like `source.sequential()`.

Two estimators:

- Goldilocks (arXiv 2602.14868): a teacher predicts p̂ and the utility is √(p̂(1 − p̂)), the std
  of a Bernoulli reward (the seed note's form; it ranks as p̂(1 − p̂)). The paper's abstract and
  summaries give no teacher architecture; ours is a 2-layer MLP, p̂ = σ(w₂·tanh(W₁ x + b₁) + b₂),
  on x = the per-row standardised mean-pooled prompt hidden state of the CURRENT policy (read
  without gradient: the teacher sees what the student makes of the question, and costs one
  prompt-only forward of the pool). It is trained online by SGD on the MSE between p̂ and the
  observed group accuracy, on uniform draws from a replay buffer of (features, accuracy) of
  every prompt observed so far (features as they were when the prompt was chosen).
- PACED-RL (arXiv 2602.12642): p̂(x) = log Z_φ(x) / β from the policy's own log-Z head, trained by
  FlowRL's trajectory-balance loss with the raw reward as the log-reward (`flowrl(log_reward=
  "reward")`): grpojax's residual is log Z + mean log π − β r − mean log π_ref, the paper's
  target π ∝ π_ref·exp(r / β') has β' = 1/β, and its identity p = β'·log Z* − β'·KL becomes
  p̂ = log Z / β here. The utility is −|p̂ − τ| (τ = 0.5 by default; the summaries say "close to
  a target τ"). A fraction of each batch is replayed from a buffer of observed prompts drawn with
  probability ∝ |p̂ − observed accuracy|^α (accuracy-estimation-error-prioritised replay); a
  replayed prompt leaves the buffer and re-enters with its new error once observed. The exact
  selection and replay rules are not in any source read (only the abstract and a TL;DR): these
  are our reading.

Observed accuracy is the group's mean reward clipped to [0, 1] (the correctness for 0/1
verifiers). Each step logs `<name>/p_hat_corr` (Pearson correlation between the chosen prompts'
p̂ and their observed accuracies; 0 when either is constant), `<name>/p_hat_mean`,
`<name>/abs_error`, `<name>/replayed` (PACED) and `<name>/teacher_mse` (Goldilocks), through
`metrics(state)`. The correlation is over the chosen prompts only, whose p̂ the selection has
already narrowed, so it understates how well p̂ ranks the whole pool.

Shapes: K pool size, n prompts per step, F feature dim (the model dim D), H teacher width.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax.models import heads as heads_lib
from grpojax.models import transformer
from grpojax.rl import replay as replay_lib
from grpojax.rl import rollout
from grpojax.rl import source as source_lib

NAMES = ("sequential", "goldilocks", "paced")


class PromptScores(NamedTuple):
  """What the policy says about K prompts: features [K, F] float32 (mean last hidden state over
  the real prompt tokens) and log_z [K] float32 (zeros when the policy has no log-Z head)."""

  features: jax.Array
  log_z: jax.Array


Scorer = Callable[[jax.Array], PromptScores]


class TeacherParams(NamedTuple):
  """Goldilocks' teacher: w1 [F, H], b1 [H], w2 [H], b2 []."""

  w1: jax.Array
  b1: jax.Array
  w2: jax.Array
  b2: jax.Array


class PoolState(NamedTuple):
  """A candidate-pool source's state.

  Attributes:
    position: the id of the next unread example.
    key: raw uint32 [2] key, split at every draw.
    teacher: the Goldilocks teacher's parameters, or None (PACED).
    replay: the replay buffer's state.
    chosen_features: [n, F] features of the last chosen prompts (None for PACED).
    chosen_p_hat: [n] their p̂ when chosen.
    stats: [5] float32 of the last observe: p̂-accuracy correlation, mean p̂, mean |p̂ − acc|,
      prompts replayed, the teacher's MSE on its last SGD batch (before that step).
  """

  position: jax.Array
  key: jax.Array
  teacher: Any
  replay: replay_lib.ReplayState
  chosen_features: jax.Array
  chosen_p_hat: jax.Array
  stats: jax.Array


_STATS = ("p_hat_corr", "p_hat_mean", "abs_error", "replayed", "teacher_mse")


# ---------------------------------------------------------------------------------------------
# Pure pieces: utilities, the teacher, the correlation.
# ---------------------------------------------------------------------------------------------


def goldilocks_utility(p_hat: jax.Array) -> jax.Array:
  """√(p̂(1 − p̂)), p̂ clipped to [0, 1]: the std of a Bernoulli(p̂) reward."""
  p = jnp.clip(p_hat, 0.0, 1.0)
  return jnp.sqrt(p * (1.0 - p))


def paced_utility(p_hat: jax.Array, *, tau: float) -> jax.Array:
  """−|p̂ − τ|: highest for prompts whose estimated accuracy is nearest the target τ."""
  return -jnp.abs(p_hat - tau)


def teacher_init(key: jax.Array, num_features: int, hidden: int) -> TeacherParams:
  """PyTorch `nn.Linear` initialisation, U(±1/√fan_in), for both layers."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  u = lambda k, shape, fan_in: jax.random.uniform(
    k, shape, jnp.float32, -1.0 / np.sqrt(fan_in), 1.0 / np.sqrt(fan_in)
  )
  return TeacherParams(
    w1=u(k1, (num_features, hidden), num_features),
    b1=u(k2, (hidden,), num_features),
    w2=u(k3, (hidden,), hidden),
    b2=u(k4, (), hidden),
  )


def standardise(features: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Each row to zero mean, unit variance (the teacher's input; no parameters)."""
  mean = jnp.mean(features, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(features - mean), axis=-1, keepdims=True)
  return (features - mean) * jax.lax.rsqrt(var + eps)


def teacher_predict(params: TeacherParams, features: jax.Array) -> jax.Array:
  """p̂ = σ(w₂·tanh(W₁ x + b₁) + b₂) with x = standardise(features): [K, F] -> [K]."""
  h = jnp.tanh(standardise(features) @ params.w1 + params.b1)
  return jax.nn.sigmoid(h @ params.w2 + params.b2)


def teacher_mse(params: TeacherParams, features, accuracy, valid) -> jax.Array:
  """Σ v (p̂ − acc)² / max(Σ v, 1) over the rows with valid v = 1."""
  v = valid.astype(jnp.float32)
  err = jnp.square(teacher_predict(params, features) - accuracy)
  return jnp.sum(v * err) / jnp.maximum(jnp.sum(v), 1.0)


def teacher_sgd_step(params: TeacherParams, features, accuracy, valid, *, learning_rate: float):
  """One SGD step on `teacher_mse`: params − lr·∇. Returns (params, the MSE before the step)."""
  loss, grads = jax.value_and_grad(teacher_mse)(params, features, accuracy, valid)
  return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), loss


def pearson(x: jax.Array, y: jax.Array) -> jax.Array:
  """The Pearson correlation of two [n] vectors; 0 when either is constant."""
  x, y = x - jnp.mean(x), y - jnp.mean(y)
  den = jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))
  return jnp.where(den > 0, jnp.sum(x * y) / jnp.where(den > 0, den, 1.0), 0.0)


def observed_accuracy(rewards_pg: jax.Array) -> jax.Array:
  """Each group's mean reward, clipped to [0, 1]: [P, G] -> [P]."""
  return jnp.clip(jnp.mean(jnp.asarray(rewards_pg, jnp.float32), axis=-1), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# The sources.
# ---------------------------------------------------------------------------------------------


def _check(name, value, ok, expected):
  if not ok(value):
    raise ValueError(f"config.curriculum.{name}: must be {expected}, got {value!r}")


def _sequential_next(state: PoolState, n: int):
  ids = state.position + jnp.arange(n, dtype=jnp.int32)
  return ids, state._replace(position=state.position + n)


def candidate_pool(
  *,
  estimator: str,
  prompts_per_step: int,
  pool_size: int,
  num_features: int = 0,
  seed: int = 0,
  tau: float = 0.5,
  beta: float = 15.0,
  replay_capacity: int = 1024,
  replay_fraction: float = 0.25,
  replay_alpha: float = 1.0,
  teacher_hidden: int = 64,
  teacher_learning_rate: float = 0.5,
  teacher_steps: int = 4,
  teacher_batch: int = 64,
) -> source_lib.PromptSource:
  """A candidate-pool `PromptSource` (see the module docstring).

  Args:
    estimator: "goldilocks" (teacher MLP, utility √(p̂(1 − p̂))) or "paced" (p̂ = log Z / β,
      utility −|p̂ − τ|, error-prioritised replay).
    prompts_per_step: n, the prompts each `next` with a scorer returns.
    pool_size: K >= n candidates scored per step.
    num_features: F, the scorer's feature dim (Goldilocks).
    seed: the source's key (teacher initialisation, replay draws).
    tau: PACED's target accuracy τ in [0, 1].
    beta: PACED's β > 0, the FlowRL reward coefficient (p̂ = log Z / β).
    replay_capacity: buffer slots >= n.
    replay_fraction: PACED: the share of each batch drawn from the replay buffer, in [0, 1).
    replay_alpha: PACED: the priority exponent α >= 0 (0: uniform).
    teacher_hidden, teacher_learning_rate, teacher_steps, teacher_batch: Goldilocks' teacher
      width H, SGD rate, SGD steps per observe, replay draws per step.
  """
  _check("name", estimator, lambda v: v in ("goldilocks", "paced"), "'goldilocks' or 'paced'")
  _check("pool_size", pool_size, lambda v: v >= prompts_per_step, f">= {prompts_per_step}")
  _check("replay_capacity", replay_capacity, lambda v: v >= prompts_per_step, ">= n")
  _check("tau", tau, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  _check("beta", beta, lambda v: 0.0 < v < float("inf"), "> 0")
  _check("replay_fraction", replay_fraction, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  _check("replay_alpha", replay_alpha, lambda v: v >= 0, ">= 0")
  goldilocks = estimator == "goldilocks"
  if goldilocks:
    _check("num_features", num_features, lambda v: v >= 1, ">= 1 (the scorer's feature dim)")
    _check("teacher_hidden", teacher_hidden, lambda v: v >= 1, ">= 1")
    _check("teacher_learning_rate", teacher_learning_rate, lambda v: v > 0, "> 0")
    _check("teacher_steps", teacher_steps, lambda v: v >= 0, ">= 0")
    _check("teacher_batch", teacher_batch, lambda v: 1 <= v <= replay_capacity, "in [1, cap]")
  n, k = prompts_per_step, pool_size
  f = num_features
  n_replay = 0 if goldilocks else int(round(replay_fraction * n))
  example = (
    {"features": jnp.zeros((f,), jnp.float32), "accuracy": jnp.float32(0)}
    if goldilocks
    else {"id": jnp.int32(0)}
  )
  buffer = replay_lib.replay_buffer(
    capacity=replay_capacity, example=example, alpha=0.0 if goldilocks else replay_alpha
  )

  def init():
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    return PoolState(
      position=jnp.zeros((), jnp.int32),
      key=key,
      teacher=teacher_init(init_key, f, teacher_hidden) if goldilocks else None,
      replay=buffer.init(),
      chosen_features=jnp.zeros((n, f), jnp.float32) if goldilocks else None,
      chosen_p_hat=jnp.zeros((n,), jnp.float32),
      stats=jnp.zeros((len(_STATS),), jnp.float32),
    )

  def estimate(state, scores):
    if goldilocks:
      return teacher_predict(state.teacher, scores.features)
    return scores.log_z / beta

  def utility(p_hat):
    return goldilocks_utility(p_hat) if goldilocks else paced_utility(p_hat, tau=tau)

  @jax.jit
  def select(state, pool_ids, scores):
    """The n pool candidates of highest utility (ties: the earlier id)."""
    p_hat = estimate(state, scores)
    top = jax.lax.top_k(utility(p_hat), n)[1]
    return pool_ids[top], p_hat[top], scores.features[top]

  @jax.jit
  def draw_replay(state):
    key, draw_key = jax.random.split(state.key)
    items, slots = buffer.sample(state.replay, draw_key, n_replay)
    rep = state.replay
    valid = (slots < rep.size) & (rep.priority[slots] > 0)
    return items["id"], slots, valid, key

  @jax.jit
  def merge(state, pool_ids, pool_p, replay_ids, replay_p, slots, valid, key):
    """Valid replayed prompts first, then the pool's best; replayed slots leave the buffer."""
    ids = jnp.concatenate([replay_ids, pool_ids])
    p_hat = jnp.concatenate([replay_p, pool_p])
    rank = jnp.concatenate([jnp.where(valid, 0, 2), jnp.ones((n,), jnp.int32)])
    order = jnp.argsort(rank, stable=True)[:n]
    priority = jnp.where(valid, 0.0, state.replay.priority[slots])
    replay = buffer.update_priority(state.replay, slots, priority)
    stats = state.stats.at[3].set(jnp.sum(valid).astype(jnp.float32))
    return ids[order], p_hat[order], replay, key, stats

  def next_ids(state, num, scorer=None):
    if scorer is None:  # supervised warm-start steps: the stream in order
      return _sequential_next(state, num)
    if num != n:
      raise ValueError(f"a candidate pool built for {n} prompts per step was asked for {num}")
    pool_ids = state.position + jnp.arange(k, dtype=jnp.int32)
    ids, p_hat, features = select(state, pool_ids, scorer(pool_ids))
    state = state._replace(position=state.position + k)
    if n_replay:
      replay_ids, slots, valid, key = draw_replay(state)
      replay_p = estimate(state, scorer(replay_ids))
      ids, p_hat, rep, key, stats = merge(
        state, ids, p_hat, replay_ids, replay_p, slots, valid, key
      )
      state = state._replace(replay=rep, key=key, stats=stats)
    features = features if goldilocks else None  # orbax saves no zero-size array
    return ids, state._replace(chosen_features=features, chosen_p_hat=p_hat)

  @jax.jit
  def observe(state, ids, rewards_pg):
    acc = observed_accuracy(rewards_pg)
    p_hat = state.chosen_p_hat
    err = jnp.abs(p_hat - acc)
    stats = state.stats.at[0].set(pearson(p_hat, acc))
    stats = stats.at[1].set(jnp.mean(p_hat)).at[2].set(jnp.mean(err))
    if not goldilocks:
      replay = buffer.add(state.replay, {"id": ids.astype(jnp.int32)}, err)
      return state._replace(replay=replay, stats=stats)
    replay = buffer.add(
      state.replay, {"features": state.chosen_features, "accuracy": acc}, jnp.ones_like(acc)
    )
    teacher, key = state.teacher, state.key
    mse = jnp.zeros((), jnp.float32)
    for _ in range(teacher_steps):
      key, draw_key = jax.random.split(key)
      items, slots = buffer.sample(replay, draw_key, teacher_batch)
      valid = slots < replay.size
      teacher, mse = teacher_sgd_step(
        teacher, items["features"], items["accuracy"], valid, learning_rate=teacher_learning_rate
      )
    stats = stats.at[4].set(mse)
    return state._replace(teacher=teacher, key=key, replay=replay, stats=stats)

  return source_lib.PromptSource(init=init, next=next_ids, observe=observe)


def bind(src: source_lib.PromptSource, scorer: Scorer | None) -> source_lib.PromptSource:
  """The source with this step's scorer passed to every `next` (unchanged for None)."""
  if scorer is None:
    return src
  return src._replace(next=lambda state, n: src.next(state, n, scorer))


def metrics(state) -> dict[str, float]:
  """The last observe's statistics of a pool source's state ({} for any other state)."""
  if not isinstance(state, PoolState):
    return {}
  goldilocks = state.teacher is not None
  name, skip = ("goldilocks", "replayed") if goldilocks else ("paced", "teacher_mse")
  stats = np.asarray(jax.device_get(state.stats))
  return {f"{name}/{key}": float(v) for key, v in zip(_STATS, stats, strict=True) if key != skip}


# ---------------------------------------------------------------------------------------------
# Wiring: the scorer and the config.
# ---------------------------------------------------------------------------------------------


def prompt_scores(model, tokens_bt: jax.Array, mask_bt: jax.Array) -> PromptScores:
  """The policy's `PromptScores` of left-padded prompts, from one forward (no gradient needed).

  The hidden states are the heads' input (after the final norm), so `log_z` equals the log-Z
  the trainer computes for a row with this prompt (the prompt's states do not see the
  completion).
  """
  out = model(
    tokens_bt,
    positions_bt=transformer.positions_from_mask(mask_bt),
    attn_mask_bts=transformer.causal_padding_mask(mask_bt),
    return_logits=False,
  )
  features = heads_lib.masked_mean(out.hidden, mask_bt)
  heads = model.heads
  if heads is None or heads.log_z is None:
    log_z = jnp.zeros(tokens_bt.shape[:1], jnp.float32)
  else:
    log_z = heads.log_z(out.hidden, mask_bt)
  return PromptScores(features=features, log_z=log_z)


def make_scorer(run, graphdef, config) -> Callable[[Any, jax.Array], PromptScores]:
  """(params, ids [K]) -> PromptScores: encodes the task's prompts of `ids` on the host (every
  process the whole pool: a pool is a few hundred short prompts) and runs `prompt_scores` under
  `params` in one jitted forward."""
  tok = run.tokenizer

  @jax.jit
  def forward(params, tokens, mask):
    return prompt_scores(nnx.merge(graphdef, params), tokens, mask)

  def score(params, ids):
    examples = [run.task.train(int(i)) for i in np.asarray(jax.device_get(ids))]
    tokens, mask = rollout.encode_prompts(run, examples, config.rollout.max_prompt_len, tok.pad_id)
    return forward(params, jnp.asarray(tokens), jnp.asarray(mask))

  return score


def from_config(config, *, num_features: int, has_log_z: bool) -> source_lib.PromptSource:
  """The run's prompt source from `config.curriculum` (errors name the field).

  Args:
    config: the run config.
    num_features: the scorer's feature dim (the policy's model dim).
    has_log_z: whether the policy has a log-Z head (PACED reads it).
  """
  cur = config.curriculum
  _check("name", cur.name, lambda v: v in NAMES, f"one of {NAMES}")
  if cur.name == "sequential":
    return source_lib.sequential()
  if cur.name == "paced" and not has_log_z:
    raise ValueError(
      "config.curriculum.name: 'paced' reads the policy's log-Z head; use an objective that "
      "trains one (recipe 'flowrl', with log_reward='reward' for an accuracy estimate)"
    )
  beta = config.objective.get("beta", 15.0) if cur.name == "paced" else 15.0
  return candidate_pool(
    estimator=cur.name,
    prompts_per_step=config.rollout.prompts_per_step,
    pool_size=cur.pool_size,
    num_features=num_features,
    seed=cur.seed,
    tau=cur.tau,
    beta=beta,
    replay_capacity=cur.replay_capacity,
    replay_fraction=cur.replay_fraction,
    replay_alpha=cur.replay_alpha,
    teacher_hidden=cur.teacher_hidden,
    teacher_learning_rate=cur.teacher_learning_rate,
    teacher_steps=cur.teacher_steps,
    teacher_batch=cur.teacher_batch,
  )
