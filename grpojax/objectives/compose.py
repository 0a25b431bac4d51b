"""The objective chain: stage registries, loss inputs, state, and the composed loss.

An objective is a chain of small pure transforms (DESIGN.md contract 1):

  advantage ─► correction ─► token filter ─► surrogate ─► regularisers ─► aggregation
  [P, G]       TIS/MIS/OPSM   STAPO           trust region  KL to ref,      (sum, denominator)
                                                            entropy bonus

Each stage is picked by name from a registry of the pieces in this package (`ADVANTAGES`,
`CORRECTIONS`, `TOKEN_FILTERS`, `SURROGATES`) and configured by the piece's keyword
hyper-parameters. `build(config)` closes over a *resolved* config (every field explicit: see
`grpojax.objectives.recipes`, which names the recipes, fills defaults and validates) and returns an
`Objective`, a NamedTuple of pure functions in the manner of `optax.GradientTransformation`:

  objective.advantages(rewards_pg, valid_pg=None, *, logprobs_bt=None, mask_bt=None) -> [P, G]
  objective.init() -> ObjectiveState
  objective.loss(policy, batch, state, key=None) -> (loss_sum, denominator, metrics, new_state)

How the stages meet (per token, with m the response mask):

  weights, m' = correction(m)                  TIS: w = min(ρ, C), m' = m; MIS: w = ρ·keep,
                                               m' = m·keep; OPSM: w = 1, m' = m·keep.
  m'' = token_filter(m')                       STAPO drops spurious tokens.
  ℓ_t = w_t · surrogate_t(m'') + β k(δ_t) − c H_t
  (loss_sum, denominator) = aggregate(ℓ, m'')  so dropped tokens leave the denominator too.

The correction weights multiply the policy surrogate only, never the KL or entropy terms (as verl
applies `rollout_is_weights` to `pg_losses`).

Micro-batches. `loss_sum` and `denominator` add over micro-batches (and hosts); the loss of the
whole batch is `aggregation.finalize(Σ loss_sum, Σ denominator)` and its gradient is exact, because
the denominator does not depend on the parameters. Statistics that a piece takes over the tokens of
a call (STAPO's entropy quantile, Clip-Cov/KL-Cov's covariance and top-k) are per micro-batch, as
in verl.

Metrics. Every value is a float32 scalar of this call, stop-gradient: masked means over the call's
valid tokens (or rows), and `*_max` / `*_min` extrema. `merge_micro_batches` combines a stack of
them (max of maxima, min of minima, equal-weight mean of the rest). Every objective reports
`BASE_METRICS`; `entropy_mean` when `policy.entropy` is given, `kl_ref` and `kl_coef` when the KL
term is on, `reward_mean` when `batch.rewards` is given, plus each piece's own metrics (clip
fractions for the clipping surrogates, `is_*` for TIS/MIS, `opsm_*`, `stapo_*`, ...).

State. `ObjectiveState` holds the KL controller's state (the β in force). `loss` uses the β of
the state it is given and returns the controller's update from this call's KL observation. With
micro-batches, give every micro-batch of a step the same incoming state (β is then constant within
the step, keeping the sums exact) and average the returned states (`merge_micro_batches`); with
the adaptive controller that averages the clipped proportional errors of the micro-batches.

Legend: P prompts, G samples per prompt, B = P·G rows, T response tokens.
"""

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from grpojax.objectives import (
  advantages,
  aggregation,
  corrections,
  masked,
  regression_losses,
  regularizers,
  selective_surrogates,
  soft_surrogates,
  surrogates,
)

# Name of a disabled optional stage (correction, token filter).
NONE = "none"
# `inf` in a bound field means "no bound" (the piece's None); see `Piece.none_if_inf`.
INF = float("inf")

# ---------------------------------------------------------------------------------------------
# Stage registries.
# ---------------------------------------------------------------------------------------------


class Piece(NamedTuple):
  """One registered piece: its function and its config fields with their defaults.

  Attributes:
    fn: the piece (a function of this package).
    defaults: config field -> default. Defaults mirror the piece's keyword defaults, except that
      a config never holds None: a bound that the piece disables with None is `inf` here.
    none_if_inf: fields whose `inf` is passed to `fn` as None.
    local: fields the chain reads itself rather than passing to `fn`.
    fixed: keyword arguments the chain always passes to `fn` (e.g. the correction `mode`).
  """

  fn: Callable[..., Any]
  defaults: Mapping[str, Any]
  none_if_inf: tuple[str, ...] = ()
  local: tuple[str, ...] = ()
  fixed: Mapping[str, Any] = {}


ADVANTAGES = {
  "grpo": Piece(advantages.grpo_advantages, {"eps": 1e-6, "ddof": 1}),
  "dr_grpo": Piece(advantages.dr_grpo_advantages, {}),
  "rloo": Piece(advantages.rloo_advantages, {}),
  "reinforce_pp": Piece(advantages.reinforce_pp_advantages, {"eps": 1e-6, "ddof": 1}),
  "reinforce_pp_baseline": Piece(
    advantages.reinforce_pp_baseline_advantages, {"eps": 1e-6, "ddof": 1}
  ),
  "pass_at_k": Piece(
    advantages.pass_at_k_advantages, {"k": 1, "eps": 1e-6, "correct_threshold": 0.5}
  ),
  "seeupo": Piece(advantages.seeupo_advantages, {"clip": 3.0, "eps": 1e-6, "ddof": 1}),
  "oapl": Piece(advantages.oapl_advantages, {"beta1": 1.0}),
  # The paper's α is unknown; 0.1 is our guess, see the recipes README.
  "progrpo": Piece(
    advantages.progrpo_arm_advantages,
    {
      "alpha": 0.1,
      "low_prob_fraction": 0.2,
      "correct_threshold": 0.5,
      "correct_only": False,
      "eps": 1e-6,
      "ddof": 1,
    },
  ),
}

_MISMATCH_DEFAULTS = {"level": "token", "seq_ratio": "product", "log_ratio_clip": 20.0}
CORRECTIONS = {
  NONE: Piece(None, {}),
  # TIS: verl / tunix one-sided cap C = 2.0; `low = 0` is no lower bound (ρ > 0 always).
  "tis": Piece(
    corrections.mismatch_correction,
    {**_MISMATCH_DEFAULTS, "high": 2.0, "low": 0.0},
    fixed={"mode": "truncate"},
  ),
  # MIS / IcePop: keep tokens with ρ in [0.5, 5] (IcePop / OpenRLHF band).
  "mis": Piece(
    corrections.mismatch_correction,
    {**_MISMATCH_DEFAULTS, "high": 5.0, "low": 0.5},
    fixed={"mode": "mask"},
  ),
  # No source gives DeepSeek-V3.2's δ; 0.03 nats per token is our guess.
  "opsm": Piece(corrections.off_policy_sequence_mask, {"delta": 0.03}),
}

TOKEN_FILTERS = {
  NONE: Piece(None, {}),
  # τ_p = 0.01 and τ_h = the 5% entropy quantile are the secondary source's "e.g." values.
  # entropy_rule: "quantile" (τ_h = batch quantile) or "fixed" (τ_h = entropy_threshold > 0).
  "stapo": Piece(
    selective_surrogates.stapo_mask,
    {
      "prob_threshold": 0.01,
      "entropy_rule": "quantile",
      "entropy_quantile": 0.05,
      "entropy_threshold": 0.0,
      "use_old_probs": False,
    },
    local=("entropy_rule", "use_old_probs"),
  ),
}
ENTROPY_RULES = ("quantile", "fixed")

SURROGATES = {
  "reinforce": Piece(surrogates.reinforce, {}),
  "ppo_clip": Piece(
    surrogates.ppo_clip,
    {"epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip_c": INF},
    none_if_inf=("dual_clip_c",),
  ),
  "gspo": Piece(surrogates.gspo, {"epsilon_low": 3e-4, "epsilon_high": 4e-4}),
  "gspo_token": Piece(surrogates.gspo_token, {"epsilon_low": 3e-4, "epsilon_high": 4e-4}),
  "gmpo": Piece(surrogates.gmpo, {"epsilon_low": 0.4, "epsilon_high": 0.4}),
  "sapo": Piece(soft_surrogates.sapo, {"tau_pos": 1.0, "tau_neg": 1.05}),
  "cispo": Piece(
    soft_surrogates.cispo,
    {"epsilon_low": INF, "epsilon_high": 0.2, "bound": "relative"},
    none_if_inf=("epsilon_low",),
  ),
  "maspo": Piece(
    soft_surrogates.maspo,
    {
      "sigma_base": 1.0,
      "alpha": 0.3,
      "sigma_high": 10.0,
      "adv_low": 0.1,
      "adv_high": 10.0,
      "beta_pos": 0.03,
      "beta_neg": 0.03,
    },
  ),
  # include_sampler_ratio folds π_old/π_samp into VESPO's sequence weight (its official option).
  "vespo": Piece(
    soft_surrogates.vespo,
    {
      "k_pos": 2.0,
      "lambda_pos": 3.0,
      "k_neg": 3.0,
      "lambda_neg": 2.0,
      "include_sampler_ratio": False,
    },
    local=("include_sampler_ratio",),
  ),
  "clip_cov": Piece(
    selective_surrogates.clip_cov,
    {
      "epsilon_low": 0.2,
      "epsilon_high": 0.2,
      "clip_cov_ratio": 2e-4,
      "clip_cov_lb": 1.0,
      "clip_cov_ub": 5.0,
    },
  ),
  "kl_cov": Piece(selective_surrogates.kl_cov, {"kl_cov_ratio": 2e-4, "kl_coef": 1.0}),
  "oapl": Piece(regression_losses.oapl_loss, {"beta2": 1e-3}),
  "flowrl": Piece(
    regression_losses.flowrl_loss,
    {"beta": 15.0, "is_weight_clip": INF},
    none_if_inf=("is_weight_clip",),
  ),
}

# Which registry serves which config stage.
REGISTRIES = {
  "advantage": ADVANTAGES,
  "correction": CORRECTIONS,
  "token_filter": TOKEN_FILTERS,
  "surrogate": SURROGATES,
}

KL_CONTROLLERS = ("fixed", "adaptive")
# `coef` is β (the initial β of the adaptive controller); target/rate/max_error are adaptive only.
KL_DEFAULTS = {
  "coef": 0.0,
  "kind": "k3",
  "controller": "fixed",
  "target": 0.1,
  "rate": 0.1,
  "max_error": 0.2,
}

# Reported by every objective (see the module docstring for the optional ones).
BASE_METRICS = (
  "loss",
  "ratio_mean",
  "ratio_max",
  "ratio_min",
  "approx_kl",
  "masked_frac",
  "adv_mean",
  "adv_std",
  "adv_min",
  "adv_max",
  "mismatch_k3_kl",
)


def piece_kwargs(piece, stage_config):
  """The keyword hyper-parameters `piece.fn` receives for a resolved stage config."""
  kwargs = dict(piece.fixed)
  for field in piece.defaults:
    if field in piece.local:
      continue
    value = stage_config[field]
    kwargs[field] = None if field in piece.none_if_inf and value == INF else value
  return kwargs


# ---------------------------------------------------------------------------------------------
# Errors that name the config field.
# ---------------------------------------------------------------------------------------------


class ConfigError(ValueError):
  """A bad objective config; the message starts with the offending field's path."""


@contextlib.contextmanager
def config_errors(path, fields):
  """Re-raises a piece's ValueError as ConfigError naming `path.<field>`.

  The field is the first of `fields` that the piece's message mentions (pieces name the
  hyper-parameter they reject), or `path` alone if none is mentioned.
  """
  try:
    yield
  except ConfigError:
    raise
  except ValueError as error:
    message = str(error)
    hits = []
    for field in fields:
      match = re.search(rf"\b{re.escape(field)}\b", message)
      if match:
        hits.append((match.start(), field))
    where = f"{path}.{min(hits)[1]}" if hits else path
    raise ConfigError(f"{where}: {message}") from error


# ---------------------------------------------------------------------------------------------
# Inputs and state.
# ---------------------------------------------------------------------------------------------


class PolicyOutputs(NamedTuple):
  """What the trainer computes from the current parameters (differentiable).

  Attributes:
    logprobs: logπ_θ of the sampled tokens [B, T].
    entropy: full-vocabulary entropy H_t [B, T], or None. Needed by STAPO and the entropy
      bonus; reported as `entropy_mean` when given.
    log_z: log Z_φ(x) per row [B], or None. Needed by FlowRL.
    values: critic values [B, T], or None. Reserved for critic-based recipes; unused here.
  """

  logprobs: jax.Array
  entropy: jax.Array | None = None
  log_z: jax.Array | None = None
  values: jax.Array | None = None


@functools.partial(
  jax.tree_util.register_dataclass,
  data_fields=(
    "old_logprobs",
    "sampler_logprobs",
    "advantages",
    "mask",
    "ref_logprobs",
    "rewards",
  ),
  meta_fields=("max_len",),
)
@dataclasses.dataclass(frozen=True)
class LossBatch:
  """The per-token data of one (micro-)batch; a pytree whose `max_len` is static.

  Attributes:
    old_logprobs: logπ_old [B, T], recomputed by the trainer before the update.
    sampler_logprobs: logπ_samp [B, T], as reported by the sampler. The chain always reports the
      sampler–trainer mismatch from them; TIS/MIS/OPSM, OAPL (the lagged policy) and VESPO's
      `include_sampler_ratio` use them.
    advantages: Â [B, T], `Objective.advantages` broadcast over tokens.
    mask: 0/1 response mask [B, T].
    ref_logprobs: logπ_ref [B, T], or None. Needed when the KL term is on, and by FlowRL.
    rewards: scalar rewards [B], or None; only reported (`reward_mean`). OAPL and FlowRL read
      their reward-derived targets from `advantages`, which need the whole group.
    max_len: the constant L_max of `seq_mean_token_sum_norm` (Dr. GRPO: the generation budget,
      not the padded length of a micro-batch); a static Python int, or None for other modes.
  """

  old_logprobs: jax.Array
  sampler_logprobs: jax.Array
  advantages: jax.Array
  mask: jax.Array
  ref_logprobs: jax.Array | None = None
  rewards: jax.Array | None = None
  max_len: int | None = None


class KLControllerState(NamedTuple):
  """State of a KL controller: the coefficient β in force (float32 scalar)."""

  coef: jax.Array


class KLController(NamedTuple):
  """A KL-coefficient controller, optax-style: `init() -> state`, `update(kl, state) -> state`."""

  init: Callable[[], KLControllerState]
  update: Callable[[jax.Array, KLControllerState], KLControllerState]


def _check_number(name, value, predicate, requirement):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not predicate(value):
    raise ValueError(f"{name} must be a number {requirement}, got {value!r}.")


def fixed_kl_controller(*, coef: float) -> KLController:
  """A constant β (the GRPO setting, arXiv 2402.03300: β = 0.04).

  Args:
    coef: β >= 0.

  Returns:
    KLController whose update ignores the observed KL.
  """
  _check_number("coef", coef, lambda v: 0 <= v < INF, ">= 0 and finite")

  def init():
    return KLControllerState(coef=jnp.asarray(coef, jnp.float32))

  def update(observed_kl, state):
    del observed_kl
    return state

  return KLController(init, update)


def adaptive_kl_controller(
  *, init_coef: float, target: float, rate: float = 0.1, max_error: float = 0.2
) -> KLController:
  """Proportional KL controller (Ziegler et al., arXiv 1909.08593 §2.2).

    e_k = clip(KL_k / KL_target − 1, −max_error, max_error),
    β_{k+1} = β_k · (1 + rate · e_k).

  KL_k is the observed token-mean KL to the reference of step k. The paper's K_β is `rate`
  (0.1) and its error clip 0.2. verl/TRL write the rate as n_steps / horizon; here it is per
  update call. rate · max_error < 1 keeps β positive.

  Args:
    init_coef: β_0 > 0 (a multiplicative controller started at 0 stays at 0).
    target: KL_target > 0.
    rate: K_β > 0.
    max_error: clip of the proportional error, > 0.

  Returns:
    KLController.
  """
  _check_number("coef", init_coef, lambda v: 0 < v < INF, "> 0 and finite (adaptive controller)")
  _check_number("target", target, lambda v: 0 < v < INF, "> 0 and finite")
  _check_number("rate", rate, lambda v: 0 < v < INF, "> 0 and finite")
  _check_number("max_error", max_error, lambda v: 0 < v < INF, "> 0 and finite")
  if rate * max_error >= 1:
    raise ValueError(f"rate * max_error must be < 1 to keep β > 0, got {rate} * {max_error}.")

  def init():
    return KLControllerState(coef=jnp.asarray(init_coef, jnp.float32))

  def update(observed_kl, state):
    observed_kl = jax.lax.stop_gradient(jnp.asarray(observed_kl, jnp.float32))
    error = jnp.clip(observed_kl / target - 1.0, -max_error, max_error)
    return KLControllerState(coef=state.coef * (1.0 + rate * error))

  return KLController(init, update)


class ObjectiveState(NamedTuple):
  """Loss-side state, checkpointed with the optimiser state."""

  kl: KLControllerState


class Objective(NamedTuple):
  """A composed objective: its resolved config and three pure functions (module docstring)."""

  config: Any
  advantages: Callable[..., jax.Array]
  init: Callable[[], ObjectiveState]
  loss: Callable[..., tuple[jax.Array, jax.Array, dict[str, jax.Array], ObjectiveState]]


# ---------------------------------------------------------------------------------------------
# The chain.
# ---------------------------------------------------------------------------------------------


def kl_enabled(kl_config) -> bool:
  """The KL term is on for the adaptive controller or a fixed β > 0."""
  return kl_config.controller == "adaptive" or kl_config.coef > 0


def make_kl_controller(kl_config, *, path="objective.kl") -> KLController:
  """The controller a resolved `kl` config names (errors name `path.<field>`)."""
  with config_errors(path, tuple(KL_DEFAULTS)):
    if kl_config.kind not in regularizers.KL_KINDS:
      raise ValueError(
        f"Unknown KL estimator kind {kl_config.kind!r}; valid kinds are "
        f"{', '.join(regularizers.KL_KINDS)}."
      )
    if kl_config.controller == "fixed":
      return fixed_kl_controller(coef=kl_config.coef)
    if kl_config.controller == "adaptive":
      return adaptive_kl_controller(
        init_coef=kl_config.coef,
        target=kl_config.target,
        rate=kl_config.rate,
        max_error=kl_config.max_error,
      )
    raise ValueError(
      f"Unknown controller {kl_config.controller!r}; valid controllers are "
      f"{', '.join(KL_CONTROLLERS)}."
    )


def _sanitize(x, valid, *, differentiable=False):
  """float32 copy of `x`, 0 where not `valid` (so padding garbage reaches nothing)."""
  x = jnp.asarray(x).astype(jnp.float32)
  if not differentiable:
    x = jax.lax.stop_gradient(x)
  return jnp.where(valid, x, 0.0)


def _check_inputs(config, path, policy, batch, key):
  """Shape and presence checks; ValueError names the offending input (and config field)."""
  logprobs_shape = jnp.shape(policy.logprobs)
  if len(logprobs_shape) != 2:
    raise ValueError(f"policy.logprobs must have shape [B, T], got {logprobs_shape}.")
  per_token = {
    "batch.old_logprobs": batch.old_logprobs,
    "batch.sampler_logprobs": batch.sampler_logprobs,
    "batch.advantages": batch.advantages,
    "batch.mask": batch.mask,
    "batch.ref_logprobs": batch.ref_logprobs,
    "policy.entropy": policy.entropy,
    "policy.values": policy.values,
  }
  for name, array in per_token.items():
    if array is not None and jnp.shape(array) != logprobs_shape:
      raise ValueError(
        f"{name} has shape {jnp.shape(array)}, but policy.logprobs has shape {logprobs_shape}."
      )
  for name, array in (("policy.log_z", policy.log_z), ("batch.rewards", batch.rewards)):
    if array is not None and jnp.shape(array) != logprobs_shape[:1]:
      raise ValueError(
        f"{name} has shape {jnp.shape(array)}, but must be [B] = {logprobs_shape[:1]}."
      )

  def need(value, what, why):
    if value is None:
      raise ValueError(f"{what} is None, but {why} needs it.")

  if kl_enabled(config.kl):
    need(batch.ref_logprobs, "batch.ref_logprobs", f"{path}.kl (coef={config.kl.coef})")
  surrogate = config.surrogate.name
  if surrogate == "flowrl":
    need(batch.ref_logprobs, "batch.ref_logprobs", f"{path}.surrogate.name='flowrl'")
    need(policy.log_z, "policy.log_z", f"{path}.surrogate.name='flowrl'")
  if surrogate == "clip_cov":
    need(key, "key", f"{path}.surrogate.name='clip_cov' (random token pick)")
  if config.token_filter.name == "stapo":
    need(policy.entropy, "policy.entropy", f"{path}.token_filter.name='stapo'")
  if config.entropy_coef > 0:
    need(policy.entropy, "policy.entropy", f"{path}.entropy_coef={config.entropy_coef}")
  if config.aggregation == "seq_mean_token_sum_norm":
    need(batch.max_len, "batch.max_len", f"{path}.aggregation='seq_mean_token_sum_norm'")


def _advantages(
  config,
  path,
  rewards_pg,
  valid_pg=None,
  *,
  logprobs_bt=None,
  mask_bt=None,
  prompt_logprobs_ps=None,
  prompt_mask_ps=None,
):
  """Group advantages [P, G] from rewards [P, G] (see `Objective.advantages`)."""
  if jnp.ndim(rewards_pg) != 2:
    raise ValueError(f"rewards_pg must have shape [P, G], got {jnp.shape(rewards_pg)}.")
  if valid_pg is not None and jnp.shape(valid_pg) != jnp.shape(rewards_pg):
    raise ValueError(
      f"valid_pg has shape {jnp.shape(valid_pg)}, but rewards_pg has shape {jnp.shape(rewards_pg)}."
    )
  name = config.advantage.name
  piece = ADVANTAGES[name]
  kwargs = piece_kwargs(piece, config.advantage)
  if name == "progrpo":
    if logprobs_bt is None or mask_bt is None:
      raise ValueError(
        f"{path}.advantage.name='progrpo' needs logprobs_bt and mask_bt (the behaviour "
        "policy's response log-probs, [P*G, T])."
      )
    num_rows = jnp.shape(rewards_pg)[0] * jnp.shape(rewards_pg)[1]
    if jnp.ndim(logprobs_bt) != 2 or jnp.shape(logprobs_bt)[0] != num_rows:
      raise ValueError(
        f"logprobs_bt must have shape [P*G={num_rows}, T], got {jnp.shape(logprobs_bt)}."
      )
    if jnp.shape(mask_bt) != jnp.shape(logprobs_bt):
      raise ValueError(
        f"mask_bt has shape {jnp.shape(mask_bt)}, but logprobs_bt has shape "
        f"{jnp.shape(logprobs_bt)}."
      )
    with config_errors(f"{path}.advantage", tuple(piece.defaults)):
      return piece.fn(
        rewards_pg,
        jax.lax.stop_gradient(logprobs_bt),
        mask_bt,
        valid_pg,
        prompt_logprobs_ps,
        prompt_mask_ps,
        **kwargs,
      )
  with config_errors(f"{path}.advantage", tuple(piece.defaults)):
    return piece.fn(rewards_pg, valid_pg, **kwargs)


def _correct(config, path, *, logprobs, old, sampler, adv, mask):
  """Correction stage -> (weights or None, new mask, metrics)."""
  stage = config.correction
  if stage.name == NONE:
    return None, mask, {}
  piece = CORRECTIONS[stage.name]
  kwargs = piece_kwargs(piece, stage)
  with config_errors(f"{path}.correction", tuple(piece.defaults)):
    if stage.name == "opsm":
      new_mask, metrics = piece.fn(logprobs, sampler, adv, mask, **kwargs)
      return None, new_mask, metrics
    weights, new_mask, metrics = piece.fn(old, sampler, mask, **kwargs)
  metrics = dict(metrics)
  del metrics["mismatch_k3_kl"]  # The chain reports it for every objective.
  return weights, new_mask, metrics


def _filter_tokens(config, path, *, logprobs, old, adv, mask, entropy):
  """Token-filter stage -> (new mask, metrics)."""
  stage = config.token_filter
  if stage.name == NONE:
    return mask, {}
  piece = TOKEN_FILTERS[stage.name]
  kwargs = piece_kwargs(piece, stage)
  with config_errors(f"{path}.token_filter", tuple(piece.defaults)):
    if stage.entropy_rule not in ENTROPY_RULES:
      raise ValueError(
        f"Unknown entropy_rule {stage.entropy_rule!r}; valid rules are {', '.join(ENTROPY_RULES)}."
      )
    if stage.entropy_rule == "quantile":
      kwargs["entropy_threshold"] = None
    elif not stage.entropy_threshold > 0:
      raise ValueError(
        f"entropy_threshold must be > 0 with entropy_rule='fixed', got {stage.entropy_threshold}."
      )
    probs = old if stage.use_old_probs else logprobs
    return piece.fn(probs, adv, mask, entropy=entropy, **kwargs)


def _surrogate(config, path, *, logprobs, old, sampler, ref, adv, mask, log_z, key):
  """Surrogate stage -> (loss_bt, metrics)."""
  stage = config.surrogate
  piece = SURROGATES[stage.name]
  kwargs = piece_kwargs(piece, stage)
  behaviour = old
  if stage.name == "oapl":
    behaviour = sampler  # OAPL regresses onto the lagged inference policy, the sampler's.
  elif stage.name == "clip_cov":
    kwargs["key"] = key
  elif stage.name == "flowrl":
    kwargs.update(log_z=log_z, ref_logprobs=ref)
  elif stage.name == "vespo" and stage.include_sampler_ratio:
    kwargs["rollout_logprobs"] = sampler
  with config_errors(f"{path}.surrogate", tuple(piece.defaults)):
    return piece.fn(logprobs, behaviour, adv, mask, **kwargs)


def _merge(metrics, new):
  clash = set(metrics) & set(new)
  if clash:
    raise AssertionError(f"Metric names reported twice: {sorted(clash)}")
  metrics.update(new)


def _loss(config, path, controller, policy, batch, state, key=None):
  """One call of the chain; see `Objective.loss` in the module docstring."""
  _check_inputs(config, path, policy, batch, key)
  sg = jax.lax.stop_gradient
  valid = jnp.asarray(batch.mask) > 0
  logprobs = _sanitize(policy.logprobs, valid, differentiable=True)
  old = _sanitize(batch.old_logprobs, valid)
  sampler = _sanitize(batch.sampler_logprobs, valid)
  adv = _sanitize(batch.advantages, valid)
  ref = None if batch.ref_logprobs is None else _sanitize(batch.ref_logprobs, valid)
  entropy = None
  if policy.entropy is not None:
    entropy = _sanitize(policy.entropy, valid, differentiable=True)
  mask = valid.astype(jnp.float32)
  metrics = {}

  weights, mask, stage_metrics = _correct(
    config, path, logprobs=logprobs, old=old, sampler=sampler, adv=adv, mask=mask
  )
  _merge(metrics, stage_metrics)
  mask, stage_metrics = _filter_tokens(
    config, path, logprobs=logprobs, old=old, adv=adv, mask=mask, entropy=entropy
  )
  _merge(metrics, stage_metrics)
  loss_bt, stage_metrics = _surrogate(
    config,
    path,
    logprobs=logprobs,
    old=old,
    sampler=sampler,
    ref=ref,
    adv=adv,
    mask=mask,
    log_z=policy.log_z,
    key=key,
  )
  _merge(metrics, stage_metrics)
  if weights is not None:
    loss_bt = loss_bt * weights

  new_state = state
  if kl_enabled(config.kl):
    coef = state.kl.coef
    loss_bt = loss_bt + regularizers.kl_penalty_loss(
      logprobs, ref, mask, kind=config.kl.kind, coef=coef
    )
    # The KL to the reference is a property of the policy on all sampled tokens, so it is
    # observed over the original mask, whatever the correction / filter dropped.
    kl_ref = masked.masked_mean(
      sg(regularizers.kl_estimate(logprobs, ref, kind=config.kl.kind)), valid
    )
    new_state = ObjectiveState(kl=controller.update(kl_ref, state.kl))
    metrics["kl_ref"] = kl_ref
    metrics["kl_coef"] = coef
  if config.entropy_coef > 0:
    loss_bt = loss_bt + regularizers.entropy_bonus_loss(entropy, mask, coef=config.entropy_coef)

  max_len = batch.max_len if config.aggregation == "seq_mean_token_sum_norm" else None
  loss_sum, denominator = aggregation.aggregate(
    loss_bt, mask, mode=config.aggregation, max_len=max_len
  )

  adv_mean = masked.masked_mean(adv, valid)
  mismatch_bt = corrections.mismatch_log_ratio(old, sampler, valid, level="token")
  chain_metrics = {
    "loss": aggregation.finalize(loss_sum, denominator),
    "masked_frac": surrogates.frac(valid & ~(mask > 0), valid),
    "adv_mean": adv_mean,
    "adv_std": jnp.sqrt(masked.masked_mean(jnp.square(adv - adv_mean), valid)),
    "adv_min": masked.masked_min(adv, valid),
    "adv_max": masked.masked_max(adv, valid),
    "mismatch_k3_kl": masked.masked_mean(regularizers.k3_from_log_ratio(mismatch_bt), valid),
  }
  if entropy is not None:
    chain_metrics["entropy_mean"] = masked.masked_mean(entropy, valid)
  if batch.rewards is not None:
    row_valid = jnp.any(valid, axis=-1)
    chain_metrics["reward_mean"] = masked.masked_mean(
      _sanitize(batch.rewards, row_valid), row_valid
    )
  _merge(metrics, chain_metrics)
  metrics = {name: sg(jnp.asarray(value, jnp.float32)) for name, value in metrics.items()}
  new_state = jax.tree.map(sg, new_state)
  return loss_sum, denominator, metrics, new_state


def build(config, *, path: str = "objective") -> Objective:
  """Composes the objective a resolved config describes.

  Most callers want `grpojax.objectives.make`, which resolves and validates a (partial) config
  first; `build` assumes every field is present.

  Args:
    config: a resolved objective config (ml_collections.FrozenConfigDict), e.g. from
      `recipes.resolve`.
    path: the config's path in the experiment config, used in error messages.

  Returns:
    Objective(config, advantages, init, loss). `loss` is pure and jittable; close over the
    objective (its config is static).
  """
  controller = make_kl_controller(config.kl, path=f"{path}.kl")
  if not kl_enabled(config.kl):
    controller = fixed_kl_controller(coef=0.0)

  def init():
    return ObjectiveState(kl=controller.init())

  return Objective(
    config=config,
    advantages=functools.partial(_advantages, config, path),
    init=init,
    loss=functools.partial(_loss, config, path, controller),
  )


def merge_micro_batches(metrics_k, states_k=None):
  """Combines per-micro-batch metrics (and states) stacked along a leading axis K.

  Args:
    metrics_k: dict of [K] arrays (e.g. the metrics of `loss` under `lax.scan`).
    states_k: optional ObjectiveState whose leaves are stacked [K, ...].

  Returns:
    (metrics, state): `*_max` metrics take the max, `*_min` the min, all others (and the state
    leaves) the equal-weight mean over K; `state` is None when `states_k` is.
  """

  def reduce(name, values):
    if name.endswith("_max"):
      return jnp.max(values, axis=0)
    if name.endswith("_min"):
      return jnp.min(values, axis=0)
    return jnp.mean(values, axis=0)

  metrics = {name: reduce(name, values) for name, values in metrics_k.items()}
  state = None if states_k is None else jax.tree.map(lambda x: jnp.mean(x, axis=0), states_k)
  return metrics, state
