"""Held-out evaluation: greedy accuracy and the unbiased pass@k estimator."""

import math
from collections.abc import Callable, Sequence

import numpy as np


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

  Chen et al., "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374), eq. 1.
  """
  if not 1 <= k <= num_samples:
    raise ValueError(f"k must be in [1, num_samples={num_samples}], got {k}")
  if not 0 <= num_correct <= num_samples:
    raise ValueError(f"num_correct must be in [0, {num_samples}], got {num_correct}")
  if num_samples - num_correct < k:
    return 1.0
  return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def mean_pass_at_k(correct_pg: np.ndarray, k: int) -> float:
  """Mean over prompts of unbiased pass@k, from a [P, G] array of 0/1 correctness."""
  correct_pg = np.asarray(correct_pg)
  g = correct_pg.shape[1]
  return float(np.mean([pass_at_k(g, int(c), k) for c in correct_pg.sum(axis=1)]))


def correctness(
  texts: Sequence[str], examples: Sequence, reward_fn: Callable, threshold: float = 1.0
) -> np.ndarray:
  """1.0 where the reward of a text reaches `threshold` (a fully correct answer)."""
  return np.asarray(
    [float(reward_fn(t, ex) >= threshold) for t, ex in zip(texts, examples, strict=True)]
  )
