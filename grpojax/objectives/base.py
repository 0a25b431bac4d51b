"""Objectives compose like optax: `(init, update, finalize)` transforms, chains, an `Objective`.

Two kinds of transform, both NamedTuples of pure functions in the manner of
`optax.GradientTransformation`:

  GroupTransform  update(advantages, state, GroupInputs) -> (advantages, state)
                  rewards of whole groups [P, G] in, advantages out ([P, G], or per token
                  [P·G, T]); the first transform of a chain receives the rewards.
  LossTransform   update(terms, state, LossInputs) -> (terms, state)
                  per-token `Terms` in and out: the loss so far, the weights waiting to multiply
                  the next policy-gradient term (importance corrections), the mask in force
                  (filters shrink it) and the metrics.

Both have `init() -> state`, `finalize(state) -> state` and `requires`, the set of inputs they
read (names of `LossInputs` fields), from which the trainer decides what to compute: a reference
policy's log-probs, the entropy, a head's outputs, or the old log-probs before any update.

`chain(*transforms)` composes transforms of one kind into one of the same kind (a chain of chains
works, and so do two filters or two corrections in a row: masks multiply, weights multiply);
`named_chain((name, transform), ...)` keeps each state under its name and prefixes its metrics
with `name/`, so the same transform may appear twice.

An `Objective` is an advantage transform, a loss chain and an aggregation that reduces the final
per-token loss to `(loss_sum, denominator)` (`aggregation.py`). `Objective.loss` is one jittable
function of the policy's outputs and the batch: it is what a trainer differentiates, per
micro-batch, and its `(loss_sum, denominator)` pairs add exactly over micro-batches and hosts.

State is exact across micro-batches: a stateful transform records `(sum, count)` style
observations in `update` and turns them into statistics in `finalize`, which the trainer calls
once per RL step, after the last micro-batch (the adaptive KL controller is one). Every
micro-batch of a step therefore sees the same statistics, and the state after the step does not
depend on how the batch was split.

Legend: P prompts, G samples per prompt, B = P·G rows, T response tokens.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import aggregation, masked

Array = jax.Array


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=(
    "logprobs",
    "mask",
    "old_logprobs",
    "sampler_logprobs",
    "ref_logprobs",
    "advantages",
    "entropy",
    "values",
    "log_z",
    "temperature",
    "temperature_logprobs",
    "sampler_temperature_logprobs",
    "rewards",
    "stream",
    "key",
  ),
  meta_fields=(),
)
@dataclasses.dataclass(frozen=True)
class LossInputs:
  """The per-token data of one (micro-)batch; None where not available.

  Attributes:
    logprobs: log π_θ of the sampled tokens [B, T], the only differentiated input (with the
      heads' outputs).
    mask: 0/1 response mask [B, T].
    old_logprobs: log π_old [B, T], the policy before this step's updates.
    sampler_logprobs: log π_samp [B, T], as the sampler reported them (its own numerics and,
      for stale rollouts, its own older parameters).
    ref_logprobs: log π_ref [B, T] of a frozen reference policy.
    advantages: Â [B, T] (from the objective's advantage transform).
    entropy: full-vocabulary entropy H_t [B, T].
    values: value-head outputs [B, T]; log_z: log-Z-head output [B]; temperature:
      temperature-head outputs [B, T].
    temperature_logprobs: log p_φ(τ_t) [B, T] of the temperature each token was sampled at,
      under the current temperature head (IntroLLM; differentiable).
    sampler_temperature_logprobs: the same log-densities as the sampler recorded them [B, T].
    rewards: scalar rewards [B].
    stream: [B] int32 row kind: 0 for rows sampled from the prompt, 1 for rows branched from a
      pivot of another row (DEEP-GRPO's branch stream); None: all 0.
    key: PRNG key for transforms that draw at random (Clip-Cov).
  """

  logprobs: Array
  mask: Array
  old_logprobs: Array | None = None
  sampler_logprobs: Array | None = None
  ref_logprobs: Array | None = None
  advantages: Array | None = None
  entropy: Array | None = None
  values: Array | None = None
  log_z: Array | None = None
  temperature: Array | None = None
  temperature_logprobs: Array | None = None
  sampler_temperature_logprobs: Array | None = None
  rewards: Array | None = None
  stream: Array | None = None
  key: Array | None = None


# Names a transform may list in `requires`; "old_logprobs" in an advantage transform means the
# old log-probs are needed before the update (so the trainer scores the rollout first).
INPUTS = tuple(f.name for f in dataclasses.fields(LossInputs))
_PER_TOKEN = (
  "old_logprobs",
  "sampler_logprobs",
  "ref_logprobs",
  "advantages",
  "sampler_temperature_logprobs",
)
# Differentiable per-token inputs besides the log-probs (the entropy bonus, the heads).
_DIFFERENTIABLE_PER_TOKEN = ("entropy", "values", "temperature", "temperature_logprobs")


class GroupInputs(NamedTuple):
  """What an advantage transform may read besides the rewards.

  Attributes:
    valid_pg: [P, G] bool, samples that count (None: all).
    mask: [B, T] 0/1 response mask.
    old_logprobs: [B, T] behaviour-policy log-probs, or None.
    values: [B, T] value-head outputs of the behaviour policy, or None.
    sampler_logprobs: [B, T] the sampler's log-probs, or None.
    grad_sq_norms: [B] ‖∇_θ Σ_t log π_θ(y_t)‖² per row, or None (VCPO's optimal baseline; the
      update computes them only for an advantage transform that requires them).
    prompt_logprobs: [B, Tp] log-probs of the prompt tokens under the behaviour policy (from the
      pre-update forward pass; ProGRPO's c(q)), or None; prompt_mask: [B, Tp] the scored ones.
  """

  valid_pg: Array | None = None
  mask: Array | None = None
  old_logprobs: Array | None = None
  values: Array | None = None
  sampler_logprobs: Array | None = None
  grad_sq_norms: Array | None = None
  prompt_logprobs: Array | None = None
  prompt_mask: Array | None = None


class Terms(NamedTuple):
  """The per-token state of a loss chain.

  Attributes:
    loss: [B, T] float32 loss to minimise so far (0 on padding).
    weights: [B, T] float32 stop-gradient multipliers of the next policy-gradient term
      (1 at the start; importance corrections multiply into them). They never multiply
      regularisers (KL, entropy), as verl applies `rollout_is_weights` to `pg_losses` only.
    mask: [B, T] float32 0/1 mask in force: what policy terms and the aggregation count.
    metrics: name -> float32 scalar of this call.
  """

  loss: Array
  weights: Array
  mask: Array
  metrics: dict[str, Array]


def _identity(state):
  return state


def _no_state():
  return ()


class LossTransform(NamedTuple):
  """A per-token loss transform: `update(terms, state, inputs) -> (terms, state)`."""

  init: Callable[[], Any]
  update: Callable[[Terms, Any, LossInputs], tuple[Terms, Any]]
  finalize: Callable[[Any], Any] = _identity
  requires: frozenset = frozenset()


class GroupTransform(NamedTuple):
  """An advantage transform: `update(advantages, state, inputs) -> (advantages, state)`."""

  init: Callable[[], Any]
  update: Callable[[Array, Any, GroupInputs], tuple[Array, Any]]
  finalize: Callable[[Any], Any] = _identity
  requires: frozenset = frozenset()


def stateless(update, *, requires=(), kind=LossTransform):
  """A transform without state from `update(value, inputs) -> value`."""
  return kind(
    init=_no_state,
    update=lambda value, state, inputs: (update(value, inputs), state),
    requires=frozenset(requires),
  )


def merge_metrics(metrics, new, *, prefix=""):
  """`metrics` plus `new` (names prefixed); a name reported twice is an error."""
  out = dict(metrics)
  for name, value in new.items():
    name = prefix + name
    if name in out:
      raise ValueError(
        f"metric {name!r} is reported twice in one loss chain; compose with `named_chain` to "
        "keep both (its metrics are prefixed with each transform's name)"
      )
    out[name] = jax.lax.stop_gradient(jnp.asarray(value, jnp.float32))
  return out


def _kind_of(transforms):
  if not transforms:
    raise ValueError("chain of no transforms")
  kind = type(transforms[0])
  for t in transforms:
    if type(t) is not kind or kind not in (LossTransform, GroupTransform):
      raise TypeError(
        "a chain takes transforms of one kind (all LossTransform or all GroupTransform), got "
        + ", ".join(type(t).__name__ for t in transforms)
      )
  return kind


def _composed(kind, transforms, keys, wrap_update):
  def init():
    return _container(keys, [t.init() for t in transforms])

  def update(value, state, inputs):
    new_states = []
    for t, k in zip(transforms, keys, strict=True):
      value, s = wrap_update(t, k)(value, state[k], inputs)
      new_states.append(s)
    return value, _container(keys, new_states)

  def finalize(state):
    return _container(keys, [t.finalize(state[k]) for t, k in zip(transforms, keys, strict=True)])

  requires = frozenset().union(*(t.requires for t in transforms))
  return kind(init=init, update=update, finalize=finalize, requires=requires)


def _container(keys, values):
  if all(isinstance(k, int) for k in keys):
    return tuple(values)
  return dict(zip(keys, values, strict=True))


def chain(*transforms):
  """Applies `transforms` in order; its state is the tuple of theirs (optax's `chain`).

  Args:
    *transforms: LossTransforms, or GroupTransforms (one kind per chain).

  Returns:
    A transform of the same kind.
  """
  kind = _kind_of(transforms)
  return _composed(kind, transforms, tuple(range(len(transforms))), lambda t, k: t.update)


def named_chain(*named):
  """`chain` with each state under its name and each loss transform's metrics prefixed `name/`.

  Args:
    *named: (name, transform) pairs with unique names.

  Returns:
    A transform of the kind of the given ones; its state is a dict name -> state.
  """
  names = [name for name, _ in named]
  if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"named_chain needs unique non-empty names, got {names}")
  transforms = [t for _, t in named]
  kind = _kind_of(transforms)

  def wrap(t, name):
    if kind is GroupTransform:
      return t.update

    def update(terms, state, inputs):
      inner, state = t.update(terms._replace(metrics={}), state, inputs)
      metrics = merge_metrics(terms.metrics, inner.metrics, prefix=f"{name}/")
      return inner._replace(metrics=metrics), state

    return update

  return _composed(kind, transforms, tuple(names), wrap)


class ObjectiveState(NamedTuple):
  """State of an objective, checkpointed with the rest of the trainer's state."""

  advantage: Any
  loss: Any


# Reported by every objective; surrogates add `ratio_*` and `approx_kl`, pieces their own.
BASE_METRICS = ("loss", "masked_frac", "adv_mean", "adv_std", "adv_min", "adv_max")


def _sanitized(inputs: LossInputs) -> tuple[LossInputs, Array]:
  """float32 inputs, 0 off the mask (so padding garbage reaches nothing), and the valid mask."""
  valid = jnp.asarray(inputs.mask) > 0
  row_valid = jnp.any(valid, axis=-1)

  def clean(name, x, where, differentiable):
    if x is None:
      return None
    return masked.sanitize(x, where, differentiable=differentiable)

  fields = {"logprobs": clean("logprobs", inputs.logprobs, valid, True)}
  for name in _PER_TOKEN:
    fields[name] = clean(name, getattr(inputs, name), valid, False)
  for name in _DIFFERENTIABLE_PER_TOKEN:
    fields[name] = clean(name, getattr(inputs, name), valid, True)
  fields["log_z"] = clean("log_z", inputs.log_z, row_valid, True)
  fields["rewards"] = clean("rewards", inputs.rewards, row_valid, False)
  fields["stream"] = inputs.stream
  fields["mask"] = valid.astype(jnp.float32)
  fields["key"] = inputs.key
  return LossInputs(**fields), valid


def _check_inputs(inputs: LossInputs, requires) -> None:
  """Shape and presence checks; ValueError names the offending input."""
  shape = jnp.shape(inputs.logprobs)
  if len(shape) != 2:
    raise ValueError(f"inputs.logprobs must have shape [B, T], got {shape}.")
  for name in ("mask", *_PER_TOKEN, *_DIFFERENTIABLE_PER_TOKEN):
    array = getattr(inputs, name)
    if array is not None and jnp.shape(array) != shape:
      raise ValueError(
        f"inputs.{name} has shape {jnp.shape(array)}, but inputs.logprobs has shape {shape}."
      )
  for name in ("log_z", "rewards", "stream"):
    array = getattr(inputs, name)
    if array is not None and jnp.shape(array) != shape[:1]:
      raise ValueError(
        f"inputs.{name} has shape {jnp.shape(array)}, but must be [B] = {shape[:1]}."
      )
  missing = sorted(name for name in requires if getattr(inputs, name, None) is None)
  if missing:
    raise ValueError(f"the objective needs inputs {missing}, which are None.")


class Objective(NamedTuple):
  """Advantages, a loss chain and an aggregation, as one composable value.

  Attributes:
    advantage: GroupTransform from rewards [P, G] to advantages.
    terms: LossTransform chain over per-token `Terms`.
    aggregate: (loss_bt, mask_bt) -> (loss_sum, denominator), see `aggregation`.
    lr_scaling: None, or an `LRScaling` (`vcpo.ess_lr_scaling`): per optimiser step, sums
      observed on each micro-batch's forward pass give a scale of that step's update.
    turn_schedule: None (every recipe but SeeUPO): the update trains on all completion tokens
      at once. Otherwise a `seeupo.TurnSchedule`: the update walks the turns of a multi-turn
      batch (`Batch.turns`) in its order, each turn with its own advantages (scaled by the
      accumulated ratio of the turns already updated), optimiser steps and re-scoring
      (`rl.turn_update`).
    micro_batch_statistics: whether the loss of a micro-batch reads statistics over the tokens
      of all its rows (STAPO's entropy quantile, Clip-Cov's and KL-Cov's covariance selection),
      so that it depends on which rows share a micro-batch; the update then keeps the plain
      grouping of rows (no length bucketing).
  """

  advantage: GroupTransform
  terms: LossTransform
  aggregate: Callable[[Array, Array], tuple[Array, Array]]
  lr_scaling: Any = None
  turn_schedule: Any = None
  micro_batch_statistics: bool = False

  @property
  def requires(self) -> frozenset:
    """Inputs of the loss chain, plus "old_logprobs" / "values" if the advantages need them."""
    return self.terms.requires | (self.advantage.requires & {"old_logprobs", "values"})

  @property
  def advantages_need_old_logprobs(self) -> bool:
    """Whether the advantages read the behaviour policy's log-probs (scored before updating)."""
    return "old_logprobs" in self.advantage.requires

  @property
  def advantages_need_values(self) -> bool:
    """Whether the advantages read the behaviour policy's value-head outputs (VAPO's GAE): the
    trainer then scores the rollout, heads included, before updating."""
    return "values" in self.advantage.requires

  def init(self) -> ObjectiveState:
    return ObjectiveState(advantage=self.advantage.init(), loss=self.terms.init())

  def finalize(self, state: ObjectiveState) -> ObjectiveState:
    """Turns the step's observations into statistics; once per RL step."""
    return ObjectiveState(
      advantage=self.advantage.finalize(state.advantage), loss=self.terms.finalize(state.loss)
    )

  def advantages(self, rewards_pg, state: ObjectiveState, inputs: GroupInputs):
    """Per-token advantages [P·G, T] from group rewards [P, G] (and the new state).

    Args:
      rewards_pg: rewards [P, G].
      state: the objective's state.
      inputs: `GroupInputs`; `mask` [P·G, T] gives T (required).

    Returns:
      (advantages [P·G, T] float32, stop-gradient, 0 off the mask; new state).
    """
    if jnp.ndim(rewards_pg) != 2:
      raise ValueError(f"rewards_pg must have shape [P, G], got {jnp.shape(rewards_pg)}.")
    if inputs.mask is None:
      raise ValueError("GroupInputs.mask ([P·G, T]) is required to lay advantages over tokens.")
    if inputs.valid_pg is not None and jnp.shape(inputs.valid_pg) != jnp.shape(rewards_pg):
      raise ValueError(
        f"valid_pg has shape {jnp.shape(inputs.valid_pg)}, but rewards_pg has shape "
        f"{jnp.shape(rewards_pg)}."
      )
    missing = sorted(n for n in self.advantage.requires if getattr(inputs, n, None) is None)
    if missing:
      raise ValueError(f"the advantage transform needs GroupInputs {missing}, which are None.")
    adv, new = self.advantage.update(rewards_pg, state.advantage, inputs)
    mask_bt = inputs.mask
    rows = mask_bt.shape[0]
    if jnp.shape(adv) == jnp.shape(rewards_pg):
      adv = jnp.broadcast_to(jnp.reshape(adv, (rows, 1)), mask_bt.shape)
    elif jnp.shape(adv) != jnp.shape(mask_bt):
      raise ValueError(f"advantages of shape {jnp.shape(adv)} fit neither [P, G] nor [B, T].")
    adv = masked.sanitize(adv, mask_bt > 0)
    return adv, state._replace(advantage=new)

  def loss(self, state: ObjectiveState, inputs: LossInputs):
    """The objective on one (micro-)batch.

    Args:
      state: the objective's state (its statistics are read, its observations added to).
      inputs: `LossInputs` with at least what `requires` names (and `advantages`).

    Returns:
      (loss_sum, denominator, metrics, new state): scalars that add over micro-batches;
      `aggregation.finalize(Σ loss_sum, Σ denominator)` is the batch loss. Metrics are float32
      stop-gradient scalars of this call (masked means over its valid tokens, `*_max`/`*_min`
      extrema).
    """
    _check_inputs(inputs, self.terms.requires | {"advantages"})
    x, valid = _sanitized(inputs)
    start = Terms(
      loss=jnp.zeros(valid.shape, jnp.float32),
      weights=jnp.ones(valid.shape, jnp.float32),
      mask=x.mask,
      metrics={},
    )
    terms, loss_state = self.terms.update(start, state.loss, x)
    loss_sum, denominator = self.aggregate(terms.loss, terms.mask)
    adv_mean = masked.masked_mean(x.advantages, valid)
    metrics = {
      "loss": aggregation.finalize(loss_sum, denominator),
      "masked_frac": masked.masked_mean((valid & ~(terms.mask > 0)).astype(jnp.float32), valid),
      "adv_mean": adv_mean,
      "adv_std": jnp.sqrt(masked.masked_mean(jnp.square(x.advantages - adv_mean), valid)),
      "adv_min": masked.masked_min(x.advantages, valid),
      "adv_max": masked.masked_max(x.advantages, valid),
    }
    if x.entropy is not None:
      metrics["entropy_mean"] = masked.masked_mean(x.entropy, valid)
    if x.rewards is not None:
      row_valid = jnp.any(valid, axis=-1)
      metrics["reward_mean"] = masked.masked_mean(x.rewards, row_valid)
    metrics = merge_metrics(terms.metrics, metrics)
    new_state = jax.tree.map(jax.lax.stop_gradient, state._replace(loss=loss_state))
    return loss_sum, denominator, metrics, new_state


def with_terms(objective: Objective, *transforms, first: bool = True) -> Objective:
  """`objective` with loss transforms chained before (or after) its own."""
  if not transforms:
    return objective
  parts = (*transforms, objective.terms) if first else (objective.terms, *transforms)
  return objective._replace(terms=chain(*parts))
