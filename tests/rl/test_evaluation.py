"""Unbiased pass@k against brute-force enumeration of k-subsets."""

import itertools

import numpy as np
import pytest

from grpojax.rl import evaluation


@pytest.mark.parametrize(
  "n, c, k", [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 3, 8), (5, 4, 2), (6, 6, 3)]
)
def test_pass_at_k_equals_subset_enumeration(n, c, k):
  samples = [1] * c + [0] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  brute = np.mean([max(samples[i] for i in s) for s in subsets])
  assert evaluation.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_hand_worked_and_mean():
  # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5.
  assert evaluation.pass_at_k(4, 1, 2) == pytest.approx(0.5)
  correct = np.array([[1, 0, 0, 0], [0, 0, 0, 0]])
  assert evaluation.mean_pass_at_k(correct, 2) == pytest.approx(0.25)


def test_bad_arguments():
  with pytest.raises(ValueError, match="k must be"):
    evaluation.pass_at_k(4, 1, 5)
  with pytest.raises(ValueError, match="num_correct"):
    evaluation.pass_at_k(4, 5, 2)
