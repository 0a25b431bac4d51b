"""Tests for grpojax/tasks/scratchpad.py."""

import numpy as np
import pytest

from configs import scratchpad as scratchpad_config
from grpojax import tasks
from grpojax.models import char_tokenizer
from grpojax.rl import setup
from grpojax.tasks import example as example_lib
from grpojax.tasks import scratchpad
from tests.tasks import adversarial

_ALPHABET = set(char_tokenizer.ARITHMETIC_ALPHABET)


def _example(prompt: str, answer: int) -> example_lib.Example:
  return example_lib.Example(prompt=prompt, answer=str(answer), solution="")


def _eval_with_precedence(prompt: str) -> int:
  """A float64 NumPy reference: products first, then sums and differences left to right."""
  values, ops = scratchpad.parse_prompt(prompt)
  terms, signs = [np.float64(values[0])], [1.0]
  for op, v in zip(ops, values[1:], strict=True):
    if op == "*":
      terms[-1] = terms[-1] * np.float64(v)
    else:
      terms.append(np.float64(v))
      signs.append(1.0 if op == "+" else -1.0)
  return int(np.dot(np.asarray(signs), np.asarray(terms)))


def test_hand_worked_problem_has_exactly_its_valid_orders():
  # 12+7*3-5: 7*3 is the only ready step (12+7 and 3-5 touch the product); then 12+21=33,
  # 33-5=28, or 21-5=16 first (a `+` on its left: 12+(21-5) keeps the value), 12+16=28.
  example = _example("12+7*3-5=", 28)
  assert scratchpad.value(example.prompt) == 28
  assert scratchpad.reference_solutions(example.prompt) == [
    "7*3=21,12+21=33,33-5=28>28",
    "7*3=21,21-5=16,12+16=28>28",
  ]
  # 2*3+4*5: either product first, then the sum; 2-3+4: only left to right.
  assert scratchpad.reference_solutions("2*3+4*5=") == [
    "2*3=6,4*5=20,6+20=26>26",
    "4*5=20,2*3=6,6+20=26>26",
  ]
  assert scratchpad.reference_solutions("2-3+4=") == ["2-3=-1,-1+4=3>3"]


def test_every_reference_solution_earns_reward_and_wrong_ones_do_not():
  example = _example("12+7*3-5=", 28)
  for solution in scratchpad.reference_solutions(example.prompt):
    assert scratchpad.reward(solution, example) == 1.0
    assert scratchpad.reward(solution.encode(), example) == 1.0
  wrong = [
    "7*3=21,12+21=33,33-5=28>29",  # wrong final answer
    "7*3=22,12+22=34,34-5=28>28",  # a wrong step, right answer
    "12+7=19,19*3=57,57-5=28>28",  # precedence broken
    "3-5=-2,7*-2=-14,12+-14=28>28",  # an operation that is not ready
    "7*3=21,12+21=33>28",  # a step missing
    "7*3=21,12+21=33,33-5=28,28+0=28>28",  # a step too many
    "7*3=21,12+21=33,33-5=28",  # no marker
    "7*3=21,,33-5=28>28",  # malformed
    ">28",
    "28",
    "",
  ]
  for completion in wrong:
    assert scratchpad.reward(completion, example) == 0.0, completion
  # Right numbers, wrong order: in 2-0+0, applying 0+0 first would compute 2-(0+0).
  assert scratchpad.reward("2-0=2,2+0=2>2", _example("2-0+0=", 2)) == 1.0
  assert scratchpad.reward("0+0=0,2-0=2>2", _example("2-0+0=", 2)) == 0.0


def test_equal_numbers_follow_every_reading_of_a_step():
  # In 2+2*2+2, the step 2+2 is not ready at the start (each `+` touches the product).
  example = _example("2+2*2+2=", 8)
  assert scratchpad.reward("2*2=4,2+4=6,6+2=8>8", example) == 1.0
  assert scratchpad.reward("2*2=4,4+2=6,2+6=8>8", example) == 1.0  # 4+2 is the right-hand pair
  assert scratchpad.reward("2+2=4,4*2=8,8+2=10>10", _example("2+2*2+2=", 10)) == 0.0


def test_adversarial_completions_earn_zero_without_raising():
  example = _example("12+7*3-5=", 28)
  for completion in [
    *adversarial.COMPLETIONS.values(),
    "9" * 5000 + ">28",
    ",>28",
    "1+1=2" * 400 + ">28",
  ]:
    assert scratchpad.reward(completion, example) == 0.0


@pytest.mark.parametrize(
  "operations, digits, operators", [(1, 1, "+-*"), (3, 1, "+-*"), (5, 2, "+*")]
)
def test_generated_problems_and_every_reference_solution(operations, digits, operators):
  task = scratchpad.make_task(
    operations=operations, digits=digits, operators=operators, seed=0, heldout_size=16
  )
  for example in [*(task.train(i) for i in range(30)), *task.heldout]:
    assert set(example.prompt + example.solution) <= _ALPHABET
    assert len(scratchpad.parse_prompt(example.prompt)[1]) == operations
    assert int(example.answer) == _eval_with_precedence(example.prompt)
    solutions = scratchpad.reference_solutions(example.prompt)
    assert example.solution in solutions
    assert all(task.reward_fn(s, example) == 1.0 for s in solutions)
    assert task.reward_fn(example.solution.replace(">", ">1", 1), example) == 0.0


def test_warm_start_draws_among_the_orders_and_lengths_vary():
  task = scratchpad.make_task(operations=3, digits=1, seed=0)
  by_prompt = {}
  for i in range(3000):
    example = task.train(i)
    by_prompt.setdefault(example.prompt, set()).add(example.solution)
  assert any(len(seen) > 1 for seen in by_prompt.values())  # the same problem, several paths
  lengths = [len(task.train(i).solution) for i in range(200)]
  assert min(lengths) < 20 < max(lengths)
  long = scratchpad.make_task(operations=8, digits=2, seed=0, heldout_size=8).train(0)
  assert len(long.solution) > 60


def test_deterministic_and_heldout_disjoint():
  a = scratchpad.make_task(operations=2, digits=1, seed=3, heldout_size=64)
  b = scratchpad.make_task(operations=2, digits=1, seed=3, heldout_size=64)
  c = scratchpad.make_task(operations=2, digits=1, seed=4, heldout_size=64)
  assert [a.train(i) for i in range(20)] == [b.train(i) for i in range(20)]
  assert [a.train(i) for i in range(20)] != [c.train(i) for i in range(20)]
  assert a.train(13) == b.train(13)
  assert a.heldout == c.heldout
  heldout = {example.prompt for example in a.heldout}
  assert len(heldout) == 64
  assert not heldout & {a.train(i).prompt for i in range(2000)}


@pytest.mark.parametrize(
  "knobs, culprit",
  [
    (dict(operations=0), "operations"),
    (dict(operations=9), "operations"),
    (dict(operations=True), "operations"),
    (dict(digits=4), "digits"),
    (dict(operators="/"), "operators"),
  ],
)
def test_bad_knobs_name_the_field(knobs, culprit):
  with pytest.raises(ValueError, match=f"^{culprit}"):
    scratchpad.make_task(**{"operations": 2, "seed": 0, **knobs})
  field = {"operations": "difficulty"}.get(culprit, culprit)
  config = scratchpad_config.get_config()
  config.task[field] = knobs[culprit]
  with pytest.raises(setup.ConfigError, match=rf"config\.task\.{field}"):
    setup.validate_config(config)


def test_builtin_name_builds_the_task():
  config = scratchpad_config.get_config()
  task = setup.build_task(config.task)
  assert task.name == "scratchpad_n3_d1_+-*"
  assert "scratchpad" in tasks.BUILTIN_TASKS
  example = task.train(0)
  assert task.reward_fn(example.solution, example) == 1.0
