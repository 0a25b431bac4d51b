"""The shared vocabulary of tasks: an `Example`, a reward function type, a `Task` and splits.

A task is a stream of training examples, a fixed held-out set and a reward function. Generated
tasks (arithmetic, countdown) draw problems from a seeded generator and split them into train and
held-out by a stable hash of the prompt, so no held-out problem is ever trained on, whatever the
seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
  """One verifiable problem.

  Attributes:
    prompt: the text the policy continues.
    answer: the reference final answer, compared against by the task's reward function.
    solution: a short worked completion that earns full reward, for a supervised warm start.
    source: where it came from (`file:line` for data files; "" for generated problems), for
      error messages.
  """

  prompt: str
  answer: str
  solution: str
  source: str = ""


# (completion, example) -> reward; completions may arrive as bytes.
RewardFn = Callable[[str | bytes, Example], float]


@dataclasses.dataclass(frozen=True)
class Task:
  """A verifiable task.

  Attributes:
    name: a short name for logs.
    train: `train(i)` is the i-th training example (i >= 0), a pure function of the task's seed
      and `i`.
    heldout: the held-out examples, disjoint from every training example.
    reward_fn: scores a completion of an example's prompt, in [0, 1].
  """

  name: str
  train: Callable[[int], Example]
  heldout: Sequence[Example]
  reward_fn: RewardFn


def is_heldout(prompt: str, heldout_fraction: float) -> bool:
  """Whether a problem belongs to the held-out split, by a stable hash of its prompt.

  The hash (BLAKE2b, not Python's salted `hash`) is the same in every process and run.

  Args:
    prompt: the problem's prompt.
    heldout_fraction: the share of all possible problems that is held out, in (0, 1).

  Returns:
    True for held-out problems.
  """
  digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") < heldout_fraction * 2.0**64


def _validate(*, seed: int, heldout_size: int, heldout_fraction: float) -> None:
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  if not isinstance(heldout_size, int) or heldout_size < 1:
    raise ValueError(f"heldout_size must be a positive int, got {heldout_size!r}")
  if not 0.0 < heldout_fraction < 1.0:
    raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")


def _train_example(
  index: int,
  *,
  generate: Callable[[np.random.Generator], Example],
  seed: int,
  heldout_fraction: float,
) -> Example:
  """Draws the `index`-th training example: the first non-held-out draw of its own stream."""
  if not isinstance(index, (int, np.integer)) or index < 0:
    raise ValueError(f"training example index must be a non-negative int, got {index!r}")
  rng = np.random.default_rng([seed, 0, int(index)])
  # A held-out share below 1 makes this loop end after 1 / (1 - share) draws on average.
  for _ in range(10_000):
    example = generate(rng)
    if not is_heldout(example.prompt, heldout_fraction):
      return example
  raise RuntimeError(f"no training problem in 10000 draws (heldout_fraction={heldout_fraction})")


def _heldout_examples(
  generate: Callable[[np.random.Generator], Example],
  *,
  heldout_size: int,
  heldout_fraction: float,
) -> tuple[Example, ...]:
  """Collects `heldout_size` distinct held-out problems from a fixed, seed-independent stream."""
  rng = np.random.default_rng([0, 1])
  found = {}
  max_draws = int(20 * heldout_size / heldout_fraction) + 1000
  for _ in range(max_draws):
    example = generate(rng)
    if example.prompt not in found and is_heldout(example.prompt, heldout_fraction):
      found[example.prompt] = example
      if len(found) == heldout_size:
        return tuple(found.values())
  raise ValueError(
    f"found only {len(found)} distinct held-out problems in {max_draws} draws, fewer than "
    f"heldout_size={heldout_size}: the problem space is too small; lower heldout_size or raise "
    "the difficulty"
  )


def generated_task(
  name: str,
  generate: Callable[[np.random.Generator], Example],
  *,
  reward_fn: RewardFn,
  seed: int,
  heldout_size: int,
  heldout_fraction: float,
) -> Task:
  """Builds a task from a problem generator.

  Training example `i` is the first non-held-out draw of a generator seeded with `(seed, i)`, so
  any example can be recomputed alone (resuming, sharding across hosts). The held-out set does not
  depend on `seed`: runs with different seeds are evaluated on the same problems.

  Args:
    name: the task's name.
    generate: draws one problem from a NumPy generator; must be picklable (a module-level
      function or a `functools.partial` of one) if the task is sent to worker processes.
    reward_fn: the task's reward function.
    seed: the training stream's seed, a non-negative int.
    heldout_size: the number of distinct held-out problems.
    heldout_fraction: the share of the problem space held out, in (0, 1).

  Returns:
    The task.

  Raises:
    ValueError: an argument is out of range, or the problem space has fewer than `heldout_size`
      held-out problems.
  """
  _validate(seed=seed, heldout_size=heldout_size, heldout_fraction=heldout_fraction)
  train = functools.partial(
    _train_example, generate=generate, seed=seed, heldout_fraction=heldout_fraction
  )
  heldout = _heldout_examples(
    generate, heldout_size=heldout_size, heldout_fraction=heldout_fraction
  )
  return Task(name=name, train=train, heldout=heldout, reward_fn=reward_fn)
