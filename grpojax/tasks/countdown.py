"""Countdown: reach a target with `+ - * /` over given numbers, each used at most once.

The prompt lists the numbers and the target, `"3 5 2 to 16:"`; a completion is an expression
such as `"(3+5)*2"`, checked by `verifiers.countdown_reward`. Instances are generated from a
random expression tree over all the numbers, with positive integer intermediate results (the
game's rule), so every instance is solvable and its tree is the reference solution. Every
character is in the `CharTokenizer`'s `ARITHMETIC_ALPHABET`.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

_PROMPT = re.compile(r"(\d+(?: \d+)*) to (\d+):")
# Binding strength of an operator; numbers bind tightest.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


@dataclasses.dataclass(frozen=True)
class _Node:
  value: int
  text: str
  precedence: int


def format_prompt(numbers: list[int], target: int) -> str:
  """The prompt for an instance, e.g. `"3 5 2 to 16:"`."""
  return f"{' '.join(str(n) for n in numbers)} to {target}:"


def parse_prompt(prompt: str) -> tuple[list[int], int]:
  """Inverts `format_prompt`.

  Args:
    prompt: a prompt made by `format_prompt`.

  Returns:
    The numbers, in prompt order, and the target.

  Raises:
    ValueError: the prompt is not in that format.
  """
  match = _PROMPT.fullmatch(prompt)
  if match is None:
    raise ValueError(f"not a countdown prompt: {prompt!r}")
  return [int(n) for n in match.group(1).split()], int(match.group(2))


def _combine(left: _Node, op: str, right: _Node) -> _Node:
  """Joins two sub-expressions with the fewest parentheses that keep their meaning."""
  precedence = _PRECEDENCE[op]
  left_text = left.text if left.precedence >= precedence else f"({left.text})"
  # `a-(b+c)` and `a/(b*c)` need them on the right; `a+(b-c)` = `a+b-c` exactly.
  keep_bare = right.precedence > precedence or (right.precedence == precedence and op in "+*")
  right_text = right.text if keep_bare else f"({right.text})"
  value = {
    "+": left.value + right.value,
    "-": left.value - right.value,
    "*": left.value * right.value,
    "/": left.value // right.value,
  }[op]
  return _Node(value, left_text + op + right_text, precedence)


def _legal_ops(left: int, right: int, max_target: int) -> list[str]:
  """Operators that keep the result a positive integer no larger than `max_target`.

  Never empty for `left >= right >= 1`: `-` is legal when `left > right`, `/` when
  `left == right > 1` and `+` for `1, 1`.
  """
  ops = []
  if left + right <= max_target:
    ops.append("+")
  if left > right:
    ops.append("-")
  if left * right <= max_target and right > 1 and left > 1:
    ops.append("*")
  if right > 1 and left % right == 0:
    ops.append("/")
  return ops


def generate(
  rng: np.random.Generator, *, count: int, max_number: int = 25, max_target: int = 999
) -> example_lib.Example:
  """Draws one solvable instance.

  Args:
    rng: the random source.
    count: how many numbers, at least 2.
    max_number: numbers are uniform in `[1, max_number]`.
    max_target: bound on the target and every intermediate result.

  Returns:
    The example: the prompt, the target as the answer and a reference expression over all the
    numbers as the solution.
  """
  numbers = [int(n) for n in rng.integers(1, max_number + 1, size=count)]
  nodes = [_Node(n, str(n), _ATOM) for n in numbers]
  while len(nodes) > 1:
    i, j = (int(k) for k in rng.choice(len(nodes), size=2, replace=False))
    left, right = sorted((nodes[i], nodes[j]), key=lambda node: -node.value)
    ops = _legal_ops(left.value, right.value, max_target)
    combined = _combine(left, ops[int(rng.integers(len(ops)))], right)
    nodes = [node for k, node in enumerate(nodes) if k not in (i, j)] + [combined]
  target = nodes[0].value
  return example_lib.Example(
    prompt=format_prompt(numbers, target), answer=str(target), solution=nodes[0].text
  )


def reward(completion: str | bytes, example: example_lib.Example) -> float:
  """1.0 when the completion's expression reaches the example's target with its numbers.

  Args:
    completion: the policy's text (or bytes) after the prompt; see
      `verifiers.countdown_reward` for what is accepted.
    example: an example made by `generate`.

  Returns:
    1.0 or 0.0.
  """
  numbers, target = parse_prompt(example.prompt)
  return verifiers.countdown_reward(completion, numbers=numbers, target=target)


def make_task(
  *,
  count: int,
  seed: int,
  max_number: int = 25,
  max_target: int = 999,
  heldout_size: int = 128,
  heldout_fraction: float = 0.1,
) -> example_lib.Task:
  """The countdown task.

  Args:
    count: numbers per instance (the difficulty), 2 to 8.
    seed: the training stream's seed.
    max_number: numbers are uniform in `[1, max_number]`, at least 2.
    max_target: bound on the target and intermediate results, at least `max_number`.
    heldout_size: distinct held-out instances.
    heldout_fraction: share of the instance space held out.

  Returns:
    The task.

  Raises:
    ValueError: an argument is out of range.
  """
  if not isinstance(count, int) or not 2 <= count <= 8:
    raise ValueError(f"count must be an int in [2, 8], got {count!r}")
  if not isinstance(max_number, int) or max_number < 2:
    raise ValueError(f"max_number must be an int >= 2, got {max_number!r}")
  if not isinstance(max_target, int) or max_target < max_number:
    raise ValueError(f"max_target must be an int >= max_number, got {max_target!r}")
  return example_lib.generated_task(
    f"countdown_n{count}",
    functools.partial(generate, count=count, max_number=max_number, max_target=max_target),
    reward_fn=reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=heldout_fraction,
  )
