"""Tests for grpojax/tasks/verifiers.py: hand-worked cases and adversarial completions."""

import fractions
import time

import pytest

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers
from tests.tasks import adversarial


def _example(answer: str) -> example_lib.Example:
  return example_lib.Example(prompt="q", answer=answer, solution="")


def _countdown_123_to_6(completion, example):
  del example
  return verifiers.countdown_reward(completion, numbers=[1, 2, 3], target=6)


_REWARD_FNS = {
  "exact": verifiers.exact_match_reward,
  "numeric": verifiers.numeric_reward,
  "countdown": _countdown_123_to_6,
  "gsm8k_format": verifiers.make_format_reward(verifiers.GSM8K_FORMAT),
  "number_format": verifiers.make_format_reward(verifiers.NUMBER_FORMAT),
  "boxed_format": verifiers.boxed_format_reward,
}

_FORMAT_FNS = ("gsm8k_format", "number_format", "boxed_format")


@pytest.mark.parametrize("name", sorted(_REWARD_FNS))
@pytest.mark.parametrize("case", sorted(adversarial.COMPLETIONS))
def test_adversarial_completions_return_quickly(name, case):
  start = time.perf_counter()
  reward = _REWARD_FNS[name](adversarial.COMPLETIONS[case], _example("42"))
  elapsed = time.perf_counter() - start
  assert elapsed < 1.0, f"{name} took {elapsed:.2f} s on {case}"
  assert reward in (0.0, 1.0)
  if name not in _FORMAT_FNS:  # None of the cases is correct; some are well-formed.
    assert reward == 0.0


def test_adversarial_cases_that_earn_format_credit():
  # A huge bare number is a bare number; its value is still not accepted.
  assert verifiers.make_format_reward(verifiers.NUMBER_FORMAT)("9" * 100_000, None) == 1.0
  assert verifiers.numeric_reward("9" * 100_000, _example("42")) == 0.0


def test_as_text_decodes_bytes_with_replacement():
  assert verifiers.as_text(b"4\xff2") == "4\ufffd2"
  assert verifiers.as_text("x") == "x"
  with pytest.raises(TypeError):
    verifiers.as_text(42)


def test_exact_match():
  assert verifiers.exact_match_reward("  81\n", _example("81")) == 1.0
  assert verifiers.exact_match_reward(b"81", _example("81")) == 1.0
  assert verifiers.exact_match_reward("081", _example("81")) == 0.0
  assert verifiers.exact_match_reward("8 1", _example("81")) == 0.0


@pytest.mark.parametrize(
  "text, value",
  [
    ("The total is 1,234.", fractions.Fraction(1234)),
    ("3 apples and 4 pears, so 7", fractions.Fraction(7)),
    ("x = -3.25", fractions.Fraction(-13, 4)),
    ("x =\u22125", fractions.Fraction(-5)),  # Unicode minus.
    ("5-3", fractions.Fraction(3)),  # A minus after a digit is an operator.
    ("12+7=19", fractions.Fraction(19)),
    ("16-3-4=9 eggs ... #### 18 dollars, not 20", fractions.Fraction(18)),
    ("#### 1,080", fractions.Fraction(1080)),
    ("1,2345", fractions.Fraction(2345)),  # Not a thousands grouping: the last run.
    ("12,000,000 people", fractions.Fraction(12_000_000)),
    ("no numbers here", None),
    ("#### none after the marker", None),
    ("9" * 65, None),  # Over MAX_NUMBER_DIGITS.
  ],
)
def test_extract_number(text, value):
  assert verifiers.extract_number(text) == value


def test_numeric_reward_compares_exact_rationals():
  assert verifiers.numeric_reward("so it is 42.0", _example("42")) == 1.0
  assert verifiers.numeric_reward("#### 42", _example("42")) == 1.0
  assert verifiers.numeric_reward("0.5", _example("0.50")) == 1.0
  assert verifiers.numeric_reward("-81", _example("-81")) == 1.0
  assert verifiers.numeric_reward("23-58=-35", _example("-35")) == 1.0
  assert verifiers.numeric_reward("1,080", _example("1080")) == 1.0
  assert verifiers.numeric_reward("42.000000001", _example("42")) == 0.0
  assert verifiers.numeric_reward("81", _example("-81")) == 0.0
  assert verifiers.numeric_reward("", _example("42")) == 0.0
  with pytest.raises(ValueError, match="not a number"):
    verifiers.numeric_reward("42", _example("forty-two"))


@pytest.mark.parametrize(
  "expression, result",
  [
    ("(3+5)*2", (fractions.Fraction(16), [3, 5, 2])),
    ("7/2", (fractions.Fraction(7, 2), [7, 2])),  # Exact, not 3.5 in floating point.
    ("10-(2+3)*2", (fractions.Fraction(0), [10, 2, 3, 2])),
    ("-3+5", None),  # No unary minus.
    ("2**3", None),
    ("7//2", None),
    ("1.5*2", None),
    ("0x10", None),
    ("1_000", None),
    ("abs(3)", None),
    ("1/(2-2)", None),
    ("", None),
    ("()", None),
    ("1 2", None),
    ("(" * 17 + "1" + ")" * 17, None),  # Deeper than MAX_EXPRESSION_DEPTH.
    ("1+" * 200 + "1", None),  # Longer than MAX_EXPRESSION_CHARS.
  ],
)
def test_evaluate_countdown(expression, result):
  assert verifiers.evaluate_countdown(expression) == result


def test_countdown_reward_counts_repeated_numbers():
  assert verifiers.countdown_reward("5+5+3", numbers=[5, 5, 3], target=13) == 1.0
  assert verifiers.countdown_reward("5+5+5", numbers=[5, 5, 3], target=15) == 0.0
  assert verifiers.countdown_reward("5*3", numbers=[5, 5, 3], target=15) == 1.0  # Not all used.
  assert verifiers.countdown_reward("(2+4)/4*8", numbers=[2, 4, 4, 8], target=12) == 1.0
  assert verifiers.countdown_reward("8/(4-4)", numbers=[2, 4, 4, 8], target=12) == 0.0


def test_format_rewards():
  gsm8k = verifiers.make_format_reward(verifiers.GSM8K_FORMAT)
  assert gsm8k("She makes 18 dollars.\n#### 18", None) == 1.0
  assert gsm8k("#### 1,080\n", None) == 1.0
  assert gsm8k("She makes 18 dollars.", None) == 0.0
  assert gsm8k("#### 18 dollars", None) == 0.0
  number = verifiers.make_format_reward(verifiers.NUMBER_FORMAT)
  assert number(" -81\n", None) == 1.0
  assert number("81 apples", None) == 0.0
  assert verifiers.boxed_format_reward("so \\boxed{\\frac{1}{2}}.", None) == 1.0
  assert verifiers.boxed_format_reward("so \\boxed{}", None) == 0.0
  assert verifiers.boxed_format_reward("so \\boxed{1", None) == 0.0


def test_last_boxed():
  assert verifiers.last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
  assert verifiers.last_boxed("\\fbox{\\{1\\}}") == "\\{1\\}"  # Escaped braces are literal.
  assert verifiers.last_boxed("\\boxed{1") is None
  assert verifiers.last_boxed("\\boxed{" + "1" * 300 + "}") is None  # Over MAX_BOXED_CHARS.
  assert verifiers.last_boxed("no box") is None


def test_nesting_depth():
  assert verifiers.nesting_depth("") == 0
  assert verifiers.nesting_depth("(a)[b]{c}") == 1
  assert verifiers.nesting_depth("({[x]})") == 3
