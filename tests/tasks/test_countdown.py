"""Tests for grpojax/tasks/countdown.py."""

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from grpojax.models import char_tokenizer
from grpojax.tasks import countdown, verifiers
from grpojax.tasks import example as example_lib

_ALPHABET = set(char_tokenizer.ARITHMETIC_ALPHABET)


def test_prompt_round_trip():
  prompt = countdown.format_prompt([3, 5, 2], 16)
  assert prompt == "3 5 2 to 16:"
  assert countdown.parse_prompt(prompt) == ([3, 5, 2], 16)
  with pytest.raises(ValueError):
    countdown.parse_prompt("3 5 2 -> 16")


def test_hand_worked_rewards():
  example = example_lib.Example(prompt="3 5 2 to 16:", answer="16", solution="(3+5)*2")
  assert countdown.reward("(3+5)*2", example) == 1.0  # 8 * 2 = 16
  assert countdown.reward(" 2*(5+3) \n", example) == 1.0  # Any order, spaces allowed.
  assert countdown.reward("reasoning...<answer>(3+5)*2</answer>", example) == 1.0
  assert countdown.reward("3+5*2", example) == 0.0  # 3 + 10 = 13
  assert countdown.reward("(3+5)*2*1", example) == 0.0  # 1 is not on offer.
  assert countdown.reward("(5+5)+3+3", example) == 0.0  # 5 and 3 reused.
  assert countdown.reward("", example) == 0.0


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**32 - 1), count=st.integers(2, 6))
def test_reference_solution_is_accepted_for_every_generated_instance(seed, count):
  example = countdown.generate(np.random.default_rng(seed), count=count)
  numbers, target = countdown.parse_prompt(example.prompt)
  assert len(numbers) == count
  assert all(1 <= n <= 25 for n in numbers)
  assert 1 <= target <= 999
  assert example.answer == str(target)
  assert set(example.prompt + example.solution) <= _ALPHABET
  assert countdown.reward(example.solution, example) == 1.0
  # The reference uses every number exactly once.
  _, used = verifiers.evaluate_countdown(example.solution)
  assert sorted(used) == sorted(numbers)
  # Off by one is wrong; so is reusing a number one time too many.
  assert countdown.reward(f"{example.solution}+1", example) == 0.0
  assert countdown.reward(f"({example.solution})*{numbers[0]}/{numbers[0]}", example) == 0.0


def test_deterministic_from_seed_and_disjoint_from_heldout():
  a = countdown.make_task(count=3, seed=1)
  b = countdown.make_task(count=3, seed=1)
  c = countdown.make_task(count=3, seed=2)
  train_a = [a.train(i) for i in range(2000)]
  assert train_a[:30] == [b.train(i) for i in range(30)]
  assert train_a[:30] != [c.train(i) for i in range(30)]
  assert a.heldout == c.heldout
  heldout = {example.prompt for example in a.heldout}
  assert len(heldout) == 128
  assert not heldout & {example.prompt for example in train_a}
  assert all(countdown.reward(e.solution, e) == 1.0 for e in a.heldout)


@pytest.mark.parametrize(
  "kwargs",
  [{"count": 1}, {"count": 9}, {"count": 3, "max_number": 1}, {"count": 3, "max_target": 10}],
)
def test_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    countdown.make_task(seed=0, **kwargs)
