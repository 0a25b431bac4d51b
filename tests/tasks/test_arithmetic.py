"""Tests for grpojax/tasks/arithmetic.py."""

import re

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from grpojax.models import char_tokenizer
from grpojax.tasks import arithmetic, verifiers
from grpojax.tasks import example as example_lib

_ALPHABET = set(char_tokenizer.ARITHMETIC_ALPHABET)


def _left_to_right(expression: str) -> int:
  """Evaluates `a+b-c...` left to right, without `eval`."""
  terms = re.findall(r"[+-]?\d+", expression)
  return sum(int(t) for t in terms)


def test_left_to_right_helper():
  assert _left_to_right("12+7-3") == 16
  assert _left_to_right("-16-81-64") == -161  # -16 - 81 = -97; -97 - 64 = -161.


def test_worked_solution_keeps_the_value_at_every_step():
  example = arithmetic.generate(np.random.default_rng(0), digits=2, operands=4)
  assert example.prompt.endswith("=")
  assert int(example.answer) == _left_to_right(example.prompt[:-1])
  steps = example.solution.split("=")
  assert len(steps) == 3  # Two shorter expressions (3 then 2 operands), then the answer.
  assert steps[-1] == example.answer
  assert [len(re.findall(r"[+-]?\d+", step)) for step in steps] == [3, 2, 1]
  assert all(_left_to_right(step) == int(example.answer) for step in steps)


def test_two_operands_solution_is_the_answer():
  task = arithmetic.make_task(digits=2, seed=0)
  for i in range(50):
    example = task.train(i)
    assert re.fullmatch(r"\d{1,2}[+-]\d{1,2}=", example.prompt)
    assert example.solution == example.answer
    assert int(example.answer) == _left_to_right(example.prompt[:-1])


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31), digits=st.integers(1, 6), operands=st.integers(2, 5))
def test_examples_are_short_in_alphabet_and_their_solutions_earn_full_reward(
  seed, digits, operands
):
  example = arithmetic.generate(np.random.default_rng(seed), digits=digits, operands=operands)
  assert set(example.prompt + example.answer + example.solution) <= _ALPHABET
  assert len(example.prompt) <= operands * (digits + 1)
  assert verifiers.numeric_reward(example.solution, example) == 1.0
  assert verifiers.numeric_reward(example.answer, example) == 1.0
  assert verifiers.numeric_reward(str(int(example.answer) + 1), example) == 0.0


def test_deterministic_from_seed():
  a = arithmetic.make_task(digits=3, seed=7)
  b = arithmetic.make_task(digits=3, seed=7)
  c = arithmetic.make_task(digits=3, seed=8)
  assert [a.train(i) for i in range(20)] == [b.train(i) for i in range(20)]
  assert [a.train(i) for i in range(20)] != [c.train(i) for i in range(20)]
  # Any index can be recomputed alone, in any order.
  assert a.train(13) == [a.train(i) for i in range(20)][13]
  # The held-out set does not depend on the seed.
  assert a.heldout == c.heldout


@pytest.mark.parametrize("digits", [1, 2])
def test_train_and_heldout_are_disjoint(digits):
  heldout_size = 8 if digits == 1 else 128
  task = arithmetic.make_task(digits=digits, seed=0, heldout_size=heldout_size)
  heldout = {example.prompt for example in task.heldout}
  assert len(heldout) == heldout_size
  train = {task.train(i).prompt for i in range(3000)}
  assert not train & heldout
  assert not any(example_lib.is_heldout(p, 0.1) for p in train)
  # With one digit the 200 problems are nearly all seen: the split is what keeps them apart.
  if digits == 1:
    assert len(train) > 150


@pytest.mark.parametrize("kwargs", [{"digits": 0}, {"digits": 10}, {"digits": 2, "operands": 1}])
def test_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    arithmetic.make_task(seed=0, **kwargs)
