"""DAPO's dynamic sampling judges groups by correctness by default (arXiv 2503.14476; verl
`filter_groups.metric=acc`), so an all-wrong group whose shaped rewards differ only through the
overlong penalty is not trained on."""

import numpy as np
import pytest

from grpojax.rl import group_edits
from grpojax.tasks import shaping


def test_all_wrong_group_with_differing_lengths_is_filtered_under_acc():
  # Group 0: all wrong, lengths 3, 5, 6, 6 with max_len 6, cache 2: max_len - cache = 4, so
  # |y| = 3 -> 0, |y| = 5 -> -(5 - 4)/2 = -0.5, |y| = 6 -> -1.
  # Group 1: one right answer among four, all short.
  lengths = np.array([3, 5, 6, 6, 3, 3, 3, 3])
  correct = np.array([0, 0, 0, 0, 1, 0, 0, 0], np.float32)
  penalty = shaping.overlong_penalty(lengths, max_length=6, cache_length=2)
  np.testing.assert_allclose(penalty, [0, -0.5, -1, -1, 0, 0, 0, 0])
  rewards = correct + penalty.astype(np.float32)
  edit = group_edits.refill_informative(max_generation_batches=1)

  def picks(metric):
    signal = group_edits.refill_signal(rewards, correct, metric).reshape(2, 4)
    return edit([signal], lambda: pytest.fail("one generation batch only"))

  # acc: only group 1 is informative; group 0 fills the batch untrained.
  assert picks("acc") == [group_edits.Pick(0, 1, True), group_edits.Pick(0, 0, False)]
  # reward (the old behaviour): the length-only signal keeps group 0 in training.
  assert picks("reward") == [group_edits.Pick(0, 0, True), group_edits.Pick(0, 1, True)]


def test_unknown_metric_names_the_field():
  with pytest.raises(ValueError, match=r"rollout\.refill\.metric"):
    group_edits.refill_signal(np.zeros(2), np.zeros(2), "pass")
