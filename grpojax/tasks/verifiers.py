"""Reward functions: `(completion, example) -> float` in [0, 1], safe on adversarial text.

A completion is whatever the policy wrote, so every function here must return quickly and never
raise on it: huge numbers, deep nesting, code, invalid UTF-8 (bytes are decoded with
`errors="replace"`) and empty strings all earn 0. The defences are explicit bounds checked before
any parsing (digit counts, lengths, nesting depths), linear-time scans, Python's `ast` in place
of `eval`, and exact `fractions.Fraction` arithmetic. LaTeX answers checked by `math-verify` are
in `math_verifier`, which needs a worker process for its time limit.
"""

from __future__ import annotations

import ast
import collections
import fractions
import re
from collections.abc import Sequence

from grpojax.tasks import example as example_lib

# Longest number, in digits, that a numeric answer may have; longer ones earn 0.
MAX_NUMBER_DIGITS = 64
# Bounds on a countdown expression: characters and parenthesis nesting.
MAX_EXPRESSION_CHARS = 256
MAX_EXPRESSION_DEPTH = 16
# Longest `\\boxed{...}` content that `last_boxed` looks for.
MAX_BOXED_CHARS = 256

# A number: optional minus (not after a word character or closing bracket, so `5-3` reads 3),
# digits with optional thousands commas, optional decimals. Linear time on any input.
_NUMBER = re.compile(r"(?:(?<![\w)\]])[-\u2212])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_COUNTDOWN_CHARS = re.compile(r"[\d+\-*/() ]*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_OPEN, _CLOSE = "([{", ")]}"


def as_text(completion: str | bytes) -> str:
  """A completion as text: bytes are decoded as UTF-8 with invalid bytes replaced.

  Args:
    completion: the policy's output.

  Returns:
    The text.

  Raises:
    TypeError: `completion` is neither `str` nor `bytes` (a caller's bug, not the policy's).
  """
  if isinstance(completion, str):
    return completion
  if isinstance(completion, (bytes, bytearray)):
    return bytes(completion).decode("utf-8", errors="replace")
  raise TypeError(f"completion must be str or bytes, got {type(completion).__name__}")


def parse_number(text: str) -> fractions.Fraction | None:
  """Reads one number such as `-1,234.50` exactly.

  Args:
    text: the number's text: optional minus (ASCII or U+2212), digits with optional thousands
      commas, optional decimals, surrounding spaces allowed.

  Returns:
    The exact value, or None if `text` is not such a number or has more than
    `MAX_NUMBER_DIGITS` digits.
  """
  text = text.strip()
  if _NUMBER.fullmatch(text) is None:
    return None
  digits = text.replace("\u2212", "-").replace(",", "")
  if sum(ch.isdigit() for ch in digits) > MAX_NUMBER_DIGITS:
    return None
  return fractions.Fraction(digits)


def extract_number(text: str) -> fractions.Fraction | None:
  """The final numeric answer of a text.

  Args:
    text: a completion. If it contains `####` (GSM8K's marker), the first number after the last
      `####` is the answer; otherwise the last number in the text.

  Returns:
    The exact value, or None if there is no number or it has more than `MAX_NUMBER_DIGITS`
    digits.
  """
  marker = text.rfind("####")
  if marker >= 0:
    match = _NUMBER.search(text, marker + 4)
  else:
    match = None
    for match in _NUMBER.finditer(text):  # noqa: B007 (the last match is wanted)
      pass
  return None if match is None else parse_number(match.group())


def exact_match_reward(completion: str | bytes, example: example_lib.Example) -> float:
  """1.0 when the completion, stripped of surrounding whitespace, equals the answer.

  Args:
    completion: the policy's text or bytes.
    example: the problem; `example.answer` is compared after stripping.

  Returns:
    1.0 or 0.0.
  """
  return float(as_text(completion).strip() == example.answer.strip())


def numeric_reward(completion: str | bytes, example: example_lib.Example) -> float:
  """1.0 when the completion's final number equals the answer exactly (as rationals).

  `"The total is 1,234."`, `"#### 1234"` and `"1234.0"` all match the answer `"1234"`.

  Args:
    completion: the policy's text or bytes; see `extract_number`.
    example: the problem; `example.answer` must be a number (see `parse_number`).

  Returns:
    1.0 or 0.0.

  Raises:
    ValueError: `example.answer` is not a number (a data bug, not the policy's).
  """
  gold = parse_number(example.answer)
  if gold is None:
    raise ValueError(f"reference answer {example.answer!r} is not a number")
  predicted = extract_number(as_text(completion))
  return float(predicted is not None and predicted == gold)


def make_format_reward(pattern: str) -> example_lib.RewardFn:
  """A reward of 1.0 for completions whose stripped text fully matches a regular expression.

  Args:
    pattern: the regular expression, e.g. `GSM8K_FORMAT`; it must run in linear time (no
      nested quantifiers), as it sees adversarial text.

  Returns:
    The reward function; it ignores the example.
  """
  compiled = re.compile(pattern)

  def format_reward(completion: str | bytes, example: example_lib.Example) -> float:
    del example  # Only the form is judged.
    return float(compiled.fullmatch(as_text(completion).strip()) is not None)

  return format_reward


# Patterns for `make_format_reward`: a bare number; GSM8K's `... #### 42`.
NUMBER_FORMAT = r"-?\d+(?:\.\d+)?"
GSM8K_FORMAT = r"(?s).*####[ \t]*-?[\d,]+(?:\.\d+)?"


def boxed_format_reward(completion: str | bytes, example: example_lib.Example) -> float:
  """1.0 when the completion has a closed, non-empty `\\boxed{...}` (searched in linear time).

  Args:
    completion: the policy's text or bytes.
    example: ignored; only the form is judged.

  Returns:
    1.0 or 0.0.
  """
  del example  # Only the form is judged.
  answer = last_boxed(as_text(completion))
  return float(answer is not None and bool(answer.strip()))


def nesting_depth(text: str) -> int:
  """The deepest nesting of `()`, `[]` and `{}` in a text (mismatches are not checked)."""
  depth = deepest = 0
  for ch in text:
    if ch in _OPEN:
      depth += 1
      deepest = max(deepest, depth)
    elif ch in _CLOSE:
      depth -= 1
  return deepest


def _evaluate(node: ast.AST, used: list[int]) -> fractions.Fraction:
  """Evaluates a `+ - * /` integer expression tree exactly, recording the integers it uses.

  Raises:
    ValueError: a node other than those operators and integer literals.
    ZeroDivisionError: division by zero.
  """
  if isinstance(node, ast.Constant) and type(node.value) is int:
    used.append(node.value)
    return fractions.Fraction(node.value)
  if isinstance(node, ast.BinOp):
    left, right = _evaluate(node.left, used), _evaluate(node.right, used)
    if isinstance(node.op, ast.Add):
      return left + right
    if isinstance(node.op, ast.Sub):
      return left - right
    if isinstance(node.op, ast.Mult):
      return left * right
    if isinstance(node.op, ast.Div):
      return left / right
  raise ValueError(f"disallowed syntax: {type(node).__name__}")


def evaluate_countdown(expression: str) -> tuple[fractions.Fraction, list[int]] | None:
  """Safely evaluates an arithmetic expression of integers, `+ - * /` and parentheses.

  Nothing is executed: the text is screened by character set, length and nesting depth, parsed
  by `ast.parse` and walked by hand. Unary signs, powers, floor division, decimals and names are
  rejected.

  Args:
    expression: the text, e.g. `"(3+5)*2"`.

  Returns:
    `(value, numbers used in order)`, or None if the text is not such an expression, is longer
    than `MAX_EXPRESSION_CHARS`, nests deeper than `MAX_EXPRESSION_DEPTH` or divides by zero.
  """
  if (
    not expression.strip()
    or len(expression) > MAX_EXPRESSION_CHARS
    or _COUNTDOWN_CHARS.fullmatch(expression) is None
    or nesting_depth(expression) > MAX_EXPRESSION_DEPTH
  ):
    return None
  try:
    tree = ast.parse(expression.strip(), mode="eval")
    used = []
    value = _evaluate(tree.body, used)
  except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
    return None
  return value, used


def countdown_reward(completion: str | bytes, *, numbers: Sequence[int], target: int) -> float:
  """1.0 when the completion's expression equals `target`, using each number at most as often as
  it is given.

  Args:
    completion: the policy's text or bytes: the expression, or text whose last
      `<answer>...</answer>` holds it. Numbers need not all be used.
    numbers: the numbers on offer.
    target: the value to reach.

  Returns:
    1.0 or 0.0.
  """
  text = as_text(completion)
  # `rfind`, not a regular expression: a lazy `<answer>(.*?)</answer>` is quadratic on
  # `"<answer>" * 10000`.
  end = text.rfind("</answer>")
  start = text.rfind("<answer>", 0, end) if end >= 0 else -1
  expression = (text[start + len("<answer>") : end] if start >= 0 else text).strip()
  result = evaluate_countdown(expression)
  if result is None:
    return 0.0
  value, used = result
  if collections.Counter(used) - collections.Counter(numbers):  # Some number used too often.
    return 0.0
  return float(value == target)


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in a text.

  Args:
    text: the text; `\\{` and `\\}` inside the box are literal braces.

  Returns:
    The content, or None if there is no box, or the last one is unclosed or longer than
    `MAX_BOXED_CHARS`.
  """
  start = None
  for match in _BOXED.finditer(text):
    start = match.end()
  if start is None:
    return None
  depth, i = 1, start
  while i < len(text) and i - start <= MAX_BOXED_CHARS:
    ch = text[i]
    if ch == "\\":
      i += 2  # `\{` and `\}` are literal braces.
      continue
    depth += (ch == "{") - (ch == "}")
    if depth == 0:
      return text[start:i]
    i += 1
  return None
