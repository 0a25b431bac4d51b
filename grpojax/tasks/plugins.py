"""A user's own task and reward functions, named in the config by import path.

```
config.task.name = "my_pkg.my_tasks:make_task"       # any callable returning a `Task`
config.task.kwargs = ml_collections.ConfigDict(dict(size=3))  # its keyword arguments
config.reward.fns = ("task", "my_pkg.rewards:brevity")  # "task": the task's own reward
config.reward.weights = (1.0, 0.1)                     # empty: every weight 1
config.reward.on_error = "raise"                       # or "zero": 0, counted
```

A reward function takes `(completion, example)` and returns a float, or a dict of named float
components. A dict's value is its `"reward"` entry when it has one (the other entries are only
logged), else the sum of its entries. The run's reward is the weighted sum of the functions'
values; a completion counts as correct (accuracy, pass@k) when that sum reaches 1, as with the
built-in verifiers. Every function's mean value is logged as `reward/<name>` and every
component's as `reward/<name>/<component>`, where `<name>` is the function's attribute name.

Errors name the config field: `config.task.name: ...`, `config.reward.fns[1]: ...`.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

# The name in `reward.fns` that stands for the task's own reward function.
TASK_REWARD = "task"
ON_ERROR = ("raise", "zero")
# Metrics the trainer logs under reward/ itself.
RESERVED_NAMES = ("mean", "accuracy", "pass@G", "timeouts", "errors")
# A dict entry that, when present, is the function's value (the others are only logged).
REWARD_KEY = "reward"


class PluginError(ValueError):
  """A bad import-path plug-in; the message starts with `config.<field>`."""


class RewardError(RuntimeError):
  """A reward function raised on one completion; the message names the function and the item."""


def is_import_path(name: str) -> bool:
  """Whether a config name is an import path `module.path:attribute` (not a built-in name)."""
  return isinstance(name, str) and ":" in name


def resolve(path: str, field: str) -> Callable:
  """The callable at `module.path:attribute`.

  Args:
    path: the import path.
    field: the config field it came from, for the error message.

  Raises:
    PluginError: the path is malformed, its module does not import, or it names no callable.
  """
  module_name, _, attribute = path.partition(":")
  if not module_name or not attribute:
    raise PluginError(f"config.{field}: expected 'module.path:function', got {path!r}")
  try:
    module = importlib.import_module(module_name)
  except Exception as error:  # noqa: BLE001 (a user's module may fail in any way on import)
    raise PluginError(
      f"config.{field}: cannot import module {module_name!r} ({type(error).__name__}: {error})"
    ) from None
  fn = getattr(module, attribute, None)
  if not callable(fn):
    raise PluginError(f"config.{field}: module {module_name!r} has no callable {attribute!r}")
  return fn


def make_task(path: str, kwargs: Mapping[str, Any], field: str = "task.name") -> example_lib.Task:
  """Calls the task factory at `path` with `kwargs` and checks it returned a `Task`.

  Raises:
    PluginError: the path does not resolve, the arguments do not fit the factory
      (`config.task.kwargs`), or the result is not a `grpojax.tasks.Task`.
  """
  factory = resolve(path, field)
  try:
    task = factory(**dict(kwargs))
  except TypeError as error:
    raise PluginError(f"config.task.kwargs: {path}: {error}") from None
  except Exception as error:  # noqa: BLE001 (user code may fail in any way)
    raise PluginError(f"config.{field}: {path} raised {type(error).__name__}: {error}") from None
  if not isinstance(task, example_lib.Task):
    raise PluginError(
      f"config.{field}: {path} returned {type(task).__name__}, not a grpojax.tasks.Task"
    )
  return task


@dataclasses.dataclass(frozen=True)
class NamedReward:
  """One configured reward function.

  Attributes:
    name: the function's attribute name, used in metric names.
    path: what the config wrote (`module:function` or `"task"`).
    fn: `(completion, example) -> float | dict[str, float]`.
    weight: its weight in the sum.
  """

  name: str
  path: str
  fn: Callable
  weight: float


def _reward_name(path: str) -> str:
  return TASK_REWARD if path == TASK_REWARD else path.rpartition(":")[2]


def resolve_rewards(
  fns: Sequence[str], weights: Sequence[float], task_reward: Callable | None = None
) -> list[NamedReward]:
  """Resolves `reward.fns` with `reward.weights` (empty: every weight 1).

  Args:
    fns: import paths, or `"task"` for `task_reward`.
    weights: one number per function, or none.
    task_reward: the task's own reward function (None: resolve the paths only, with a stand-in
      for `"task"`, as validation does before the task is built).

  Raises:
    PluginError: a path does not resolve, two functions share a name, or the weights do not fit.
  """
  if isinstance(fns, str) or isinstance(weights, str):
    raise PluginError("config.reward.fns: expected a tuple of import paths, not a string")
  if weights and len(weights) != len(fns):
    raise PluginError(
      f"config.reward.weights: {len(weights)} weights for {len(fns)} reward.fns (or leave it "
      "empty for weights of 1)"
    )
  rewards = []
  for i, path in enumerate(fns):
    field = f"reward.fns[{i}]"
    if not isinstance(path, str):
      raise PluginError(f"config.{field}: expected an import path string, got {path!r}")
    if path == TASK_REWARD:
      fn = task_reward if task_reward is not None else (lambda completion, example: 0.0)
    elif is_import_path(path):
      fn = resolve(path, field)
    else:
      raise PluginError(
        f"config.{field}: expected 'module.path:function' or {TASK_REWARD!r}, got {path!r}"
      )
    weight = weights[i] if weights else 1.0
    if (
      not isinstance(weight, numbers.Real) or isinstance(weight, bool) or not math.isfinite(weight)
    ):
      raise PluginError(f"config.reward.weights[{i}]: expected a finite number, got {weight!r}")
    rewards.append(NamedReward(_reward_name(path), path, fn, float(weight)))
  for i, r in enumerate(rewards):
    if r.name in RESERVED_NAMES:
      raise PluginError(
        f"config.reward.fns[{i}]: a function named {r.name!r} would clash with the metric "
        f"reward/{r.name}; rename it"
      )
  names = collections.Counter(r.name for r in rewards)
  twice = sorted(name for name, n in names.items() if n > 1)
  if twice:
    raise PluginError(f"config.reward.fns: two functions named {twice[0]!r} (metric names clash)")
  return rewards


def _where(example: example_lib.Example) -> str:
  where = f"example {example.source}" if example.source else "example"
  return f"{where} (prompt {example.prompt[:60]!r})"


def _describe(completion, example: example_lib.Example) -> str:
  return f"completion {str(completion)[:80]!r} of {_where(example)}"


def component_values(value: Any, name: str) -> tuple[float, dict[str, float]]:
  """A reward function's return value as (its value, its named components).

  A float is its own value with no components; a dict's value is its `"reward"` entry when it
  has one, else the sum of its entries.

  Raises:
    TypeError: the value is neither a real number nor a non-empty dict of them.
  """
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    return float(value), {}
  if isinstance(value, Mapping) and value:
    parts = {}
    for key, part in value.items():
      if not isinstance(key, str) or not isinstance(part, numbers.Real) or isinstance(part, bool):
        raise TypeError(
          f"reward {name} returned a dict with entry {key!r}: {part!r}; expected str keys and "
          "float values"
        )
      parts[key] = float(part)
    total = parts[REWARD_KEY] if REWARD_KEY in parts else sum(parts.values())
    return total, parts
  raise TypeError(
    f"reward {name} returned {type(value).__name__} ({value!r:.60}); expected a float or a "
    "non-empty dict of floats"
  )


class RewardSum:
  """The weighted sum of several reward functions, as one `(completion, example) -> float`.

  It keeps running totals of every function's values and components (`totals`) so the trainer
  can log their means over the completions scored during a step (`metrics_since`), and counts
  the items a function raised on (`errors`, scored 0 under `on_error="zero"`).
  """

  def __init__(self, rewards: Sequence[NamedReward], *, on_error: str = "raise"):
    if on_error not in ON_ERROR:
      raise PluginError(f"config.reward.on_error: must be one of {ON_ERROR}, got {on_error!r}")
    self.rewards = tuple(rewards)
    self.on_error = on_error
    self.errors = 0
    self.totals: collections.Counter = collections.Counter()
    self.counts: collections.Counter = collections.Counter()

  @property
  def timeouts(self) -> int | None:
    """Answers the time-limited functions among these ran out of time on, or None if none is."""
    found = [getattr(r.fn, "timeouts", None) for r in self.rewards]
    found = [n for n in found if n is not None]
    return sum(found) if found else None

  def _one(self, reward: NamedReward, completion, example) -> float:
    try:
      value, parts = component_values(reward.fn(completion, example), reward.name)
    except Exception as error:  # noqa: BLE001 (user code may fail in any way)
      if self.on_error == "raise":
        raise RewardError(
          f"reward.fns {reward.path!r} raised {type(error).__name__}: {error} on "
          f"{_describe(completion, example)}; fix the function or set "
          "config.reward.on_error='zero' to score such items 0"
        ) from error
      self.errors += 1
      return 0.0
    key = f"reward/{reward.name}"
    self.totals[key] += value
    self.counts[key] += 1
    for part, v in parts.items():
      self.totals[f"{key}/{part}"] += v
      self.counts[f"{key}/{part}"] += 1
    return value

  def __call__(self, completion, example: example_lib.Example) -> float:
    return float(sum(r.weight * self._one(r, completion, example) for r in self.rewards))

  def snapshot(self) -> tuple[dict, dict, int]:
    """The running totals, counts and error count, to diff against later."""
    return dict(self.totals), dict(self.counts), self.errors

  def metrics_since(self, before: tuple[dict, dict, int]) -> dict[str, float]:
    """Mean of every function and component over the items scored since `before`, and the
    number of items a function raised on (`reward/errors`)."""
    totals, counts, errors = before
    metrics = {}
    for key, n in self.counts.items():
      new = n - counts.get(key, 0)
      if new:
        metrics[key] = (self.totals[key] - totals.get(key, 0.0)) / new
    metrics["reward/errors"] = float(self.errors - errors)
    return metrics


def check_rewards(reward: RewardSum, example: example_lib.Example) -> None:
  """Calls every function once on an empty completion of `example` to check what it returns,
  before any work.

  Raises:
    PluginError: a function returns something other than a float or a dict of floats, or (with
      `on_error="raise"`) raises.
  """
  for i, r in enumerate(reward.rewards):
    try:
      value = r.fn("", example)
    except Exception as error:  # noqa: BLE001 (user code may fail in any way)
      if reward.on_error == "zero":
        continue
      raise PluginError(
        f"config.reward.fns[{i}]: {r.path} raised {type(error).__name__}: {error} on a trial "
        f"call with an empty completion of {_where(example)}"
      ) from None
    try:
      component_values(value, r.path)
    except TypeError as error:
      raise PluginError(f"config.reward.fns[{i}]: {error}") from None


# The verifiers a "data" task may name (`task.verifier`).
VERIFIERS = ("exact", "numeric", "math_verify")


def make_verifier(name: str) -> example_lib.RewardFn:
  """The reward function a data task's `task.verifier` names.

  `math_verify` starts a time-limited worker process (`math_verifier.MathVerifier`); its module
  (sympy) is imported only when it is chosen.

  Raises:
    PluginError: an unknown name.
  """
  if name == "exact":
    return verifiers.exact_match_reward
  if name == "numeric":
    return verifiers.numeric_reward
  if name == "math_verify":
    return importlib.import_module("grpojax.tasks.math_verifier").MathVerifier()
  raise PluginError(f"config.task.verifier: must be one of {VERIFIERS}, got {name!r}")
