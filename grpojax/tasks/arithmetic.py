"""Multi-digit addition and subtraction: a built-in task a tiny model learns on a CPU.

A problem is `operands` numbers of up to `digits` digits joined by `+` or `-`, e.g. the prompt
`"23+58="` with the answer `"81"`. Every character is in the `CharTokenizer`'s
`ARITHMETIC_ALPHABET`. The worked solution reduces the expression left to right, one operation a
step (`"12+7-3="` -> `"19-3=16"`); with two operands it is just the answer. The reward reads the
last number of the completion, so both the bare answer and the worked solution earn it.
"""

from __future__ import annotations

import functools

import numpy as np

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers


def generate(
  rng: np.random.Generator, *, digits: int, operands: int = 2, operators: str = "+-"
) -> example_lib.Example:
  """Draws one problem.

  Args:
    rng: the random source.
    digits: each operand is uniform in `[0, 10**digits)`.
    operands: how many numbers, at least 2.
    operators: the operators drawn from, "+-", "+" or "-".

  Returns:
    The example: prompt `"a+b-c="`, answer the signed result, solution the left-to-right steps.
  """
  values = [int(v) for v in rng.integers(0, 10**digits, size=operands)]
  signs = [operators[int(s)] for s in rng.integers(0, len(operators), size=operands - 1)]
  prompt = _expression(values, signs) + "="

  steps = []
  while signs:
    first = values[0] + values[1] if signs[0] == "+" else values[0] - values[1]
    values, signs = [first, *values[2:]], signs[1:]
    if signs:
      steps.append(_expression(values, signs))
  answer = str(values[0])
  return example_lib.Example(prompt=prompt, answer=answer, solution="=".join([*steps, answer]))


def _expression(values: list[int], signs: list[str]) -> str:
  parts = [str(values[0])]
  for sign, value in zip(signs, values[1:], strict=True):
    parts += [sign, str(value)]
  return "".join(parts)


def make_task(
  *,
  digits: int,
  operands: int = 2,
  operators: str = "+-",
  seed: int,
  heldout_size: int = 128,
  heldout_fraction: float = 0.1,
) -> example_lib.Task:
  """The arithmetic task, with `verifiers.numeric_reward` as its reward.

  Args:
    digits: operand digits (the difficulty), 1 to 9.
    operands: numbers per problem, 2 to 9.
    operators: "+-" (both), "+" (addition only) or "-" (subtraction only).
    seed: the training stream's seed.
    heldout_size: distinct held-out problems; two 1-digit operands have only about 20.
    heldout_fraction: share of the problem space held out.

  Returns:
    The task.

  Raises:
    ValueError: an argument is out of range.
  """
  if not isinstance(digits, int) or not 1 <= digits <= 9:
    raise ValueError(f"digits must be an int in [1, 9], got {digits!r}")
  if not isinstance(operands, int) or not 2 <= operands <= 9:
    raise ValueError(f"operands must be an int in [2, 9], got {operands!r}")
  if operators not in ("+-", "+", "-"):
    raise ValueError(f"operators must be '+-', '+' or '-', got {operators!r}")
  return example_lib.generated_task(
    f"arithmetic_d{digits}_n{operands}_{operators}",
    functools.partial(generate, digits=digits, operands=operands, operators=operators),
    reward_fn=verifiers.numeric_reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=heldout_fraction,
  )
