"""Held-out evaluation metrics: greedy accuracy, avg@n, unbiased pass@k, maj@k, lengths.

Everything here is NumPy on decoded completions; `rollout.evaluate` generates them (sharded
like the trainer) and calls `summarize` and `example_records`, for the trainer's periodic
evaluation and `python -m grpojax.evaluate` alike.

Definitions, for one prompt with n sampled completions of which c are correct (reward >= 1):

  avg@n   c / n, the mean correctness of the samples;
  pass@k  1 - C(n - c, k) / C(n, k), the unbiased estimator (Chen et al., arXiv 2107.03374);
  maj@k   the correctness of the most frequent extracted answer among the first k samples
          (`extract_answer`; ties go to the answer seen first; samples without an answer do
          not vote, and a prompt with no vote scores 0).

Each metric is the mean over prompts.
"""

import collections
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from grpojax.tasks import verifiers

# The longest answer text kept for voting; a longer "answer" is no answer.
MAX_ANSWER_CHARS = 256


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


def rewards(texts: Sequence[str], examples: Sequence, reward_fn: Callable) -> np.ndarray:
  """The reward of each text for its example, as float32."""
  return np.asarray(
    [reward_fn(t, ex) for t, ex in zip(texts, examples, strict=True)], dtype=np.float32
  )


def correctness(
  texts: Sequence[str], examples: Sequence, reward_fn: Callable, threshold: float = 1.0
) -> np.ndarray:
  """1.0 where the reward of a text reaches `threshold` (a fully correct answer)."""
  return (rewards(texts, examples, reward_fn) >= threshold).astype(np.float64)


def _normalise(answer: str) -> str | None:
  """An answer as a vote: stripped, numbers written exactly (`1,234.0` -> `1234`), or None."""
  answer = answer.strip()
  if not answer or len(answer) > MAX_ANSWER_CHARS:
    return None
  number = verifiers.parse_number(answer)
  return answer if number is None else str(number)


def extract_answer(completion: str | bytes) -> str | None:
  """The final answer a completion commits to, the key of the majority vote.

  The first rule that applies: the last `<answer>...</answer>`; the last `\\boxed{...}`; a
  completion that is one word (no inner whitespace, as `22` or `(3+5)*2`) is its own answer;
  otherwise the final number (after the last `####` when there is one). Numbers are written
  exactly, so `22.0`, `22` and `#### 22` vote together.

  Args:
    completion: the policy's text or bytes.

  Returns:
    The answer, or None when the completion commits to none.
  """
  text = verifiers.as_text(completion)
  end = text.rfind("</answer>")  # rfind, not a lazy regex: linear on adversarial text
  start = text.rfind("<answer>", 0, end) if end >= 0 else -1
  if start >= 0:
    return _normalise(text[start + len("<answer>") : end])
  boxed = verifiers.last_boxed(text)
  if boxed is not None:
    return _normalise(boxed)
  stripped = text.strip()
  if stripped and len(stripped.split()) == 1 and "####" not in stripped:
    return _normalise(stripped)
  number = verifiers.extract_number(text)
  return None if number is None else str(number)


def majority(answers: Sequence[str | None], correct: Sequence[float]) -> tuple[str | None, float]:
  """The majority answer of one prompt's samples and its correctness.

  Args:
    answers: each sample's extracted answer (None: no vote).
    correct: each sample's 0/1 correctness.

  Returns:
    (the most frequent answer, the correctness of its first sample); ties go to the answer
    seen first; (None, 0.0) when no sample votes.
  """
  votes = collections.Counter(a for a in answers if a is not None)
  if not votes:
    return None, 0.0
  top = max(votes.values())
  winner = next(a for a in answers if a is not None and votes[a] == top)  # first seen wins
  return winner, float(correct[list(answers).index(winner)])


def mean_maj_at_k(
  answers_pn: Sequence[Sequence[str | None]], correct_pn: np.ndarray, k: int
) -> float:
  """Mean over prompts of maj@k: the majority vote over each prompt's first k samples."""
  correct_pn = np.asarray(correct_pn)
  n = correct_pn.shape[1]
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, num_samples={n}], got {k}")
  return float(
    np.mean([majority(a[:k], c[:k])[1] for a, c in zip(answers_pn, correct_pn, strict=True)])
  )


def summarize(
  *,
  greedy_correct_p: np.ndarray,
  greedy_lengths_p: np.ndarray,
  correct_pn: np.ndarray,
  answers_pn: Sequence[Sequence[str | None]],
  lengths_pn: np.ndarray,
  k: int,
) -> dict[str, float]:
  """The evaluation's metrics over P prompts with one greedy and n sampled completions each.

  Args:
    greedy_correct_p: [P] 0/1 correctness of the greedy completions.
    greedy_lengths_p: [P] their lengths in tokens.
    correct_pn: [P, n] 0/1 correctness of the samples.
    answers_pn: [P][n] the samples' extracted answers (`extract_answer`).
    lengths_pn: [P, n] the samples' lengths in tokens.
    k: the k of pass@k and maj@k, in [1, n].

  Returns:
    `greedy_accuracy`, `avg@n`, `pass@k`, `maj@k`, `greedy_length` and `response_length`
    (mean tokens of the greedy and the sampled completions).
  """
  correct_pn = np.asarray(correct_pn, np.float64)
  n = correct_pn.shape[1]
  return {
    "greedy_accuracy": float(np.mean(greedy_correct_p)),
    f"avg@{n}": float(correct_pn.mean()),
    f"pass@{k}": mean_pass_at_k(correct_pn, k),
    f"maj@{k}": mean_maj_at_k(answers_pn, correct_pn, k),
    "greedy_length": float(np.mean(greedy_lengths_p)),
    "response_length": float(np.mean(lengths_pn)),
  }


def example_records(
  examples: Sequence,
  *,
  greedy_texts: Sequence[str],
  greedy_rewards: np.ndarray,
  greedy_lengths: np.ndarray,
  texts_pn: Sequence[Sequence[str]],
  rewards_pn: np.ndarray,
  lengths_pn: np.ndarray,
  k: int,
) -> list[dict]:
  """One JSON-ready record per prompt: its reference, greedy and sampled completions, scores.

  Args:
    examples: the P examples (`tasks.Example`).
    greedy_texts, greedy_rewards, greedy_lengths: [P] the greedy completions.
    texts_pn, rewards_pn, lengths_pn: [P, n] the sampled completions.
    k: the k of pass@k and maj@k.

  Returns:
    Records with `index`, `prompt`, `reference`, `greedy` and `samples` (each a completion with
    its `answer`, `reward`, `correct` and `length`), `avg@n`, `pass@k` and `maj@k` (the winning
    answer and whether it is correct).
  """

  def completion(text, reward, length):
    reward = float(reward)
    return {
      "completion": text,
      "answer": extract_answer(text),
      "reward": reward,
      "correct": reward >= 1.0,
      "length": int(length),
    }

  records = []
  for i, ex in enumerate(examples):
    samples = [
      completion(t, r, n) for t, r, n in zip(texts_pn[i], rewards_pn[i], lengths_pn[i], strict=True)
    ]
    correct = [float(s["correct"]) for s in samples]
    winner, winner_correct = majority([s["answer"] for s in samples[:k]], correct[:k])
    records.append(
      {
        "index": i,
        "prompt": ex.prompt,
        "reference": ex.answer,
        "greedy": completion(greedy_texts[i], greedy_rewards[i], greedy_lengths[i]),
        "samples": samples,
        f"avg@{len(samples)}": float(np.mean(correct)),
        f"pass@{k}": pass_at_k(len(samples), int(sum(correct)), k),
        f"maj@{k}": {"answer": winner, "correct": bool(winner_correct)},
      }
    )
  return records


SUMMARY_FILE = "summary.json"
EXAMPLES_FILE = "examples.jsonl"


def write_report(out: str, summary: dict, records: Sequence[dict]) -> None:
  """Writes `summary.json` and `examples.jsonl` (one record per example) into `out`, each
  through a temporary file and a rename, so a reader never sees half a report."""
  os.makedirs(out, exist_ok=True)
  texts = {
    EXAMPLES_FILE: "".join(json.dumps(r) + "\n" for r in records),
    SUMMARY_FILE: json.dumps(summary, indent=2) + "\n",
  }
  for name, text in texts.items():
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
