"""Group edits: how a rollout's groups become the batch the update trains on.

An edit sees the rewards of the generation batches made so far and may ask for more:

  picks = edit(rewards, more)

with `rewards` a list of [P, G] arrays (one per generation batch of P prompts): the signal the
groups are judged by, `refill_signal` of the rewards and the correctness (by default the
correctness, as DAPO and verl filter with `filter_groups.metric=acc`); `more()` generating the
next batch and returning its signal, and `picks` the P groups of the training
batch, each a `Pick(batch, group, trained)`; a group with `trained=False` only fills the batch
(its loss mask is zero), so shapes never change. Edits are host-side Python: they decide which
groups are sampled and kept, never arithmetic inside the update.

`keep_all()` trains on the first batch as it is; `refill_informative(...)` is DAPO's dynamic
sampling (arXiv 2503.14476). Injecting off-policy samples into groups and branching rows at
pivots are further edits of the same kind.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class Pick(NamedTuple):
  """Group `group` of generation batch `batch`; `trained` False for a filler group."""

  batch: int
  group: int
  trained: bool


GroupEdit = Callable[[Sequence[np.ndarray], Callable[[], np.ndarray]], list[Pick]]


def keep_all() -> GroupEdit:
  """Every group of the first generation batch, in order."""

  def edit(rewards, more):
    del more
    return [Pick(0, i, True) for i in range(len(rewards[0]))]

  return edit


REFILL_METRICS = ("acc", "reward")


def refill_signal(rewards: np.ndarray, correct: np.ndarray, metric: str) -> np.ndarray:
  """What group edits judge a group by: its correctness ("acc") or its shaped reward ("reward").

  DAPO (arXiv 2503.14476) and verl keep or drop a group on accuracy: on the shaped reward
  (correctness plus the overlong penalty) an all-wrong group whose lengths differ would survive,
  and GRPO would then normalise a pure length signal.
  """
  if metric not in REFILL_METRICS:
    raise ValueError(f"rollout.refill.metric must be one of {REFILL_METRICS}, got {metric!r}")
  return np.asarray(correct if metric == "acc" else rewards, np.float32)


def is_informative(rewards_g: np.ndarray) -> bool:
  """A group whose rewards are not all equal: it carries a group-relative learning signal."""
  return bool(np.max(rewards_g) > np.min(rewards_g))


def refill_informative(*, max_generation_batches: int) -> GroupEdit:
  """DAPO's dynamic sampling: keep informative groups, generating new batches of prompts until
  P of them are found or `max_generation_batches` batches were made; a batch still short is
  filled with uninformative groups that are not trained on.

  Args:
    max_generation_batches: >= 1, the most generation batches per step (verl's
      `max_num_gen_batches`).
  """
  if not isinstance(max_generation_batches, int) or max_generation_batches < 1:
    raise ValueError(f"max_generation_batches must be an int >= 1, got {max_generation_batches!r}")

  def edit(rewards, more):
    rewards = list(rewards)
    num_groups = len(rewards[0])
    kept, spare = [], []
    b = 0
    while True:
      for i, group in enumerate(rewards[b]):
        (kept if is_informative(group) else spare).append(Pick(b, i, True))
      if len(kept) >= num_groups or b + 1 >= max_generation_batches:
        break
      rewards.append(more())
      b += 1
    chosen = kept[:num_groups]
    fill = [p._replace(trained=False) for p in spare[: num_groups - len(chosen)]]
    return chosen + fill

  return edit
