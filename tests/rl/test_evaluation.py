"""Unbiased pass@k against brute-force enumeration of k-subsets; avg@n, maj@k and the answer
extraction on fixed completions, against hand-computed values."""

import itertools

import numpy as np
import pytest

from grpojax import tasks
from grpojax.rl import evaluation
from grpojax.tasks import verifiers


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


# Two prompts, four samples each, scored by the numeric verifier; answers by `extract_answer`.
EXAMPLES = [
  tasks.Example(prompt="3+4=", answer="7", solution="7"),
  tasks.Example(prompt="1+2=", answer="3", solution="3"),
]
TEXTS_PN = [
  ["7", "#### 7", "8", "8"],  # answers 7 7 8 8, correct 1 1 0 0
  ["\\boxed{3}", "The answer is 5.", "5.0", "no idea"],  # answers 3 5 5 -, correct 1 0 0 0
]


def _correct_pn():
  return np.stack(
    [
      evaluation.correctness(t, [ex] * 4, verifiers.numeric_reward)
      for t, ex in zip(TEXTS_PN, EXAMPLES, strict=True)
    ]
  )


@pytest.mark.parametrize(
  "text, answer",
  [
    ("22", "22"),
    (" 22.0\n", "22"),
    ("(3+5)*2", "(3+5)*2"),  # a one-word completion is its own answer (countdown)
    ("so <answer> 1,234.50 </answer>", "2469/2"),
    ("x \\boxed{\\frac12} y", "\\frac12"),
    ("The total is 1,234.", "1234"),
    ("steps 3 then #### 42 and 7", "42"),
    ("no idea", None),
    ("", None),
    (b"\xff 9", "9"),
  ],
)
def test_extract_answer(text, answer):
  assert evaluation.extract_answer(text) == answer


def test_majority_ties_go_to_the_answer_seen_first():
  assert evaluation.majority(["5", "3", "3", "5"], [0, 1, 1, 0]) == ("5", 0.0)
  assert evaluation.majority([None, "3", None], [1, 1, 0]) == ("3", 1.0)
  assert evaluation.majority([None, None], [1, 1]) == (None, 0.0)


def test_metrics_on_fixed_completions():
  correct = _correct_pn()
  np.testing.assert_array_equal(correct, [[1, 1, 0, 0], [1, 0, 0, 0]])
  answers = [[evaluation.extract_answer(t) for t in texts] for texts in TEXTS_PN]
  assert answers == [["7", "7", "8", "8"], ["3", "5", "5", None]]
  metrics = evaluation.summarize(
    greedy_correct_p=np.array([1.0, 0.0]),
    greedy_lengths_p=np.array([2, 4]),
    correct_pn=correct,
    answers_pn=answers,
    lengths_pn=np.array([[1, 2, 3, 4], [5, 6, 7, 8]]),
    k=2,
  )
  assert metrics == pytest.approx(
    {
      "greedy_accuracy": 0.5,
      "avg@4": (2 / 4 + 1 / 4) / 2,  # 0.375
      # c=2: 1 - C(2,2)/C(4,2) = 5/6; c=1: 1 - C(3,2)/C(4,2) = 1/2; mean 2/3.
      "pass@2": (5 / 6 + 1 / 2) / 2,
      # First two samples: 7 7 -> 7, correct; 3 5 tie -> 3 (seen first), correct.
      "maj@2": 1.0,
      "greedy_length": 3.0,
      "response_length": 4.5,
    },
    abs=1e-12,
  )
  # All four: 7 and 8 tie -> 7, correct; 5 outvotes 3 -> wrong.
  assert evaluation.mean_maj_at_k(answers, correct, 4) == 0.5
  with pytest.raises(ValueError, match="k must be"):
    evaluation.mean_maj_at_k(answers, correct, 5)


def test_example_records():
  rewards = _correct_pn().astype(np.float32)
  records = evaluation.example_records(
    EXAMPLES,
    greedy_texts=["7", "4"],
    greedy_rewards=np.array([1.0, 0.0]),
    greedy_lengths=np.array([2, 2]),
    texts_pn=TEXTS_PN,
    rewards_pn=rewards,
    lengths_pn=np.full((2, 4), 3),
    k=4,
  )
  second = records[1]
  assert second["index"] == 1 and second["prompt"] == "1+2=" and second["reference"] == "3"
  assert second["greedy"] == {
    "completion": "4",
    "answer": "4",
    "reward": 0.0,
    "correct": False,
    "length": 2,
  }
  assert [s["answer"] for s in second["samples"]] == ["3", "5", "5", None]
  assert [s["correct"] for s in second["samples"]] == [True, False, False, False]
  assert second["avg@4"] == 0.25 and second["pass@4"] == 1.0
  assert second["maj@4"] == {"answer": "5", "correct": False}
  assert records[0]["maj@4"] == {"answer": "7", "correct": True}
