"""Question/answer data (JSON lines or Parquet) through tfds array_record files and grain, no TF.

By default each line of a file is GSM8K's `{"question": ..., "answer": "... #### 42"}`; a
`Fields` names other keys (prompt, answer, solution), an optional marker before the final answer
and whether that answer must be a number, and `.parquet` files are read as tables of the same
columns (a row's location is `file:row N`). The files are validated
(every malformed row is reported as `file:line`), then written once by a tfds
`GeneratorBasedBuilder` into `data_dir` as array_record files, then read back through
`builder.as_data_source(split)` (random access, no TensorFlow) wrapped in a
`grain.MapDataset`, shuffled by seed. The prepared copy lives under a config named by a hash of
the files' contents, so editing a file prepares a fresh copy instead of reading a stale one.

Given a token counter and a prompt budget, preparation also checks every row's prompt length and
fails at the first overlong one with its `file:line`, before anything is written; with
`skip_long` such rows are dropped (and counted) instead.

An example's prompt is the question, its answer the number after `####` (commas dropped, e.g.
`1,080` -> `1080`), and its solution the whole answer text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import grain
import tensorflow_datasets as tfds
from absl import logging

from grpojax.tasks import example as example_lib
from grpojax.tasks import verifiers

_MARKER = "####"


@dataclasses.dataclass(frozen=True)
class Fields:
  """Where a data row keeps its parts.

  Attributes:
    prompt: the key of the prompt text.
    answer: the key of the reference answer (its text after the last `marker`, when set).
    solution: the key of the worked solution used by a supervised warm start ("" = the answer
      key's whole text).
    marker: "" or the text after whose last occurrence the final answer stands (GSM8K's `####`).
    numeric: the final answer must be a number (thousands commas are dropped).
  """

  prompt: str = "question"
  answer: str = "answer"
  solution: str = ""
  marker: str = _MARKER
  numeric: bool = True


GSM8K = Fields()


@dataclasses.dataclass(frozen=True)
class Row:
  """One validated line of a GSM8K-format file.

  Attributes:
    question: the problem text.
    answer: the worked answer text, ending in `#### <number>`.
    final_answer: the number after the last `####`, without thousands commas.
    source: where the row came from, as `file:line`.
  """

  question: str
  answer: str
  final_answer: str
  source: str


def parse_row(line: str, source: str, fields: Fields = GSM8K) -> Row:
  """Validates one line of a JSON-lines file.

  Args:
    line: the line's text.
    source: its location, `file:line`, for error messages.
    fields: where the row keeps its parts.

  Returns:
    The row.

  Raises:
    ValueError: the line is not a JSON object with the fields, or its final answer is missing
      or (for numeric answers) not a number; the message starts with `source`.
  """
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{source}: invalid JSON: {e}") from None
  return parse_record(record, source, fields)


def _field_text(record: Mapping, key: str, source: str, *, numbers_ok: bool) -> str:
  if key not in record:
    raise ValueError(f"{source}: missing key {key!r}")
  value = record[key]
  if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
    return str(value)
  if not isinstance(value, str):
    raise ValueError(f"{source}: {key!r} must be a string, got {type(value).__name__}")
  return value


def parse_record(record, source: str, fields: Fields = GSM8K) -> Row:
  """Validates one record (a JSON object or a Parquet row); see `parse_row`."""
  if not isinstance(record, dict):
    raise ValueError(f"{source}: expected a JSON object, got {type(record).__name__}")
  question = _field_text(record, fields.prompt, source, numbers_ok=False)
  answer = _field_text(record, fields.answer, source, numbers_ok=True)
  final = answer
  if fields.marker:
    marker = answer.rfind(fields.marker)
    if marker < 0:
      raise ValueError(
        f"{source}: {fields.answer!r} has no {fields.marker!r} before the final answer"
      )
    final = answer[marker + len(fields.marker) :]
  final = final.strip()
  if fields.numeric:
    if verifiers.parse_number(final) is None:
      after = f" after {fields.marker!r}" if fields.marker else ""
      raise ValueError(f"{source}: final answer {final!r}{after} is not a number")
    final = final.replace(",", "").replace("\u2212", "-")
  elif not final:
    raise ValueError(f"{source}: the final answer in {fields.answer!r} is empty")
  solution = answer
  if fields.solution:
    solution = _field_text(record, fields.solution, source, numbers_ok=True)
  return Row(question=question, answer=solution, final_answer=final, source=source)


def _read_parquet(path: str | pathlib.Path, fields: Fields) -> list[Row]:
  # pyarrow comes with tensorflow-datasets' dependencies; imported only for Parquet files.
  import pyarrow.parquet  # noqa: PLC0415

  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"no file {str(path)!r}")
  try:
    records = pyarrow.parquet.read_table(path).to_pylist()
  except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds on a bad file)
    raise ValueError(f"{path}: not a readable Parquet file: {e}") from None
  return [parse_record(r, f"{path}:row {i}", fields) for i, r in enumerate(records, start=1)]


def read_rows(path: str | pathlib.Path, fields: Fields = GSM8K) -> list[Row]:
  """Reads and validates a JSON-lines file (blank lines skipped) or a `.parquet` file.

  Args:
    path: the file.
    fields: where each row keeps its parts.

  Returns:
    Its rows, in file order.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a row is malformed or not UTF-8; the message names `file:line` (`file:row N`).
  """
  if str(path).endswith(".parquet"):
    rows = _read_parquet(path, fields)
  else:
    rows = []
    with open(path, "rb") as f:
      for number, raw in enumerate(f, start=1):
        source = f"{path}:{number}"
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise ValueError(f"{source}: not UTF-8: {e}") from None
        if line.strip():
          rows.append(parse_row(line, source, fields))
  if not rows:
    raise ValueError(f"{path}: no rows")
  return rows


class JsonlConfig(tfds.core.BuilderConfig):
  """A `JsonlBuilder` config: which files make which split.

  Attributes:
    split_files: split name -> JSON-lines files, in order.
    heldout_fraction: None, or the share of the `train` files' rows (by a hash of the question)
      written to a `heldout` split instead of `train`.
    skip_sources: the `file:line` of rows left out (prompts over the budget).
    fields: where each row keeps its parts.
  """

  def __init__(
    self,
    *,
    split_files: Mapping[str, Sequence[str]],
    heldout_fraction: float | None = None,
    skip_sources: frozenset[str] = frozenset(),
    fields: Fields = GSM8K,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.split_files = {split: tuple(files) for split, files in split_files.items()}
    self.heldout_fraction = heldout_fraction
    self.skip_sources = frozenset(skip_sources)
    self.fields = fields


class JsonlBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes GSM8K-format JSON lines as tfds array_record splits, in file order.

  Build it with `make_builder`, which names the config by a hash of the files' contents.
  """

  VERSION = tfds.core.Version("1.0.0")
  # The files' order is kept; grain shuffles at read time, by seed.

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="GSM8K-format question/answer pairs read from local JSON-lines files.",
      features=tfds.features.FeaturesDict(
        {
          "question": tfds.features.Text(),
          "answer": tfds.features.Text(),
          "final_answer": tfds.features.Text(),
          "source": tfds.features.Text(),
        }
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Local files only.
    config = self.builder_config
    if config.heldout_fraction is None:
      return {split: self._generate_examples(files) for split, files in config.split_files.items()}
    files = config.split_files["train"]
    return {
      "train": self._generate_examples(files, heldout=False),
      "heldout": self._generate_examples(files, heldout=True),
    }

  def _generate_examples(
    self, files: Sequence[str], heldout: bool | None = None
  ) -> Iterator[tuple[int, dict[str, str]]]:
    key = 0
    config = self.builder_config
    skip = config.skip_sources
    for path in files:
      rows = [row for row in read_rows(path, config.fields) if row.source not in skip]
      for row in _split_rows(rows, self.builder_config.heldout_fraction, heldout):
        yield key, dataclasses.asdict(row)
        key += 1


def _split_rows(rows: list[Row], heldout_fraction: float | None, heldout: bool | None) -> list[Row]:
  """All rows, or those on one side of the hash split of their questions."""
  if heldout is None:
    return rows
  return [row for row in rows if example_lib.is_heldout(row.question, heldout_fraction) == heldout]


def _fingerprint(
  split_files: Mapping[str, Sequence[str]],
  heldout_fraction: float | None,
  skip_sources: frozenset[str] = frozenset(),
  fields: Fields = GSM8K,
) -> str:
  """A short hash of the split names, each file's path (kept in `source`) and contents, the
  held-out share, the rows left out and the fields read (GSM8K's add nothing, so copies
  prepared before fields existed stay valid)."""
  digest = hashlib.sha256(f"heldout {heldout_fraction!r}\n".encode())
  if fields != GSM8K:
    digest.update(f"fields {fields!r}\n".encode())
  for source in sorted(skip_sources):
    digest.update(f"skip {source}\n".encode())
  for split in sorted(split_files):
    digest.update(f"split {split}\n".encode())
    for path in split_files[split]:
      data = pathlib.Path(path).read_bytes()
      digest.update(f"file {path} {len(data)}\n".encode())
      digest.update(data)
  return digest.hexdigest()[:16]


def overlong_rows(
  rows: Sequence[Row], prompt_len: Callable[[str], int], max_prompt_len: int
) -> list[tuple[Row, int]]:
  """The rows whose prompt is longer than `max_prompt_len` tokens, with their lengths."""
  lengths = ((row, prompt_len(row.question)) for row in rows)
  return [(row, n) for row, n in lengths if n > max_prompt_len]


def _drop_overlong(
  rows: Mapping[str, list[Row]],
  prompt_len: Callable[[str], int] | None,
  max_prompt_len: int | None,
  skip_long: bool,
) -> frozenset[str]:
  """The sources of overlong rows to leave out; without `skip_long` the first one raises."""
  if prompt_len is None or max_prompt_len is None:
    return frozenset()
  skipped = set()
  for split_rows in rows.values():
    for row, n in overlong_rows(split_rows, prompt_len, max_prompt_len):
      if not skip_long:
        raise ValueError(
          f"{row.source}: the prompt is {n} tokens, more than config.rollout.max_prompt_len="
          f"{max_prompt_len}; shorten or remove the row, raise the budget, or set "
          "config.task.skip_long=True to drop such rows"
        )
      skipped.add(row.source)
  if skipped:
    logging.warning(
      "dropped %d rows whose prompt is longer than %d tokens (task.skip_long)",
      len(skipped),
      max_prompt_len,
    )
  return frozenset(skipped)


def make_builder(
  split_files: Mapping[str, str | Sequence[str]],
  *,
  data_dir: str | pathlib.Path | None,
  heldout_fraction: float | None = None,
  prompt_len: Callable[[str], int] | None = None,
  max_prompt_len: int | None = None,
  skip_long: bool = False,
  fields: Fields = GSM8K,
) -> JsonlBuilder:
  """Validates the files and prepares them as array_record splits under `data_dir` (once).

  Args:
    split_files: split name (e.g. `"train"`, `"test"`) -> a JSON-lines file or several.
    data_dir: where tfds keeps prepared datasets (None: tfds's default, `TFDS_DATA_DIR` or
      `~/tensorflow_datasets`); a copy already there for the same inputs is reused.
    heldout_fraction: None, or split the rows of `split_files["train"]` (its only entry) into
      `train` and `heldout` by a hash of the question, this share held out. Equal questions
      always land on the same side.
    prompt_len: question -> its prompt's token count as the run encodes it; with
      `max_prompt_len`, every row's prompt is checked before anything is written.
    max_prompt_len: the prompt budget in tokens (None: no check).
    skip_long: drop overlong rows (logging their count) instead of raising.
    fields: where each row keeps its parts.

  Returns:
    The prepared builder; `builder.as_data_source(split)` reads a split.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a split has no files, a row is malformed or (without `skip_long`) its prompt is
      over the budget (the message names `file:line`), a split is left empty, or the hash split
      leaves a side empty.
  """
  files = {
    split: (paths,) if isinstance(paths, (str, pathlib.Path)) else tuple(paths)
    for split, paths in split_files.items()
  }
  files = {split: tuple(str(p) for p in paths) for split, paths in files.items()}
  rows = {}
  for split, paths in files.items():
    if not paths:
      raise ValueError(f"split {split!r} has no files")
    # Fail with file:line before tfds writes anything.
    rows[split] = [row for path in paths for row in read_rows(path, fields)]
  skip = _drop_overlong(rows, prompt_len, max_prompt_len, skip_long)
  rows = {split: [row for row in r if row.source not in skip] for split, r in rows.items()}
  for split, split_rows in rows.items():
    if not split_rows:
      raise ValueError(f"split {split!r}: every row's prompt is over the budget")
  if heldout_fraction is not None:
    if set(files) != {"train"} or not 0.0 < heldout_fraction < 1.0:
      raise ValueError(
        "a hash split needs split_files with only 'train' and heldout_fraction in (0, 1), got "
        f"{sorted(files)} and {heldout_fraction!r}"
      )
    held = len(_split_rows(rows["train"], heldout_fraction, heldout=True))
    if not 0 < held < len(rows["train"]):
      raise ValueError(
        f"holding out {heldout_fraction} of {len(rows['train'])} rows leaves {held} held out "
        "and the rest for training; one side is empty"
      )
  config = JsonlConfig(
    name=f"sha{_fingerprint(files, heldout_fraction, skip, fields)}",
    split_files=files,
    heldout_fraction=heldout_fraction,
    skip_sources=skip,
    fields=fields,
  )
  builder = JsonlBuilder(
    config=config,
    data_dir=None if data_dir is None else str(data_dir),
    file_format="array_record",
  )
  builder.download_and_prepare()
  return builder


def _text(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _to_example(record: Mapping[str, bytes | str]) -> example_lib.Example:
  return example_lib.Example(
    prompt=_text(record["question"]),
    answer=_text(record["final_answer"]),
    solution=_text(record["answer"]),
    source=_text(record["source"]),
  )


def dataset(builder: JsonlBuilder, split: str, *, seed: int | None) -> grain.MapDataset:
  """A split as a grain `MapDataset` of `Example`s.

  Args:
    builder: a prepared builder from `make_builder`.
    split: the split's name; tfds slicing such as `"train[:100]"` works too.
    seed: shuffle with this seed, or None to keep file order.

  Returns:
    The dataset: random access (`ds[i]`), `len(ds)` and iteration.
  """
  ds = grain.MapDataset.source(builder.as_data_source(split))
  if seed is not None:
    ds = ds.shuffle(seed=seed)
  return ds.map(_to_example)


def _train_example(index: int, *, train: grain.MapDataset) -> example_lib.Example:
  if index < 0:
    raise ValueError(f"training example index must be non-negative, got {index}")
  return train[index]


def make_task(
  train_files: str | Sequence[str],
  *,
  seed: int,
  heldout_files: str | Sequence[str] | None = None,
  heldout_size: int | None = None,
  heldout_fraction: float = 0.1,
  data_dir: str | pathlib.Path | None = None,
  prompt_len: Callable[[str], int] | None = None,
  max_prompt_len: int | None = None,
  skip_long: bool = False,
  fields: Fields = GSM8K,
  reward_fn: example_lib.RewardFn = verifiers.numeric_reward,
  name: str = "gsm8k",
) -> example_lib.Task:
  """A task read from data files, by default GSM8K's format with `verifiers.numeric_reward`.

  Args:
    train_files: JSON-lines file(s) for training.
    seed: the training order's seed; each epoch is reshuffled.
    heldout_files: JSON-lines file(s) for evaluation (e.g. GSM8K's `test.jsonl`); None holds
      out `heldout_fraction` of the training rows instead, by a hash of the question, so they
      never appear in training.
    heldout_size: keep the first this many held-out rows (file order); None keeps them all.
    heldout_fraction: the share held out when `heldout_files` is None.
    data_dir: where the prepared array_record copy is kept; None: tfds's default.
    prompt_len, max_prompt_len, skip_long: the prompt-length check at preparation
      (`make_builder`).
    fields: where each row keeps its parts (another format than GSM8K's).
    reward_fn: the verifier of a completion against the row's final answer.
    name: the task's name in logs.

  Returns:
    The task; `train(i)` cycles through the training rows, a new order each epoch, and
    `heldout` is in file order.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a row is malformed or its prompt over the budget (the message names
      `file:line`), or there are fewer than `heldout_size` held-out rows.
  """
  check = dict(
    prompt_len=prompt_len, max_prompt_len=max_prompt_len, skip_long=skip_long, fields=fields
  )
  if heldout_files is None:
    builder = make_builder(
      {"train": train_files}, data_dir=data_dir, heldout_fraction=heldout_fraction, **check
    )
  else:
    builder = make_builder(
      {"train": train_files, "heldout": heldout_files}, data_dir=data_dir, **check
    )
  # Shuffle before repeat: every epoch gets its own order and epochs never mix.
  train = dataset(builder, "train", seed=seed).repeat()
  heldout = dataset(builder, "heldout", seed=None)
  if heldout_size is not None:
    if not 1 <= heldout_size <= len(heldout):
      raise ValueError(f"heldout_size must be in [1, {len(heldout)}], got {heldout_size}")
    heldout = heldout[:heldout_size]
  return example_lib.Task(
    name=name,
    train=functools.partial(_train_example, train=train),
    heldout=heldout,
    reward_fn=reward_fn,
  )
