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
import numpy as np
from absl import logging
from flax import nnx

from grpojax import models, sampling
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import row_batches, rules

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


ON_TOO_LONG = ("fallback", "raise")


class Judge:
  """Scores completions with a chat checkpoint, batched and jitted (one compilation) on a mesh.

  Prompts are left-padded to `max_prompt_len` and each call holds `batch_size` global rows
  (rounded up to a multiple of the batch-shard count), split over the layout's batch axes like
  the policy's batches; the parameters take the layout's sampling rules. A filled-in rubric
  longer than `max_prompt_len` tokens is not judged: with `on_too_long="fallback"` it earns the
  fallback reward, counted (`too_long`) and named in a warning; with "raise" it stops the run.
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
    on_too_long: str = "fallback",
    layout: layout_lib.Layout | None = None,
  ):
    """Args:
    model, tokenizer: the judge checkpoint.
    rubric: a template over `RUBRIC_FIELDS` (`check_rubric`).
    lo, hi: the valid score range, lo < hi.
    fallback: the reward of an unparsable judgement (and of a too-long prompt).
    max_new_tokens: the judge's generation budget.
    max_prompt_len: the longest filled-in rubric, in the judge's tokens.
    batch_size: global rows per jitted generation.
    chat_template: render the rubric as a user message with the tokenizer's chat template.
    on_too_long: one of `ON_TOO_LONG`, for a filled-in rubric over `max_prompt_len` tokens.
    layout: the run's mesh and rules (None: this process's first device).
    """
    check_rubric(rubric)
    if not lo < hi:
      raise ValueError(f"lo={lo} must be < hi={hi}")
    if on_too_long not in ON_TOO_LONG:
      raise ValueError(f"on_too_long={on_too_long!r}; must be one of {ON_TOO_LONG}")
    layout = layout or row_batches.one_device_layout()
    self.graphdef, params = nnx.split(model)
    self.params = rules.shard_params(params, layout.sample_shardings(params), copy=False)
    self.batches = row_batches.row_batches(layout, batch_size)
    self.tokenizer = tokenizer
    self.rubric, self.lo, self.hi, self.fallback = rubric, lo, hi, float(fallback)
    self.max_new_tokens, self.max_prompt_len = max_new_tokens, max_prompt_len
    self.chat_template, self.on_too_long = chat_template, on_too_long

  def encode(self, text: str) -> list[int]:
    """The judge's prompt ids for a filled-in rubric."""
    if self.chat_template:
      text = self.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True
      )
    return self.tokenizer.encode(text)

  def generate(self, prompt_ids: Sequence[Sequence[int]]) -> list[str]:
    """Greedy judgements of prompts (each at most `max_prompt_len` tokens).

    Every process calls it with its own prompts (the same number on each, or none).
    """
    tok = self.tokenizer
    per_call = len(self.batches.slots)
    texts = []
    for k in range(self.batches.calls(len(prompt_ids))):
      part = list(prompt_ids[k * per_call : (k + 1) * per_call])
      # Unused slots repeat a prompt (a process without any left feeds one pad token).
      filled = part + [part[-1] if part else [tok.pad_id]] * (per_call - len(part))
      tokens, mask = sampling.pad_prompts(filled, pad_id=tok.pad_id, bucket=self.max_prompt_len)
      out = sampling.sample(
        self.graphdef,
        self.params,
        self.batches.put(tokens),
        self.batches.put(mask),
        jax.random.key(0),  # greedy: the key is unused
        method=sampling.Greedy(),
        max_new_tokens=self.max_new_tokens,
        num_samples=1,
        stop_ids=tuple(sorted(tok.eos_ids)),
        pad_id=tok.pad_id,
      )
      out_tokens, out_mask = self.batches.read(out.tokens), self.batches.read(out.mask)
      for row in range(len(part)):
        ids = out_tokens[row, : int(out_mask[row].sum())].tolist()
        texts.append(tok.decode(ids))
    return texts

  def __call__(
    self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
  ) -> tuple[np.ndarray, dict[str, float]]:
    """Rewards [n] in [0, 1] (or the fallback) and metrics for n completions: `unparsed`
    judgements and `too_long` prompts, each at the fallback.

    Raises:
      ValueError: with `on_too_long="raise"`, naming the item whose filled-in rubric exceeds
        `max_prompt_len` tokens.
    """
    ids, judged = [], []
    for i, (p, c, r) in enumerate(zip(prompts, completions, references, strict=True)):
      text = judge_prompt(self.rubric, prompt=p, completion=c, reference=r, lo=self.lo, hi=self.hi)
      row = self.encode(text)
      if len(row) > self.max_prompt_len:
        what = (
          f"judge: item {i} (prompt {p[:60]!r}, completion {c[:60]!r}) needs {len(row)} prompt "
          f"tokens, more than config.reward.judge.max_prompt_len={self.max_prompt_len}"
        )
        if self.on_too_long == "raise":
          raise ValueError(what)
        logging.warning("%s; scored at the fallback %g", what, self.fallback)
        continue
      ids.append(row)
      judged.append(i)
    rewards = np.full(len(completions), self.fallback, np.float32)
    unparsed = 0
    for i, text in zip(judged, self.generate(ids), strict=True):
      verdict = parse_score(text, lo=self.lo, hi=self.hi)
      if verdict.score is None:
        unparsed += 1
      else:
        rewards[i] = (verdict.score - self.lo) / (self.hi - self.lo)
    too_long = len(completions) - len(judged)
    return rewards, {"unparsed": float(unparsed), "too_long": float(too_long)}
