"""Multi-step arithmetic with a written scratchpad: variable-length solutions, several valid paths.

A problem is `operations + 1` numbers of up to `digits` digits joined by the operators, with the
usual precedence (`*` before `+` and `-`, then left to right), e.g. the prompt `"12+7*3-5="`. A
solution reduces it one operation a step, each step written `a op b=c`, steps separated by `,`,
then the marker `>` and the final answer:

  12+7*3-5=  ->  7*3=21,12+21=33,33-5=28>28

Any operation whose operands are already bound may go next (here `7*3` must precede `12+...`,
while in `2*3+4*5` either product may come first), so a problem has one to `operations!` valid
solutions, of a length that grows with `operations` and `digits`: from about 6 tokens (one
one-digit operation) to tens. The training stream's reference solution picks a random valid order
at each step (seeded by the example), so a warm start sees several paths per problem shape and a
policy's diversity over paths is measurable (`reference_solutions` lists them all).

The reward is 1 when the answer after the last marker equals the problem's value (read by
`verifiers.parse_number`) and the scratchpad before it is a valid path: exactly `operations`
steps, each a correct equation applying an operation the precedence rules allow at that point.
Anything else, a malformed scratchpad included, earns 0, never an exception. Every character is
in the `CharTokenizer`'s `ARITHMETIC_ALPHABET`.
"""

from __future__ import annotations

import functools
import itertools
import re

import numpy as np

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

# Text between steps, and before the final answer.
STEP_SEPARATOR = ","
ANSWER_MARKER = ">"
OPERATORS = ("+-*", "+*", "+-", "+", "*")
MAX_OPERATIONS = 8
MAX_DIGITS = 3
# Completions longer than this earn 0 before any parsing (a solution of the largest problems is
# about 8 steps of 2 x 3-digit operands and a 25-digit result: well under it).
MAX_COMPLETION_CHARS = 1024

_PROMPT = re.compile(r"(\d+(?:[+\-*]\d+)*)=")
_TERM = re.compile(r"\d+|[+\-*]")
# One step; operands may be negative intermediate results. Bounded digit counts keep the
# arithmetic cheap on adversarial text.
_NUM = rf"-?\d{{1,{verifiers.MAX_NUMBER_DIGITS}}}"
_STEP = re.compile(rf"({_NUM})([+\-*])({_NUM})=({_NUM})")

# (values, operators) of a partly reduced expression.
_State = tuple[tuple[int, ...], tuple[str, ...]]


def check_knobs(*, operations: int, digits: int, operators: str) -> None:
  """Raises ValueError naming the first knob out of range (the message starts with its name)."""
  if not isinstance(operations, int) or isinstance(operations, bool):
    raise ValueError(f"operations must be an int in [1, {MAX_OPERATIONS}], got {operations!r}")
  if not 1 <= operations <= MAX_OPERATIONS:
    raise ValueError(f"operations must be an int in [1, {MAX_OPERATIONS}], got {operations!r}")
  if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= MAX_DIGITS:
    raise ValueError(f"digits must be an int in [1, {MAX_DIGITS}], got {digits!r}")
  if operators not in OPERATORS:
    raise ValueError(f"operators must be one of {OPERATORS}, got {operators!r}")


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def ready_operations(ops: tuple[str, ...]) -> list[int]:
  """Indices of the operators that may be applied next without changing the expression's value.

  A product is always ready (it binds tightest and is associative). A sum or difference is
  ready when no product touches it and the operator on its left, if any, is `+`: in `x-a+b`,
  applying `a+b` first would compute `x-(a+b)`.

  Args:
    ops: the operators of the current expression, left to right.

  Returns:
    The ready indices, in increasing order; never empty for a non-empty `ops`.
  """
  ready = []
  for k, op in enumerate(ops):
    left = ops[k - 1] if k > 0 else None
    right = ops[k + 1] if k + 1 < len(ops) else None
    if op == "*" or (left in (None, "+") and right != "*"):
      ready.append(k)
  return ready


def _reduce(state: _State, k: int) -> tuple[_State, str]:
  """Applies operator `k`; returns the new state and the step's text."""
  values, ops = state
  a, op, b = values[k], ops[k], values[k + 1]
  c = _apply(a, op, b)
  new = (values[:k] + (c,) + values[k + 2 :], ops[:k] + ops[k + 1 :])
  return new, f"{a}{op}{b}={c}"


def _format(steps: list[str], answer: int) -> str:
  return STEP_SEPARATOR.join(steps) + ANSWER_MARKER + str(answer)


def parse_prompt(prompt: str) -> _State:
  """The numbers and operators of a prompt such as `"12+7*3-5="`.

  Raises:
    ValueError: the prompt is not in that form.
  """
  match = _PROMPT.fullmatch(prompt)
  if match is None:
    raise ValueError(f"not a scratchpad prompt: {prompt!r}")
  terms = _TERM.findall(match.group(1))
  return tuple(int(t) for t in terms[::2]), tuple(terms[1::2])


def value(prompt: str) -> int:
  """The value of a prompt's expression with the usual precedence (independent of any path)."""
  values, ops = parse_prompt(prompt)
  # Sum of signed products: split at + and -, multiply within each term.
  total, term, sign = 0, values[0], 1
  for op, v in zip(ops, values[1:], strict=True):
    if op == "*":
      term *= v
    else:
      total += sign * term
      term, sign = v, 1 if op == "+" else -1
  return total + sign * term


def generate(
  rng: np.random.Generator, *, operations: int, digits: int, operators: str
) -> example_lib.Example:
  """Draws one problem and one of its valid solutions.

  Args:
    rng: the random source; it also picks the solution's order.
    operations: operators per problem.
    digits: each number is uniform in `[0, 10**digits)`.
    operators: the operators drawn from.

  Returns:
    The example: prompt `"a+b*c="`, the value as the answer, a random valid path as the solution.
  """
  values = tuple(int(v) for v in rng.integers(0, 10**digits, size=operations + 1))
  ops = tuple(operators[int(i)] for i in rng.integers(0, len(operators), size=operations))
  prompt = "".join(f"{v}{op}" for v, op in zip(values, ops, strict=False)) + f"{values[-1]}="
  state, steps = (values, ops), []
  while state[1]:
    ready = ready_operations(state[1])
    state, text = _reduce(state, ready[int(rng.integers(len(ready)))])
    steps.append(text)
  answer = state[0][0]
  return example_lib.Example(prompt=prompt, answer=str(answer), solution=_format(steps, answer))


def reference_solutions(prompt: str, *, limit: int = 10_000) -> list[str]:
  """Every valid solution of a problem, each once (orders that write the same steps coincide).

  Args:
    prompt: a prompt made by `generate`.
    limit: stop after this many.

  Returns:
    The solutions, in a fixed order.
  """
  found: dict[str, None] = {}

  def walk(state: _State, steps: list[str]) -> None:
    if len(found) >= limit:
      return
    if not state[1]:
      found.setdefault(_format(steps, state[0][0]))
      return
    for k in ready_operations(state[1]):
      new, text = _reduce(state, k)
      walk(new, [*steps, text])

  walk(parse_prompt(prompt), [])
  return list(found)


def _follows(state: _State, step: str) -> list[_State]:
  """The states a written step can lead to: it must match a ready operation, value for value."""
  match = _STEP.fullmatch(step)
  if match is None:
    return []
  a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
  values, ops = state
  if _apply(a, op, b) != c:
    return []
  return [
    _reduce(state, k)[0]
    for k in ready_operations(ops)
    if (values[k], ops[k], values[k + 1]) == (a, op, b)
  ]


def is_valid_path(scratchpad: str, prompt: str) -> bool:
  """Whether a scratchpad is a valid reduction of the prompt's expression to a single number.

  Equal numbers can make a step ambiguous (`2+2` in `2+2+2`), so every state it may lead to is
  followed; there are at most `operations` positions per step.
  """
  start = parse_prompt(prompt)
  steps = scratchpad.split(STEP_SEPARATOR)
  if len(steps) != len(start[1]):
    return False
  states = {start}
  for step in steps:
    states = set(itertools.chain.from_iterable(_follows(s, step) for s in states))
    if not states:
      return False
  return True


def reward(completion: str | bytes, example: example_lib.Example) -> float:
  """1.0 for a valid scratchpad followed by the marker and the correct final answer.

  Args:
    completion: the policy's text or bytes, e.g. `"7*3=21,12+21=33,33-5=28>28"`.
    example: an example made by `generate`.

  Returns:
    1.0 or 0.0.
  """
  text = verifiers.as_text(completion).strip()
  marker = text.rfind(ANSWER_MARKER)
  if len(text) > MAX_COMPLETION_CHARS or marker < 0:
    return 0.0
  predicted = verifiers.parse_number(text[marker + 1 :])
  if predicted is None or predicted != verifiers.parse_number(example.answer):
    return 0.0
  return float(is_valid_path(text[:marker], example.prompt))


def make_task(
  *,
  operations: int,
  digits: int = 1,
  operators: str = "+-*",
  seed: int,
  heldout_size: int = 128,
  heldout_fraction: float = 0.1,
) -> example_lib.Task:
  """The scratchpad task.

  Args:
    operations: operators per problem (the difficulty), 1 to `MAX_OPERATIONS`.
    digits: digits per number, 1 to `MAX_DIGITS`.
    operators: one of `OPERATORS`.
    seed: the training stream's seed.
    heldout_size: distinct held-out problems.
    heldout_fraction: share of the problem space held out.

  Returns:
    The task.

  Raises:
    ValueError: a knob is out of range (the message starts with its name).
  """
  check_knobs(operations=operations, digits=digits, operators=operators)
  return example_lib.generated_task(
    f"scratchpad_n{operations}_d{digits}_{operators}",
    functools.partial(generate, operations=operations, digits=digits, operators=operators),
    reward_fn=reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=heldout_fraction,
  )
