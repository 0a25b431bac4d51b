"""An LLM judge: a local chat checkpoint grades each completion against a rubric (and, when the
rubric asks for it, the example's reference answer: reference-guided judging, arXiv 2602.16802).

The judge decodes greedily with grpojax's sampler, and its verdict is read with a strict
grammar (`parse_score`): the last non-empty line must be exactly `Score: <integer>`, that
integer must lie in [lo, hi], and no other line may contain "score:". Anything else is
unparsable and earns the configured fallback reward, counted, never a guess: a judge that
rambles, hedges ("Score: 7/10"), repeats itself or is talked into two verdicts is not read.

A parsed score s maps to the reward (s - lo) / (hi - lo) in [0, 1].
"""

import re
import string
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import models, sampling

DEFAULT_RUBRIC = (
  "You grade a response to a problem.\n\n"
  "Problem:\n{prompt}\n\n"
  "Reference answer:\n{reference}\n\n"
  "Response:\n{completion}\n\n"
  "Judge whether the response reaches the reference answer by sound reasoning. Reply in at "
  'most two sentences, then end with a final line "Score: N", N an integer from {lo} to {hi}.'
)
RUBRIC_FIELDS = ("prompt", "completion", "reference", "lo", "hi")
_FINAL_LINE = re.compile(r"Score:[ \t]*([+-]?[0-9]{1,9})")


class Verdict(NamedTuple):
  """A parsed judgement.

  Attributes:
    score: the integer score, or None when the output is unparsable.
    reason: why it is unparsable ("" when parsed).
  """

  score: int | None
  reason: str


def parse_score(text: str, *, lo: int, hi: int) -> Verdict:
  """Reads the judge's score with the module's strict grammar.

  Args:
    text: the judge's generated text.
    lo, hi: the inclusive range of valid scores.

  Returns:
    A `Verdict`; its `reason` names what broke the grammar.
  """
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:
    return Verdict(None, "empty output")
  mentions = sum("score:" in line.lower() for line in lines)
  if mentions > 1:
    return Verdict(None, f"{mentions} lines mention a score")
  match = _FINAL_LINE.fullmatch(lines[-1])
  if match is None:
    return Verdict(None, "the last line is not 'Score: <integer>'")
  score = int(match.group(1))
  if not lo <= score <= hi:
    return Verdict(None, f"score {score} outside [{lo}, {hi}]")
  return Verdict(score, "")


def check_rubric(rubric: str) -> None:
  """Raises ValueError unless `rubric` is a `str.format` template over `RUBRIC_FIELDS` that
  holds {completion}."""
  try:
    fields = {name for _, name, _, _ in string.Formatter().parse(rubric) if name is not None}
  except ValueError as e:
    raise ValueError(f"not a format template ({e})") from None
  unknown = sorted(fields - set(RUBRIC_FIELDS))
  if unknown:
    raise ValueError(f"unknown field(s) {unknown}; known: {list(RUBRIC_FIELDS)}")
  if "completion" not in fields:
    raise ValueError("the rubric must hold {completion}")


def judge_prompt(rubric: str, *, prompt: str, completion: str, reference: str, lo: int, hi: int):
  """The rubric filled in for one completion (the judge's user message)."""
  return rubric.format(prompt=prompt, completion=completion, reference=reference, lo=lo, hi=hi)


class Judge:
  """Scores completions with a chat checkpoint, batched and jitted (one compilation).

  Prompts are left-padded to `max_prompt_len` and batches filled to `batch_size` rows, so
  every call has one shape. Runs on this process's default device.
  """

  def __init__(
    self,
    model: models.Decoder,
    tokenizer,
    *,
    rubric: str = DEFAULT_RUBRIC,
    lo: int = 0,
    hi: int = 10,
    fallback: float = 0.0,
    max_new_tokens: int = 256,
    max_prompt_len: int = 1024,
    batch_size: int = 8,
    chat_template: bool = True,
  ):
    """Args:
    model, tokenizer: the judge checkpoint.
    rubric: a template over `RUBRIC_FIELDS` (`check_rubric`).
    lo, hi: the valid score range, lo < hi.
    fallback: the reward of an unparsable judgement.
    max_new_tokens: the judge's generation budget.
    max_prompt_len: the longest filled-in rubric, in the judge's tokens.
    batch_size: rows per jitted generation.
    chat_template: render the rubric as a user message with the tokenizer's chat template.
    """
    check_rubric(rubric)
    if not lo < hi:
      raise ValueError(f"lo={lo} must be < hi={hi}")
    self.graphdef, self.params = nnx.split(model)
    self.tokenizer = tokenizer
    self.rubric, self.lo, self.hi, self.fallback = rubric, lo, hi, float(fallback)
    self.max_new_tokens, self.max_prompt_len = max_new_tokens, max_prompt_len
    self.batch_size, self.chat_template = batch_size, chat_template

  def encode(self, text: str) -> list[int]:
    """The judge's prompt ids for a filled-in rubric."""
    if self.chat_template:
      text = self.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True
      )
    return self.tokenizer.encode(text)

  def generate(self, prompt_ids: Sequence[Sequence[int]]) -> list[str]:
    """Greedy judgements of prompts (each at most `max_prompt_len` tokens)."""
    tok = self.tokenizer
    texts = []
    for start in range(0, len(prompt_ids), self.batch_size):
      part = list(prompt_ids[start : start + self.batch_size])
      filled = part + [part[-1]] * (self.batch_size - len(part))
      tokens, mask = sampling.pad_prompts(filled, pad_id=tok.pad_id, bucket=self.max_prompt_len)
      out = sampling.sample(
        self.graphdef,
        self.params,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jax.random.key(0),  # greedy: the key is unused
        method=sampling.Greedy(),
        max_new_tokens=self.max_new_tokens,
        num_samples=1,
        stop_ids=tuple(sorted(tok.eos_ids)),
        pad_id=tok.pad_id,
      )
      out_tokens, out_mask = np.asarray(out.tokens), np.asarray(out.mask)
      for row in range(len(part)):
        ids = out_tokens[row, : int(out_mask[row].sum())].tolist()
        texts.append(tok.decode(ids))
    return texts

  def __call__(
    self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
  ) -> tuple[np.ndarray, dict[str, float]]:
    """Rewards [n] in [0, 1] (or the fallback) and metrics for n completions.

    Raises:
      ValueError: naming the item whose filled-in rubric exceeds `max_prompt_len` tokens.
    """
    ids = []
    for i, (p, c, r) in enumerate(zip(prompts, completions, references, strict=True)):
      text = judge_prompt(self.rubric, prompt=p, completion=c, reference=r, lo=self.lo, hi=self.hi)
      row = self.encode(text)
      if len(row) > self.max_prompt_len:
        raise ValueError(
          f"judge: item {i} (prompt {p[:60]!r}, completion {c[:60]!r}) needs {len(row)} prompt "
          f"tokens, more than config.reward.judge.max_prompt_len={self.max_prompt_len}"
        )
      ids.append(row)
    verdicts = [parse_score(t, lo=self.lo, hi=self.hi) for t in self.generate(ids)]
    span = self.hi - self.lo
    rewards = np.asarray(
      [self.fallback if v.score is None else (v.score - self.lo) / span for v in verdicts],
      np.float32,
    )
    unparsed = sum(v.score is None for v in verdicts)
    return rewards, {"unparsed": float(unparsed)}
