"""Verifiable tasks: built-in generated problems, GSM8K-format data, verifiers, reward shaping.

```
task = tasks.make_task("arithmetic", difficulty=2, seed=0)
example = task.train(0)            # Example(prompt='85-63=', answer='22', solution='22')
task.reward_fn("22", example)      # 1.0
task.heldout                       # fixed held-out examples, disjoint from every task.train(i)
```

Modules: `example` (Example, Task, the hash split), `arithmetic`, `countdown` and `scratchpad`
(generated tasks; `scratchpad`'s worked solutions vary in length and order), `gsm8k` (GSM8K or
any JSON-lines / Parquet data with configured fields, through tfds array_record files and
grain), `plugins` (a user's task factory and weighted reward functions by import path),
`verifiers` (exact, numeric, countdown and format rewards), `math_verifier` (LaTeX answers by
math-verify in a time-limited worker process), `shaping` (DAPO's overlong penalty). Importing
this package loads only NumPy-light modules; import `gsm8k` (tfds, grain), `math_verifier`
(sympy) and `shaping` (JAX) where they are needed.
"""

from grpojax.tasks import arithmetic, countdown, scratchpad
from grpojax.tasks.example import Example, RewardFn, Task

BUILTIN_TASKS = ("arithmetic", "countdown", "scratchpad")


def make_task(
  name: str,
  *,
  difficulty: int,
  seed: int,
  heldout_size: int = 128,
  heldout_fraction: float = 0.1,
  operators: str = "+-",
  digits: int = 1,
) -> Task:
  """A built-in generated task.

  Args:
    name: `"arithmetic"` (difficulty = digits per operand, two operands), `"countdown"`
      (difficulty = how many numbers are given, at least 2) or `"scratchpad"` (difficulty =
      operations per problem, `digits` per number). For more knobs call the modules'
      `make_task`; for GSM8K-format files, `gsm8k.make_task`.
    difficulty: the task's difficulty knob.
    seed: the training stream's seed; the held-out set does not depend on it.
    heldout_size: distinct held-out problems.
    heldout_fraction: share of the problem space held out.
    operators: arithmetic: "+-", "+" or "-"; scratchpad: one of `scratchpad.OPERATORS`.
    digits: scratchpad only: digits per number.

  Returns:
    The task.

  Raises:
    ValueError: an unknown name or an argument out of range.
  """
  if name == "arithmetic":
    return arithmetic.make_task(
      digits=difficulty,
      operators=operators,
      seed=seed,
      heldout_size=heldout_size,
      heldout_fraction=heldout_fraction,
    )
  if name == "countdown":
    return countdown.make_task(
      count=difficulty, seed=seed, heldout_size=heldout_size, heldout_fraction=heldout_fraction
    )
  if name == "scratchpad":
    return scratchpad.make_task(
      operations=difficulty,
      digits=digits,
      operators=operators,
      seed=seed,
      heldout_size=heldout_size,
      heldout_fraction=heldout_fraction,
    )
  raise ValueError(f"unknown task {name!r}; built-in tasks are {BUILTIN_TASKS}")


__all__ = ["BUILTIN_TASKS", "Example", "RewardFn", "Task", "make_task"]
