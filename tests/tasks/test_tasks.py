"""Tests for grpojax/tasks/__init__.py: `make_task` over the built-in tasks."""

import pytest

from grpojax import tasks


@pytest.mark.parametrize(
  "name, difficulty", [("arithmetic", 2), ("countdown", 3), ("scratchpad", 3)]
)
def test_make_task_gives_working_builtin_tasks(name, difficulty):
  task = tasks.make_task(name, difficulty=difficulty, seed=0)
  assert isinstance(task, tasks.Task)
  example = task.train(0)
  assert isinstance(example, tasks.Example)
  assert task.reward_fn(example.solution, example) == 1.0
  assert task.reward_fn(example.solution.encode(), example) == 1.0  # Bytes work too.
  assert task.reward_fn("", example) == 0.0
  assert len(task.heldout) == 128
  assert all(task.reward_fn(e.solution, e) == 1.0 for e in task.heldout)


def test_difficulty_knob():
  easy = tasks.make_task("arithmetic", difficulty=1, seed=0, heldout_size=8)
  hard = tasks.make_task("arithmetic", difficulty=4, seed=0)
  assert max(len(easy.train(i).prompt) for i in range(100)) <= len("9+9=")
  assert max(len(hard.train(i).prompt) for i in range(100)) == len("9999+9999=")
  five = tasks.make_task("countdown", difficulty=5, seed=0).train(0)
  assert len(tasks.countdown.parse_prompt(five.prompt)[0]) == 5


def test_unknown_task():
  with pytest.raises(ValueError, match="unknown task"):
    tasks.make_task("chess", difficulty=1, seed=0)
