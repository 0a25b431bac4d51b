"""A task of one's own: doubling a number (`"37*2="` -> `"74"`), with the built-in verifier."""

import functools

import numpy as np

from grpojax import tasks
from grpojax.tasks import example, verifiers


def _double(rng: np.random.Generator, *, digits: int) -> tasks.Example:
  n = int(rng.integers(0, 10**digits))
  return tasks.Example(prompt=f"{n}*2=", answer=str(2 * n), solution=str(2 * n))


def make_task(*, digits: int = 3, seed: int = 0, heldout_size: int = 64) -> tasks.Task:
  """Doubling `digits`-digit numbers; held-out problems are split off by a hash of the prompt."""
  return example.generated_task(
    "double",
    functools.partial(_double, digits=digits),
    reward_fn=verifiers.numeric_reward,
    seed=seed,
    heldout_size=heldout_size,
    heldout_fraction=0.2,
  )
