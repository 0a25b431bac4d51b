"""Rewards from models, added to the task's reward with weights:

  R = R_task + reward.model.weight · r_model + reward.judge.weight · r_judge

`r_model` is a learned reward model's score (a `...ForSequenceClassification` checkpoint,
`models.sequence_classifier`) on the prompt and completion; `r_judge` an LLM judge's verdict
in [0, 1] (`rl.judge`). Both are off unless their `path` is set. Correctness (accuracy,
pass@G, the refill signal) stays the task verifier's alone.

Both run on the run's mesh: each process scores its own rows in calls whose rows are split over
the batch axes like the policy's batches (`parallel.row_batches`), with the parameters laid out
by the run's sampling rules, in the source's `dtype` (or the policy's `model.dtype`).

Each scoring call runs under a wall-clock limit per batch (`time_limit_s`, which must cover the
first call's compilation): past it the run stops with an error naming the source and the field,
instead of hanging. The work runs in a daemon thread, so a stuck device call never keeps the
process alive after the error. Failing items are named: a non-finite reward-model score raises
with the item; a judge prompt that does not fit earns the judge's fallback, counted
(`reward/judge/too_long`) and named in a warning (or, with `judge.on_too_long = "raise"`,
stops the run naming the item); an unparsable judgement earns the fallback and is counted
(`reward/judge/unparsed`).
"""

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grpojax import models
from grpojax.models import sequence_classifier, tokenizers
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import row_batches, rules
from grpojax.rl import judge as judge_lib

# The compute dtypes a reward source may name (`reward.model.dtype`, `reward.judge.dtype`).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def call_with_time_limit(fn: Callable[[], Any], *, seconds: float, what: str) -> Any:
  """`fn()`, or TimeoutError naming `what` when it takes longer than `seconds`.

  The call runs in a daemon thread: on timeout it is abandoned (a device call cannot be
  cancelled), and it cannot keep the process from exiting.
  """
  result: dict[str, Any] = {}

  def target():
    try:
      result["value"] = fn()
    except BaseException as e:  # re-raised in the caller's thread
      result["error"] = e

  thread = threading.Thread(target=target, daemon=True, name=f"time-limited {what}")
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise TimeoutError(f"{what}: no result within {seconds:g} s (raise its time_limit_s)")
  if "error" in result:
    raise result["error"]
  return result["value"]


class RewardModel:
  """Scores (prompt, completion) pairs with a sequence classifier, batched and jitted on a mesh.

  Each pair is rendered as a user/assistant conversation with the reward model's chat template
  (or, without one, as prompt + completion), right-padded to a multiple of `bucket` tokens and
  scored in calls of `batch_size` global rows (rounded up to a multiple of the batch-shard
  count), split over the layout's batch axes like the policy's batches; the parameters take the
  layout's sampling rules. A pair longer than `max_len` tokens keeps its last `max_len` (the
  score is read at the last token), counted in `reward/model/truncated`.
  """

  def __init__(
    self,
    classifier: sequence_classifier.SequenceClassifier,
    tokenizer,
    *,
    label: int = 0,
    max_len: int = 1024,
    batch_size: int = 16,
    bucket: int = 64,
    chat_template: bool = True,
    layout: layout_lib.Layout | None = None,
  ):
    """Args:
    classifier, tokenizer: the reward model checkpoint.
    label: which output of the score head is the reward.
    max_len: the longest pair, in the reward model's tokens.
    batch_size: global rows per jitted call.
    bucket: row lengths are padded to a multiple of it (fewer compilations).
    chat_template: render each pair with the tokenizer's chat template.
    layout: the run's mesh and rules (None: this process's first device).
    """
    if not 0 <= label < classifier.num_labels:
      raise ValueError(f"label={label} outside the {classifier.num_labels} labels")
    self.classifier, self.tokenizer, self.label = classifier, tokenizer, label
    self.max_len, self.bucket, self.chat_template = max_len, bucket, chat_template
    layout = layout or row_batches.one_device_layout()
    self.batches = row_batches.row_batches(layout, batch_size)
    self.params = rules.shard_params(
      classifier.params, layout.sample_shardings(classifier.params), copy=False
    )
    self.score_dl = layout.put_replicated(classifier.score_dl)
    # [rows, T] tokens and mask, split by rows -> [rows, L] scores, split alike.
    self.score_rows = jax.jit(
      functools.partial(sequence_classifier.scores, classifier.graphdef),
      out_shardings=self.batches.sharding,
    )

  def encode(self, prompt: str, completion: str) -> list[int]:
    """The reward model's token ids for one pair."""
    if self.chat_template:
      text = self.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
        add_generation_prompt=False,
      )
      return self.tokenizer.encode(text)
    return self.tokenizer.encode(prompt + completion, add_special_tokens=True)

  def __call__(
    self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
  ) -> tuple[np.ndarray, dict[str, float]]:
    """Scores [n] float32 and metrics; `references` are unused.

    Every process calls it with its own rows (the same number on each, or none).

    Raises:
      ValueError: naming the item whose score is not finite.
    """
    del references
    rm = self.classifier
    rows = [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
    truncated = sum(len(r) > self.max_len for r in rows)
    rows = [r[-self.max_len :] for r in rows]
    pad = rm.pad_id if rm.pad_id is not None else self.tokenizer.pad_id
    per_call = len(self.batches.slots)
    parts = [rows[k * per_call : (k + 1) * per_call] for k in range(self.batches.calls(len(rows)))]
    # Every process pads a call to the same length: the longest row of that call anywhere.
    longest = row_batches.agreed_max([max([len(r) for r in part] + [1]) for part in parts])
    out = [np.zeros((0,), np.float32)]
    for part, most in zip(parts, longest, strict=True):
      t = min(-(-int(most) // self.bucket) * self.bucket, self.max_len)
      tokens = np.full((per_call, t), pad, np.int32)
      mask = np.zeros((per_call, t), np.int32)
      for i, r in enumerate(part):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = 1
      s = self.score_rows(
        self.params, self.score_dl, self.batches.put(tokens), self.batches.put(mask)
      )
      out.append(self.batches.read(s)[: len(part), self.label])
    scores = np.concatenate(out).astype(np.float32)
    for i in np.flatnonzero(~np.isfinite(scores)):
      raise ValueError(
        f"reward model: non-finite score {scores[i]} for item {i} (prompt {prompts[i][:60]!r}, "
        f"completion {completions[i][:60]!r})"
      )
    return scores, {"truncated": float(truncated)}


class Source(NamedTuple):
  """One weighted reward source: `scorer(prompts, completions, references)` -> (values [n],
  metrics), run under `time_limit_s` per call."""

  name: str
  weight: float
  time_limit_s: float
  scorer: Callable


class ModelRewards(NamedTuple):
  """The configured reward sources (at least one)."""

  sources: tuple[Source, ...]

  def __call__(self, completions: Sequence[str], examples: Sequence[Any]):
    """The weighted sum of the sources' rewards [n] float32, and metrics
    `reward/<source>/mean` (unweighted) and `reward/<source>/<count>` (e.g. `unparsed`)."""
    prompts = [ex.prompt for ex in examples]
    references = [ex.answer for ex in examples]
    total = np.zeros(len(completions), np.float32)
    metrics = {}
    for src in self.sources:
      values, counts = call_with_time_limit(
        lambda src=src: src.scorer(prompts, completions, references),
        seconds=src.time_limit_s,
        what=f"config.reward.{src.name} scoring a batch of {len(completions)}",
      )
      total += np.float32(src.weight) * values
      metrics[f"reward/{src.name}/mean"] = float(np.mean(values)) if len(values) else 0.0
      metrics.update({f"reward/{src.name}/{k}": v for k, v in counts.items()})
    return total, metrics


def check_config(reward: ml_collections.ConfigDict) -> None:
  """Checks `config.reward.model` and `.judge` before any work.

  Raises:
    ValueError: 'config.reward.<source>.<field>: ...' for the first bad field.
  """
  for name in ("model", "judge"):
    cfg = reward[name]
    where = f"config.reward.{name}"
    if not cfg.path:
      continue
    if not os.path.isfile(os.path.join(cfg.path, "config.json")):
      raise ValueError(f"{where}.path: {cfg.path!r} holds no config.json")
    if not math.isfinite(cfg.weight):
      raise ValueError(f"{where}.weight: must be finite, got {cfg.weight}")
    if not cfg.time_limit_s > 0:
      raise ValueError(f"{where}.time_limit_s: must be > 0, got {cfg.time_limit_s}")
    if cfg.batch_size < 1:
      raise ValueError(f"{where}.batch_size: must be >= 1, got {cfg.batch_size}")
    if cfg.dtype and cfg.dtype not in DTYPES:
      raise ValueError(
        f"{where}.dtype: {cfg.dtype!r}; must be one of {sorted(DTYPES)} or '' (the policy's)"
      )
  model, judge = reward.model, reward.judge
  if model.path and model.max_len < 1:
    raise ValueError(f"config.reward.model.max_len: must be >= 1, got {model.max_len}")
  if not judge.path:
    return
  if not judge.min_score < judge.max_score:
    raise ValueError(
      f"config.reward.judge.max_score: must be > min_score={judge.min_score}, got {judge.max_score}"
    )
  if not math.isfinite(judge.fallback):
    raise ValueError(f"config.reward.judge.fallback: must be finite, got {judge.fallback}")
  if judge.max_new_tokens < 1:
    raise ValueError(
      f"config.reward.judge.max_new_tokens: must be >= 1, got {judge.max_new_tokens}"
    )
  if judge.max_prompt_len < 1:
    raise ValueError(
      f"config.reward.judge.max_prompt_len: must be >= 1, got {judge.max_prompt_len}"
    )
  if judge.on_too_long not in judge_lib.ON_TOO_LONG:
    raise ValueError(
      f"config.reward.judge.on_too_long: {judge.on_too_long!r}; must be one of "
      f"{list(judge_lib.ON_TOO_LONG)}"
    )
  try:
    judge_lib.check_rubric(rubric_of(judge))
  except ValueError as e:
    raise ValueError(f"config.reward.judge.rubric: {e}") from None


def rubric_of(judge: ml_collections.ConfigDict) -> str:
  """`judge.rubric`, or the built-in `judge.DEFAULT_RUBRIC` when it is empty (so that reading a
  config does not import the judge)."""
  return judge.rubric or judge_lib.DEFAULT_RUBRIC


def compute_dtype(cfg: ml_collections.ConfigDict, policy_dtype: str):
  """The jnp dtype a reward source computes (and keeps its parameters) in: its own `dtype`, or
  the policy's `model.dtype` when that is empty."""
  return DTYPES[cfg.dtype or policy_dtype]


def from_config(
  reward: ml_collections.ConfigDict,
  *,
  layout: layout_lib.Layout | None = None,
  policy_dtype: str = "float32",
) -> ModelRewards | None:
  """The run's model reward sources from a checked `config.reward`, or None when both are off.

  Loads the checkpoints (weights and tokenizers) named by `reward.model.path` and
  `reward.judge.path`, in their `dtype` (or `policy_dtype`), laid out on `layout`.

  Args:
    reward: `config.reward`, checked by `check_config`.
    layout: the run's mesh and rules (None: this process's first device).
    policy_dtype: the policy's `config.model.dtype`, the default compute dtype.
  """
  sources = []
  model = reward.model
  if model.path:
    dtype = compute_dtype(model, policy_dtype)
    try:
      classifier = sequence_classifier.load(model.path, dtype=dtype, param_dtype=dtype)
      tokenizer = tokenizers.load_tokenizer(model.path)
    except (OSError, ValueError) as e:
      raise ValueError(f"config.reward.model.path: {e}") from None
    if not 0 <= model.label < classifier.num_labels:
      raise ValueError(
        f"config.reward.model.label: {model.label} is not one of the {classifier.num_labels} "
        f"outputs of {model.path}"
      )
    scorer = RewardModel(
      classifier,
      tokenizer,
      label=model.label,
      max_len=model.max_len,
      batch_size=model.batch_size,
      chat_template=model.chat_template,
      layout=layout,
    )
    sources.append(Source("model", float(model.weight), float(model.time_limit_s), scorer))
  judge = reward.judge
  if judge.path:
    dtype = compute_dtype(judge, policy_dtype)
    try:
      judge_model = models.from_pretrained(judge.path, dtype=dtype, param_dtype=dtype)
      judge_tokenizer = tokenizers.load_tokenizer(judge.path)
    except (OSError, ValueError) as e:
      raise ValueError(f"config.reward.judge.path: {e}") from None
    scorer = judge_lib.Judge(
      judge_model,
      judge_tokenizer,
      rubric=rubric_of(judge),
      lo=judge.min_score,
      hi=judge.max_score,
      fallback=judge.fallback,
      max_new_tokens=judge.max_new_tokens,
      max_prompt_len=judge.max_prompt_len,
      batch_size=judge.batch_size,
      chat_template=judge.chat_template,
      on_too_long=judge.on_too_long,
      layout=layout,
    )
    sources.append(Source("judge", float(judge.weight), float(judge.time_limit_s), scorer))
  return ModelRewards(tuple(sources)) if sources else None
