"""Tests for grpojax/tasks/example.py: the hash split and generated tasks."""

import numpy as np
import pytest

from grpojax.tasks import example as example_lib


def _tiny_generator(rng: np.random.Generator) -> example_lib.Example:
  n = int(rng.integers(0, 5))  # Five problems in all.
  return example_lib.Example(prompt=f"{n}=", answer=str(n), solution=str(n))


def _exact(completion, example):
  return float(completion == example.answer)


def test_is_heldout_is_stable_and_near_the_fraction():
  # Pinned values: the split is BLAKE2b of the prompt, the same in every process and version
  # (Python's `hash` of a str is salted per process). Hash quantiles of "a".."f": 0.18, 0.46,
  # 0.11, 0.48, 0.31, 0.86.
  prompts = ("a", "b", "c", "d", "e", "f")
  assert [example_lib.is_heldout(p, 0.5) for p in prompts] == [True] * 5 + [False]
  assert [example_lib.is_heldout(p, 0.2) for p in prompts] == [p in "ac" for p in prompts]
  share = np.mean([example_lib.is_heldout(f"{i}+{i}=", 0.1) for i in range(20_000)])
  assert 0.09 < share < 0.11


def test_is_heldout_is_monotone_in_the_fraction():
  prompts = [str(i) for i in range(2000)]
  small = {p for p in prompts if example_lib.is_heldout(p, 0.1)}
  large = {p for p in prompts if example_lib.is_heldout(p, 0.3)}
  assert small < large


def test_too_small_problem_space_raises():
  with pytest.raises(ValueError, match="too small"):
    example_lib.generated_task(
      "tiny", _tiny_generator, reward_fn=_exact, seed=0, heldout_size=50, heldout_fraction=0.1
    )


@pytest.mark.parametrize(
  "kwargs",
  [
    {"seed": -1, "heldout_size": 1, "heldout_fraction": 0.5},
    {"seed": 0, "heldout_size": 0, "heldout_fraction": 0.5},
    {"seed": 0, "heldout_size": 1, "heldout_fraction": 0.0},
    {"seed": 0, "heldout_size": 1, "heldout_fraction": 1.0},
  ],
)
def test_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    example_lib.generated_task("tiny", _tiny_generator, reward_fn=_exact, **kwargs)


def test_train_index_must_be_non_negative():
  task = example_lib.generated_task(
    "tiny", _tiny_generator, reward_fn=_exact, seed=0, heldout_size=1, heldout_fraction=0.5
  )
  with pytest.raises(ValueError):
    task.train(-1)
