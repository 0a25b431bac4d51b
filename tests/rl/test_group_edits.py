"""Tests for grpojax/rl/group_edits.py: which groups a training batch is made of."""

import numpy as np
import pytest

from grpojax.rl import group_edits
from grpojax.rl.group_edits import Pick


def _batches(*rows):
  """Generation batches of rewards, each a list of groups."""
  return [np.asarray(r, np.float32) for r in rows]


def test_keep_all_trains_on_the_first_batch():
  rewards = _batches([[0, 0], [1, 0]])
  picks = group_edits.keep_all()(rewards, more=lambda: pytest.fail("no refill"))
  assert picks == [Pick(0, 0, True), Pick(0, 1, True)]


def test_refill_keeps_informative_groups_across_batches():
  # Batch 0: groups 0 (all 0) and 2 (all 1) are uninformative; 1 is informative. Batch 1:
  # group 0 informative -> 2 of 3 found; batch 2 (the last allowed) adds its group 2.
  later = iter(_batches([[1, 0], [1, 1], [0, 0]], [[0, 0], [0, 0], [0, 1]]))
  edit = group_edits.refill_informative(max_generation_batches=3)
  picks = edit(_batches([[0, 0], [1, 0], [1, 1]]), more=lambda: next(later))
  assert picks == [Pick(0, 1, True), Pick(1, 0, True), Pick(2, 2, True)]


def test_refill_fills_a_short_batch_with_untrained_groups():
  later = iter(_batches([[1, 1], [0, 0]]))
  edit = group_edits.refill_informative(max_generation_batches=2)
  picks = edit(_batches([[0, 0], [0, 1]]), more=lambda: next(later))
  # One informative group in two batches; the first spare fills the batch, untrained.
  assert picks == [Pick(0, 1, True), Pick(0, 0, False)]


def test_refill_stops_as_soon_as_the_batch_is_full():
  edit = group_edits.refill_informative(max_generation_batches=10)
  picks = edit(_batches([[0, 1], [1, 0]]), more=lambda: pytest.fail("no refill needed"))
  assert picks == [Pick(0, 0, True), Pick(0, 1, True)]


def test_bad_setting_raises():
  with pytest.raises(ValueError, match="max_generation_batches"):
    group_edits.refill_informative(max_generation_batches=0)
