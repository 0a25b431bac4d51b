"""Objectives from `ml_collections` configs: defaults read off the recipe's signature.

  config.objective = objectives.default_config("dapo")
  # ConfigDict(recipe="dapo", eps=1e-06, ddof=1, epsilon_low=0.2, epsilon_high=0.28,
  #            dual_clip_c=10.0, kl_coef=0.0, kl_kind="k3", entropy_coef=0.0,
  #            correction=ConfigDict(name="none"))
  objective = objectives.make(config.objective)

`recipe` names a function of `recipes.RECIPES` or any importable `module.path:function` with the
same shape (keyword-only arguments with defaults of type bool, int, float or str, returning an
`Objective`). Every other field is one of its keyword arguments; a field left out takes the
signature's default, so a config holds exactly what the experiment changes or shows. The same
holds for `correction`: `name` is "none" or one of `recipes.CORRECTIONS` (tis | mis | opsm), the
other fields its keyword arguments.

Errors are `ConfigError`s (ValueErrors) whose message starts with the field's path:
"objective.epsilon_low: ppo_clip: epsilon_low must be >= 0, got -0.1.". `make` also traces the
objective once on tiny inputs (`jax.eval_shape`, nothing compiled), which runs every piece's
own hyper-parameter checks.
"""

import importlib
import inspect
import numbers
import re
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from grpojax.objectives import base, recipes

RESERVED = ("recipe", "correction")
NO_CORRECTION = "none"


class ConfigError(ValueError):
  """A bad objective config; the message starts with the offending field's path."""


def _plain(config, path) -> dict:
  if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict, Mapping)):
    return dict(config.items())
  raise ConfigError(f"{path}: expected a ConfigDict, got {config!r}.")


def resolve_function(name: str, registry: Mapping[str, Callable], path: str) -> Callable:
  """`registry[name]`, or the object at `module.path:attribute`."""
  if not isinstance(name, str) or not name:
    raise ConfigError(f"{path}: expected a name, got {name!r}.")
  if name in registry:
    return registry[name]
  if ":" not in name:
    raise ConfigError(
      f"{path}: unknown name {name!r}; valid names are {', '.join(registry)}, or an import "
      "path 'module.path:function'."
    )
  module_name, _, attribute = name.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as error:
    raise ConfigError(f"{path}: cannot import module {module_name!r} ({error}).") from None
  fn = getattr(module, attribute, None)
  if not callable(fn):
    raise ConfigError(f"{path}: module {module_name!r} has no function {attribute!r}.")
  return fn


def signature_defaults(fn: Callable, path: str) -> dict:
  """Keyword argument -> default of a config-built function; its only source of defaults."""
  defaults = {}
  for param in inspect.signature(fn).parameters.values():
    if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.default is param.empty:
      raise ConfigError(
        f"{path}: {fn.__name__}'s argument {param.name!r} must be keyword-only with a default "
        "(its signature is the config's schema)."
      )
    if not isinstance(param.default, (bool, int, float, str)):
      raise ConfigError(
        f"{path}: {fn.__name__}'s argument {param.name!r} defaults to {param.default!r}; "
        "defaults must be bool, int, float or str so that a command line can override them."
      )
    if param.name in RESERVED:
      raise ConfigError(f"{path}: {fn.__name__} may not take an argument named {param.name!r}.")
    defaults[param.name] = param.default
  return defaults


def _checked(value, default, path):
  """`value`, checked to have the type of `default` (ints may stand for floats)."""
  if isinstance(default, bool):
    ok, kind = isinstance(value, bool), "a bool"
  elif isinstance(default, numbers.Integral):
    ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an int"
  elif isinstance(default, numbers.Real):
    ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
  else:
    ok, kind = isinstance(value, str), "a string"
  if not ok:
    raise ConfigError(f"{path}: expected {kind}, got {value!r}.")
  if kind == "a number":
    return float(value)
  return int(value) if kind == "an int" else value


def call_from_config(fn: Callable, fields: Mapping, path: str, what: str):
  """`fn(**defaults updated by fields)`, with type checks and errors naming `path.<field>`."""
  defaults = signature_defaults(fn, path)
  kwargs = dict(defaults)
  for field, value in fields.items():
    if field not in defaults:
      raise ConfigError(
        f"{path}.{field}: not an argument of {what}; its arguments are "
        f"{', '.join(defaults) or '(none)'}."
      )
    if value is not None:
      kwargs[field] = _checked(value, defaults[field], f"{path}.{field}")
  try:
    return fn(**kwargs)
  except ConfigError:
    raise
  except (ValueError, TypeError) as error:
    raise ConfigError(f"{_field_path(path, error, defaults)}: {error}") from error


def _field_path(path, error, fields):
  """`path.<field>` for the first argument the message names, else `path`."""
  message = str(error)
  hits = [
    (match.start(), field)
    for field in fields
    if (match := re.search(rf"\b{re.escape(field)}\b", message))
  ]
  return f"{path}.{min(hits)[1]}" if hits else path


def default_config(recipe: str, *, correction: str = NO_CORRECTION) -> ml_collections.ConfigDict:
  """The full, explicit objective config of a recipe: its name and every keyword default.

  Args:
    recipe: a name in `recipes.RECIPES`, or an import path 'module.path:function'.
    correction: "none" or a name in `recipes.CORRECTIONS` (its defaults are filled in).

  Returns:
    A locked ConfigDict (a typo in a field name fails loudly).
  """
  fn = resolve_function(recipe, recipes.RECIPES, "objective.recipe")
  config = ml_collections.ConfigDict(
    {"recipe": recipe, **signature_defaults(fn, "objective"), "correction": _correction(correction)}
  )
  config.lock()
  return config


def _correction(name):
  fields = {"name": name}
  if name != NO_CORRECTION:
    fn = resolve_function(name, recipes.CORRECTIONS, "objective.correction.name")
    fields.update(signature_defaults(fn, "objective.correction"))
  return ml_collections.ConfigDict(fields)


def make(config, *, path: str = "objective", group_size: int = 8) -> base.Objective:
  """Builds and checks the objective a config describes.

  Args:
    config: `default_config(recipe)`, possibly edited, or a partial ConfigDict/dict naming at
      least `recipe`.
    path: where the config sits in the experiment config, for error messages.
    group_size: G of the run, for the checks that depend on it (pass@k's k <= G).

  Returns:
    The `Objective` (with the correction, if any, chained in front of the recipe's terms).

  Raises:
    ConfigError: a bad config; the message starts with the field path.
  """
  fields = _plain(config, path)
  if "recipe" not in fields:
    raise ConfigError(f"{path}.recipe: missing; valid recipes are {', '.join(recipes.RECIPES)}.")
  fn = resolve_function(fields.pop("recipe"), recipes.RECIPES, f"{path}.recipe")
  correction = _plain(fields.pop("correction", {"name": NO_CORRECTION}), f"{path}.correction")
  objective = call_from_config(fn, fields, path, f"recipe {fn.__name__!r}")
  if not isinstance(objective, base.Objective):
    raise ConfigError(
      f"{path}.recipe: {fn.__name__} returned {type(objective).__name__}, not an Objective."
    )
  _probe_naming_fields(objective, path, signature_defaults(fn, path), group_size)
  name = correction.pop("name", NO_CORRECTION)
  if name != NO_CORRECTION:
    where = f"{path}.correction"
    fix = resolve_function(name, recipes.CORRECTIONS, f"{where}.name")
    objective = base.with_terms(objective, call_from_config(fix, correction, where, name))
    _probe_naming_fields(objective, where, signature_defaults(fix, where), group_size)
  elif correction:
    raise ConfigError(f"{path}.correction.{next(iter(correction))}: set correction.name first.")
  return objective


def _probe_naming_fields(objective, path, fields, group_size):
  try:
    probe(objective, group_size=group_size)
  except ConfigError:
    raise
  except ValueError as error:
    raise ConfigError(f"{_field_path(path, error, fields)}: {error}") from error


def probe(objective: base.Objective, *, group_size: int = 8) -> None:
  """Traces advantages and loss once on tiny inputs with every input present (compiles nothing).

  Tracing runs each piece's eager hyper-parameter checks, so bad values fail here, before a
  run starts, rather than inside the first jitted step.
  """
  prompts, tokens = 1, 2
  rows = prompts * group_size
  ones = jnp.ones((rows, tokens), jnp.float32)
  state = objective.init()
  group = base.GroupInputs(
    mask=ones,
    old_logprobs=-ones,
    values=ones,
    sampler_logprobs=-ones,
    grad_sq_norms=jnp.ones((rows,)),
    prompt_logprobs=-ones,
    prompt_mask=ones,
  )
  adv, state = jax.eval_shape(
    objective.advantages, jnp.zeros((prompts, group_size), jnp.float32), state, group
  )
  inputs = base.LossInputs(
    logprobs=-ones,
    mask=ones,
    old_logprobs=-ones,
    sampler_logprobs=-ones,
    ref_logprobs=-ones,
    advantages=ones,
    entropy=ones,
    values=ones,
    log_z=jnp.zeros((rows,)),
    temperature=ones,
    temperature_logprobs=-ones,
    sampler_temperature_logprobs=-ones,
    rewards=jnp.zeros((rows,)),
    key=jax.random.key(0),
  )
  jax.eval_shape(objective.loss, objective.init(), inputs)
  jax.eval_shape(objective.finalize, objective.init())
