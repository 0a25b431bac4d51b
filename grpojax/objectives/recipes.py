"""Named recipes (GRPO, DAPO, GSPO, ...) as configs of the objective chain, and `make`.

A recipe is a choice of pieces and hyper-parameters for the chain in `compose` (advantage ->
correction -> token filter -> surrogate -> KL / entropy -> aggregation), plus the sampler/data
settings the trainer reads (DAPO's dynamic sampling and overlong shaping). The defaults are the
papers'; where a source is uncertain the choice is ours and README.md says so.

Config schema (`default_config(recipe)` returns it with every field filled):

  objective.recipe = 'dapo'                  # one of RECIPES
  objective.advantage = ConfigDict(name='grpo', eps=1e-6, ddof=1)        # compose.ADVANTAGES
  objective.correction = ConfigDict(name='none')   # 'tis' | 'mis' | 'opsm'; compose.CORRECTIONS
  objective.token_filter = ConfigDict(name='none') # 'stapo'; compose.TOKEN_FILTERS
  objective.surrogate = ConfigDict(name='ppo_clip', epsilon_low=0.2, epsilon_high=0.28,
                                   dual_clip_c=10.0)                     # compose.SURROGATES
  objective.kl = ConfigDict(coef=0.0, kind='k3', controller='fixed', target=0.1, rate=0.1,
                            max_error=0.2)
  objective.entropy_coef = 0.0
  objective.aggregation = 'token_mean'       # aggregation.MODES
  objective.dynamic_sampling = ConfigDict(enabled=True, oversample_factor=3.0,
                                          max_num_gen_batches=10)       # trainer's, carried
  objective.overlong = ConfigDict(enabled=True, max_len=20480, cache=4096,
                                  penalty_factor=1.0)                    # trainer's, carried

Filling rules (`resolve`): a field that is absent or None takes the recipe's default. A piece
stage whose `name` differs from the recipe's takes that piece's own defaults (compose registries),
so `surrogate=ConfigDict(name='sapo')` in a DAPO config gives SAPO with τ = 1.0 / 1.05. A resolved
config never holds None: a disabled stage is 'none', a bound that a piece switches off with None is
`inf` (ppo_clip `dual_clip_c`, cispo `epsilon_low`, flowrl `is_weight_clip`), and a correction's
`low = 0` means no lower bound. Every value therefore has one fixed type, so command-line overrides
(`--config.objective.surrogate.dual_clip_c=3`) work.

Validation (`make`): unknown recipe, piece or field names, a value of the wrong type, and every
value a piece rejects raise ValueError (`compose.ConfigError`) whose message starts with the field
path, e.g. "objective.surrogate.epsilon_low: ppo_clip: epsilon_low must be >= 0, got -0.1.". The
pieces' own checks are reused: `make` traces the composed functions once on tiny inputs
(`jax.eval_shape`, no compilation), which runs every piece's eager hyper-parameter validation.

DAPO's dynamic sampling (drop groups whose rewards are all equal, oversample until the batch is
full) and overlong shaping (R_len = min(−(|y| − (L_max − L_cache)) / L_cache · penalty, 0) added to
the reward, lengths in tokens) act on the sampler and rewards, so they are the trainer's; the
objective only validates and carries them in `objective.config`.
"""

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from grpojax.objectives import aggregation, compose

INF = compose.INF
NONE = compose.NONE

_DYNAMIC_SAMPLING = {"enabled": False, "oversample_factor": 3.0, "max_num_gen_batches": 10}
# DAPO's 32B recipe: L_max = 20480, L_cache = 4096, penalty factor 1.0.
_OVERLONG = {"enabled": False, "max_len": 20480, "cache": 4096, "penalty_factor": 1.0}

# Each recipe gives every stage's piece name; listed hyper-parameters override the piece's
# registry defaults (they are written out even where equal, so the paper's values are visible).
# [ours] marks a choice no source settles (see README.md).
_RECIPES: dict[str, dict[str, Any]] = {
  # DeepSeekMath, arXiv 2402.03300 (§1): z-score (verl: ddof 1, eps 1e-6), clip 0.2 [community
  # default], β = 0.04 k3 in the loss, (1/G) Σ_i (1/|o_i|) Σ_t.
  "grpo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "ppo_clip", "epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip_c": INF},
    "kl": {"coef": 0.04, "kind": "k3"},
    "aggregation": "seq_mean_token_mean",
  },
  # Dr. GRPO, arXiv 2503.20783 (§2): no std, token sum over the constant L_max, β = 0.
  "dr_grpo": {
    "advantage": {"name": "dr_grpo"},
    "surrogate": {"name": "ppo_clip", "epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip_c": INF},
    "aggregation": "seq_mean_token_sum_norm",
  },
  # DAPO, arXiv 2503.14476 (§3): clip-higher 0.2/0.28, token-mean, no KL; the verl recipe also
  # runs the dual clip with clip_ratio_c = 10; dynamic sampling and overlong shaping on.
  "dapo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {
      "name": "ppo_clip",
      "epsilon_low": 0.2,
      "epsilon_high": 0.28,
      "dual_clip_c": 10.0,
    },
    "aggregation": "token_mean",
    "dynamic_sampling": {"enabled": True, "oversample_factor": 3.0, "max_num_gen_batches": 10},
    "overlong": {"enabled": True, "max_len": 20480, "cache": 4096, "penalty_factor": 1.0},
  },
  # GSPO, arXiv 2507.18071 (§5): sequence ratio, ε = 3e-4 / 4e-4, (1/G) Σ_i, no KL.
  "gspo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "gspo", "epsilon_low": 3e-4, "epsilon_high": 4e-4},
    "aggregation": "seq_mean_token_mean",
  },
  # GSPO-token, arXiv 2507.18071 §4.3 (verl/tunix form).
  "gspo_token": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "gspo_token", "epsilon_low": 3e-4, "epsilon_high": 4e-4},
    "aggregation": "seq_mean_token_mean",
  },
  # SAPO, arXiv 2511.20347 (§6): soft gate τ_pos = 1.0, τ_neg = 1.05, (1/G) Σ_i (1/|y_i|) Σ_t.
  "sapo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "sapo", "tau_pos": 1.0, "tau_neg": 1.05},
    "aggregation": "seq_mean_token_mean",
  },
  # CISPO, arXiv 2506.13585 (§7): detached clipped IS weight, no lower bound, ε_high = 0.2
  # [verl example; M1's own value unconfirmed], token-mean (1/Σ|o_i|), no KL.
  "cispo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "cispo", "epsilon_low": INF, "epsilon_high": 0.2, "bound": "relative"},
    "aggregation": "token_mean",
  },
  # MASPO, arXiv 2602.17550 (§8): official code defaults, token-mean, no KL.
  "maspo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {
      "name": "maspo",
      "sigma_base": 1.0,
      "alpha": 0.3,
      "sigma_high": 10.0,
      "adv_low": 0.1,
      "adv_high": 10.0,
      "beta_pos": 0.03,
      "beta_neg": 0.03,
    },
    "aggregation": "token_mean",
  },
  # STAPO, arXiv 2602.15620 (§9): S2T mask (τ_p = 0.01, τ_h = 5% entropy quantile, π_θ's
  # probability) then GRPO's clip 0.2, renormalised over kept tokens [ours: token-mean, no KL].
  "stapo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "token_filter": {
      "name": "stapo",
      "prob_threshold": 0.01,
      "entropy_rule": "quantile",
      "entropy_quantile": 0.05,
      "use_old_probs": False,
    },
    "surrogate": {"name": "ppo_clip", "epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip_c": INF},
    "aggregation": "token_mean",
  },
  # ProGRPO, arXiv 2602.05281 (§10): ARM advantage over T_low (20%) [ours: α = 0.1, c(q) = group
  # mean answer confidence unless prompt log-probs are given], then GRPO [ours: no KL].
  "progrpo": {
    "advantage": {
      "name": "progrpo",
      "alpha": 0.1,
      "low_prob_fraction": 0.2,
      "correct_threshold": 0.5,
      "correct_only": False,
      "eps": 1e-6,
      "ddof": 1,
    },
    "surrogate": {"name": "ppo_clip", "epsilon_low": 0.2, "epsilon_high": 0.2, "dual_clip_c": INF},
    "aggregation": "seq_mean_token_mean",
  },
  # VESPO, arXiv 2602.10693 (§19): kernel (k, λ) = (2, 3) / (3, 2), token-mean, no KL.
  "vespo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {
      "name": "vespo",
      "k_pos": 2.0,
      "lambda_pos": 3.0,
      "k_neg": 3.0,
      "lambda_neg": 2.0,
      "include_sampler_ratio": False,
    },
    "aggregation": "token_mean",
  },
  # GMPO, arXiv 2507.20673 (verl geo_mean): log-space clip 0.4, mean_i L_i.
  "gmpo": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "gmpo", "epsilon_low": 0.4, "epsilon_high": 0.4},
    "aggregation": "seq_mean_token_mean",
  },
  # Clip-Cov, arXiv 2505.22617 (verl defaults): ratio 2e-4, band (1, 5), clip 0.2.
  "clip_cov": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {
      "name": "clip_cov",
      "epsilon_low": 0.2,
      "epsilon_high": 0.2,
      "clip_cov_ratio": 2e-4,
      "clip_cov_lb": 1.0,
      "clip_cov_ub": 5.0,
    },
    "aggregation": "token_mean",
  },
  # KL-Cov, arXiv 2505.22617: top 2e-4 by covariance get |Δ| with coefficient 1.0
  # (verl's code fallback; its actor.yaml says 0.1), no ratio clip.
  "kl_cov": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "kl_cov", "kl_cov_ratio": 2e-4, "kl_coef": 1.0},
    "aggregation": "token_mean",
  },
  # OAPL, arXiv 2602.19362 (§20): target r − V̂*(x) with β1 = 1.0, (β2 S_i − target)² with
  # β2 = 1e-3 against the sampler's (lagged) log-probs, mean_i L_i.
  "oapl": {
    "advantage": {"name": "oapl", "beta1": 1.0},
    "surrogate": {"name": "oapl", "beta2": 1e-3},
    "aggregation": "seq_mean_token_mean",
  },
  # FlowRL, arXiv 2509.15207 (§26): trajectory balance with β = 15, unclipped IS weight (the
  # code; the paper clips), GRPO advantage as the log-reward, mean_i L_i.
  "flowrl": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "flowrl", "beta": 15.0, "is_weight_clip": INF},
    "aggregation": "seq_mean_token_mean",
  },
  # REINFORCE (Williams 1992; the GPG loss, arXiv 2504.02546) [ours: GRPO's group z-score as
  # the baseline, token-mean], no trust region.
  "reinforce": {
    "advantage": {"name": "grpo", "eps": 1e-6, "ddof": 1},
    "surrogate": {"name": "reinforce"},
    "aggregation": "token_mean",
  },
  # RLOO, arXiv 2402.14740: leave-one-out baseline, REINFORCE on the whole sequence (token sum,
  # mean over sequences) [RECALL].
  "rloo": {
    "advantage": {"name": "rloo"},
    "surrogate": {"name": "reinforce"},
    "aggregation": "seq_mean_token_sum",
  },
}

RECIPES = tuple(_RECIPES)
_FIELDS = (
  "recipe",
  "advantage",
  "correction",
  "token_filter",
  "surrogate",
  "kl",
  "entropy_coef",
  "aggregation",
  "dynamic_sampling",
  "overlong",
)


def _piece_stage(stage, overrides):
  """Registry defaults of the named piece, with `overrides` on top."""
  name = overrides["name"]
  return {"name": name, **compose.REGISTRIES[stage][name].defaults, **overrides}


def _recipe_dict(recipe):
  """The full, explicit config of `recipe` as nested plain dicts."""
  spec = _RECIPES[recipe]
  out = {"recipe": recipe}
  for stage in ("advantage", "correction", "token_filter", "surrogate"):
    out[stage] = _piece_stage(stage, spec.get(stage, {"name": NONE}))
  out["kl"] = {**compose.KL_DEFAULTS, **spec.get("kl", {})}
  out["entropy_coef"] = spec.get("entropy_coef", 0.0)
  out["aggregation"] = spec["aggregation"]
  out["dynamic_sampling"] = {**_DYNAMIC_SAMPLING, **spec.get("dynamic_sampling", {})}
  out["overlong"] = {**_OVERLONG, **spec.get("overlong", {})}
  return out


def default_config(recipe: str) -> ml_collections.ConfigDict:
  """The full, explicit objective config of a named recipe (every knob, paper defaults).

  Args:
    recipe: one of `RECIPES`.

  Returns:
    A locked ConfigDict (a typo in a field name fails loudly). To change a stage's piece,
    replace the whole sub-config, e.g. `config.surrogate = ConfigDict({'name': 'sapo'})`; the
    fields left out are filled by `make`.

  Raises:
    ValueError: unknown recipe.
  """
  if recipe not in _RECIPES:
    raise compose.ConfigError(
      f"objective.recipe: unknown recipe {recipe!r}; valid recipes are {', '.join(RECIPES)}."
    )
  config = ml_collections.ConfigDict(_recipe_dict(recipe))
  config.lock()
  return config


# ---------------------------------------------------------------------------------------------
# Resolution: fill from the recipe, check names and types.
# ---------------------------------------------------------------------------------------------


def _as_dict(value, path):
  """A ConfigDict / FrozenConfigDict / mapping as a plain dict (one level)."""
  if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict, dict)):
    return dict(value.items())
  raise compose.ConfigError(f"{path}: expected a ConfigDict, got {value!r}.")


def _checked(value, default, path):
  """`value`, checked to have the type of `default` (ints may stand for floats)."""
  if isinstance(default, bool):
    ok = isinstance(value, bool)
    kind = "a bool"
  elif isinstance(default, numbers.Integral):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    kind = "an int"
  elif isinstance(default, numbers.Real):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    kind = "a number"
    value = float(value) if ok else value
  else:
    ok = isinstance(value, str)
    kind = "a string"
  if not ok:
    raise compose.ConfigError(f"{path}: expected {kind}, got {value!r}.")
  return int(value) if kind == "an int" else value


def _fill(user, defaults, path, what, hint=""):
  """`defaults` with the non-None values of `user` (a sub-config or None) on top."""
  out = dict(defaults)
  if user is None:
    return out
  for field, value in _as_dict(user, path).items():
    if field not in defaults:
      raise compose.ConfigError(
        f"{path}.{field}: unknown field for {what}; valid fields are "
        f"{', '.join(sorted(defaults)) or '(none)'}.{hint}"
      )
    if value is not None:
      out[field] = _checked(value, defaults[field], f"{path}.{field}")
  return out


def _fill_piece(stage, user, recipe_stage, path):
  """Resolves a piece stage: the user's name (or the recipe's), then defaults, then overrides."""
  registry = compose.REGISTRIES[stage]
  name = None if user is None else _as_dict(user, path).get("name")
  if name is None:
    name = recipe_stage["name"]
  if not isinstance(name, str) or name not in registry:
    raise compose.ConfigError(
      f"{path}.name: unknown {stage} {name!r}; valid names are {', '.join(registry)}."
    )
  if name == recipe_stage["name"]:
    return _fill(user, recipe_stage, path, f"{stage} {name!r}")
  hint = (
    f" To switch from the recipe's {recipe_stage['name']!r}, replace the whole sub-config, "
    f"e.g. {path} = ConfigDict({{'name': {name!r}}}); fields of another piece do not carry over."
  )
  return _fill(user, _piece_stage(stage, {"name": name}), path, f"{stage} {name!r}", hint)


def resolve(config, *, path: str = "objective") -> ml_collections.FrozenConfigDict:
  """Fills a (partial) objective config from its recipe and checks names and types.

  Args:
    config: ConfigDict (or dict) with at least `recipe`; see the module docstring.
    path: where the config sits in the experiment config, for error messages.

  Returns:
    The full config, frozen, with every field explicit.

  Raises:
    ValueError: unknown recipe, piece or field, or a value of the wrong type; the message starts
      with the field path.
  """
  user = _as_dict(config, path)
  recipe = user.get("recipe")
  if recipe not in _RECIPES:
    raise compose.ConfigError(
      f"{path}.recipe: unknown recipe {recipe!r}; valid recipes are {', '.join(RECIPES)}."
    )
  for field in user:
    if field not in _FIELDS:
      raise compose.ConfigError(
        f"{path}.{field}: unknown field; valid fields are {', '.join(_FIELDS)}."
      )
  base = _recipe_dict(recipe)
  out = {"recipe": recipe}
  for field in _FIELDS[1:]:
    value, default, where = user.get(field), base[field], f"{path}.{field}"
    if field in compose.REGISTRIES:
      out[field] = _fill_piece(field, value, default, where)
    elif isinstance(default, dict):
      out[field] = _fill(value, default, where, field)
    else:
      out[field] = default if value is None else _checked(value, default, where)
  return ml_collections.FrozenConfigDict(out)


# ---------------------------------------------------------------------------------------------
# Validation of the fields no piece checks, and `make`.
# ---------------------------------------------------------------------------------------------


def _require(condition, path, message):
  if not condition:
    raise compose.ConfigError(f"{path}: {message}")


def _validate_own_fields(config, path):
  """Checks the fields that belong to the chain or the trainer rather than to a piece."""
  _require(
    config.aggregation in aggregation.MODES,
    f"{path}.aggregation",
    f"unknown mode {config.aggregation!r}; valid modes are {', '.join(aggregation.MODES)}.",
  )
  _require(
    0 <= config.entropy_coef < INF,
    f"{path}.entropy_coef",
    f"must be >= 0 and finite, got {config.entropy_coef}.",
  )
  sampling, where = config.dynamic_sampling, f"{path}.dynamic_sampling"
  _require(
    1 <= sampling.oversample_factor < INF,
    f"{where}.oversample_factor",
    f"must be >= 1 and finite, got {sampling.oversample_factor}.",
  )
  _require(
    sampling.max_num_gen_batches >= 0,
    f"{where}.max_num_gen_batches",
    f"must be >= 0 (0: no limit), got {sampling.max_num_gen_batches}.",
  )
  overlong, where = config.overlong, f"{path}.overlong"
  _require(overlong.max_len > 0, f"{where}.max_len", f"must be > 0, got {overlong.max_len}.")
  _require(
    0 < overlong.cache <= overlong.max_len,
    f"{where}.cache",
    f"must lie in (0, max_len={overlong.max_len}], got {overlong.cache}.",
  )
  _require(
    0 <= overlong.penalty_factor < INF,
    f"{where}.penalty_factor",
    f"must be >= 0 and finite, got {overlong.penalty_factor}.",
  )


def _probe(objective):
  """Traces advantages and loss once on tiny inputs with every optional input present.

  `jax.eval_shape` compiles nothing; tracing runs each piece's eager hyper-parameter checks, and
  `compose.config_errors` turns their ValueErrors into ones naming the config field.
  """
  k = objective.config.advantage.get("k", 1)
  num_prompts, num_samples, num_tokens = 1, max(2, k), 2
  rows = num_prompts * num_samples
  ones_bt = jnp.ones((rows, num_tokens), jnp.float32)
  jax.eval_shape(
    functools.partial(objective.advantages, logprobs_bt=-ones_bt, mask_bt=ones_bt),
    jnp.zeros((num_prompts, num_samples), jnp.float32),
  )
  policy = compose.PolicyOutputs(
    logprobs=-ones_bt, entropy=ones_bt, log_z=jnp.zeros((rows,)), values=ones_bt
  )
  batch = compose.LossBatch(
    old_logprobs=-ones_bt,
    sampler_logprobs=-ones_bt,
    advantages=ones_bt,
    mask=ones_bt,
    ref_logprobs=-ones_bt,
    rewards=jnp.zeros((rows,)),
    max_len=num_tokens,
  )
  jax.eval_shape(objective.loss, policy, batch, objective.init(), jax.random.key(0))


def make(config, *, path: str = "objective") -> compose.Objective:
  """Builds the objective a config describes: resolve, validate, compose.

  Usage (trainer):

    objective = grpojax.objectives.make(config.objective)
    adv_pg = objective.advantages(rewards_pg, valid_pg)          # [P, G], broadcast over tokens
    state = objective.init()
    loss_sum, denominator, metrics, state = objective.loss(policy, batch, state, key)

  Args:
    config: the objective ConfigDict: `default_config(recipe)`, possibly edited, or a partial
      one naming at least `recipe` (see the module docstring).
    path: where the config sits in the experiment config, for error messages.

  Returns:
    `compose.Objective(config, advantages, init, loss)` with `config` the resolved, frozen config
    (the trainer reads `dynamic_sampling` and `overlong` from it).

  Raises:
    ValueError: a bad config; the message starts with the field path
      (e.g. "objective.surrogate.epsilon_low").
  """
  resolved = resolve(config, path=path)
  _validate_own_fields(resolved, path)
  objective = compose.build(resolved, path=path)
  _probe(objective)
  return objective
