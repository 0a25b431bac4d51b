"""Tests for grpojax/tasks/gsm8k.py: JSON lines -> tfds array_record -> grain, without TF."""

import json
import pathlib

import pytest

from grpojax.tasks import example as example_lib
from grpojax.tasks import gsm8k, verifiers

_ROWS = [
  {"question": f"Question {i}: what is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
  for i in range(8)
]
_ROWS[3] = {"question": "How many?", "answer": "Many.\n#### 1,080"}  # Thousands comma.
_ROWS[5] = {"question": "How cold?", "answer": "Cold: #### -10"}  # Negative.
_HELDOUT = [{"question": "Q? ", "answer": "Because 6 * 7 = 42.\n#### 42"}]


def _write(path: pathlib.Path, rows, *, blank_lines=False) -> str:
  lines = [json.dumps(row) for row in rows]
  if blank_lines:
    lines = ["", *lines, "  "]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("gsm8k")
  return {
    "train": _write(root / "train.jsonl", _ROWS, blank_lines=True),
    "heldout": _write(root / "test.jsonl", _HELDOUT),
    "data_dir": str(root / "data"),
  }


@pytest.fixture(scope="module")
def builder(files):
  return gsm8k.make_builder(
    {"train": files["train"], "heldout": files["heldout"]}, data_dir=files["data_dir"]
  )


def test_rows_load_in_file_order_with_the_right_fields(builder, files):
  ds = gsm8k.dataset(builder, "train", seed=None)
  assert len(ds) == 8
  examples = list(ds)
  assert examples[0].prompt == "Question 0: what is 0 + 0?"
  assert examples[0].answer == "0"
  assert examples[0].solution == "0 + 0 = 0\n#### 0"
  assert examples[7].answer == "14"
  assert examples[3].answer == "1080"  # `1,080` without the comma.
  assert examples[5].answer == "-10"
  assert examples[5].solution == "Cold: #### -10"
  heldout = list(gsm8k.dataset(builder, "heldout", seed=None))
  assert [(e.prompt, e.answer) for e in heldout] == [("Q? ", "42")]
  for example in examples + heldout:
    assert verifiers.numeric_reward(example.solution, example) == 1.0


def test_records_keep_their_source_line(builder, files):
  record = builder.as_data_source("train")[0]
  # The first line of the file is blank, so the first row is on line 2.
  assert record["source"].decode() == f"{files['train']}:2"


def test_shuffle_is_a_seeded_permutation(builder):
  ordered = [e.prompt for e in gsm8k.dataset(builder, "train", seed=None)]
  a = [e.prompt for e in gsm8k.dataset(builder, "train", seed=1)]
  b = [e.prompt for e in gsm8k.dataset(builder, "train", seed=1)]
  c = [e.prompt for e in gsm8k.dataset(builder, "train", seed=2)]
  assert a == b
  assert sorted(a) == sorted(ordered)
  assert a != ordered and a != c


def test_tfds_split_slicing(builder):
  assert [e.answer for e in gsm8k.dataset(builder, "train[:2]", seed=None)] == ["0", "2"]


def test_make_task_cycles_epochs_in_new_orders(files):
  task = gsm8k.make_task(
    train_files=files["train"], heldout_files=files["heldout"], data_dir=files["data_dir"], seed=0
  )
  epoch0 = [task.train(i).prompt for i in range(8)]
  epoch1 = [task.train(i).prompt for i in range(8, 16)]
  assert sorted(epoch0) == sorted(epoch1) == sorted(row["question"] for row in _ROWS)
  assert epoch0 != epoch1
  assert [e.answer for e in task.heldout] == ["42"]
  assert task.reward_fn("... #### 42", task.heldout[0]) == 1.0


def test_one_file_is_split_by_question_hash(tmp_path):
  rows = [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(40)]
  rows.append(dict(rows[0]))  # A repeated question lands on the same side as its twin.
  path = _write(tmp_path / "all.jsonl", rows)
  task = gsm8k.make_task(path, seed=0, heldout_fraction=0.25, data_dir=tmp_path / "data")
  heldout = {example.prompt for example in task.heldout}
  train = [task.train(i).prompt for i in range(41 - len(task.heldout))]
  assert heldout == {f"Q{i}" for i in range(40) if example_lib.is_heldout(f"Q{i}", 0.25)}
  assert 0 < len(heldout) < 40
  assert not heldout & set(train)
  assert len(train) + len(task.heldout) == 41  # Nothing lost, nothing duplicated.
  assert sorted(train + [e.prompt for e in task.heldout]) == sorted(r["question"] for r in rows)

  smaller = gsm8k.make_task(
    path, seed=0, heldout_fraction=0.25, heldout_size=3, data_dir=tmp_path / "data"
  )
  assert [e.prompt for e in smaller.heldout] == [e.prompt for e in task.heldout][:3]
  with pytest.raises(ValueError, match="heldout_size"):
    gsm8k.make_task(path, seed=0, heldout_size=1000, data_dir=tmp_path / "data")


def test_hash_split_that_leaves_a_side_empty_raises(tmp_path):
  path = _write(tmp_path / "one.jsonl", [{"question": "Q", "answer": "#### 1"}])
  with pytest.raises(ValueError, match="one side is empty"):
    gsm8k.make_task(path, seed=0, data_dir=tmp_path / "data")


def test_edited_file_is_prepared_afresh(tmp_path):
  path = tmp_path / "train.jsonl"
  data_dir = tmp_path / "data"
  _write(path, _ROWS[:2])
  first = gsm8k.make_builder({"train": str(path)}, data_dir=data_dir)
  assert len(gsm8k.dataset(first, "train", seed=None)) == 2
  again = gsm8k.make_builder({"train": str(path)}, data_dir=data_dir)
  assert again.data_dir == first.data_dir  # Same contents: reused.
  _write(path, _ROWS[:3])
  edited = gsm8k.make_builder({"train": str(path)}, data_dir=data_dir)
  assert edited.data_dir != first.data_dir
  assert len(gsm8k.dataset(edited, "train", seed=None)) == 3


_GOOD = json.dumps(_ROWS[0])


@pytest.mark.parametrize(
  "bad_line, message",
  [
    ('{"question": "q", "answer": "#### 1"', "invalid JSON"),
    ('["q", "#### 1"]', "expected a JSON object"),
    ('{"question": "q"}', "missing key 'answer'"),
    ('{"answer": "#### 1"}', "missing key 'question'"),
    ('{"question": 3, "answer": "#### 1"}', "'question' must be a string"),
    ('{"question": "q", "answer": "it is 1"}', "has no '####'"),
    ('{"question": "q", "answer": "#### one"}', "is not a number"),
    ('{"question": "q", "answer": "#### 1 apple"}', "is not a number"),
    ('{"question": "q", "answer": "####"}', "is not a number"),
  ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad_line, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(f"{_GOOD}\n\n{_GOOD}\n{bad_line}\n{_GOOD}\n", encoding="utf-8")
  with pytest.raises(ValueError, match=message) as error:
    gsm8k.read_rows(path)
  assert str(error.value).startswith(f"{path}:4: ")
  data_dir = tmp_path / "data"
  with pytest.raises(ValueError, match=f"{path}:4: "):
    gsm8k.make_builder({"train": str(path)}, data_dir=data_dir)
  assert not (data_dir / "jsonl_builder").exists()  # Nothing half-written.


def test_invalid_utf8_names_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(_GOOD.encode() + b"\n" + b'{"question": "\xff", "answer": "#### 1"}\n')
  with pytest.raises(ValueError, match=f"{path}:2: not UTF-8"):
    gsm8k.read_rows(path)


def test_empty_file_and_missing_file(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n", encoding="utf-8")
  with pytest.raises(ValueError, match="no rows"):
    gsm8k.read_rows(empty)
  with pytest.raises(FileNotFoundError):
    gsm8k.make_builder({"train": str(tmp_path / "missing.jsonl")}, data_dir=tmp_path / "data")


def _with_long_row(tmp_path) -> tuple[str, str]:
  """Four rows, the third (line 3) with a 400-character question; returns (path, its source)."""
  rows = [dict(r) for r in _ROWS[:4]]
  rows[2] = {"question": "x" * 400, "answer": "#### 1"}
  path = _write(tmp_path / "train.jsonl", rows)
  return path, f"{path}:3"


def test_overlong_prompt_fails_preparation_with_file_and_line(tmp_path):
  path, source = _with_long_row(tmp_path)
  data_dir = tmp_path / "data"
  # len() as the token counter: the long prompt has 400 tokens, the others under 40.
  with pytest.raises(ValueError, match=rf"^{source}: the prompt is 400 tokens, more than .*=64"):
    gsm8k.make_builder({"train": path}, data_dir=data_dir, prompt_len=len, max_prompt_len=64)
  assert not data_dir.exists()  # Checked before tfds writes anything.


def test_skip_long_drops_and_counts_overlong_rows(tmp_path, caplog):
  path, source = _with_long_row(tmp_path)
  data_dir = tmp_path / "data"
  with caplog.at_level("WARNING"):
    builder = gsm8k.make_builder(
      {"train": path}, data_dir=data_dir, prompt_len=len, max_prompt_len=64, skip_long=True
    )
  kept = [_text(r["source"]) for r in builder.as_data_source("train")]
  assert kept == [f"{path}:{line}" for line in (1, 2, 4)]
  assert "dropped 1 rows" in caplog.text
  # A budget that fits every row prepares a separate copy with all four.
  full = gsm8k.make_builder(
    {"train": path}, data_dir=data_dir, prompt_len=len, max_prompt_len=400, skip_long=True
  )
  assert full.data_dir != builder.data_dir and len(full.as_data_source("train")) == 4


def test_run_config_checks_prompt_lengths_at_preparation(tmp_path):
  from configs import common
  from grpojax.rl import setup

  path, source = _with_long_row(tmp_path)
  config = common.base()
  config.task.data_path = path
  config.task.heldout_path = path
  config.task.heldout_size = 3
  with pytest.raises(ValueError, match=rf"^{source}: the prompt is 400 tokens.*skip_long"):
    setup.build_task(config.task, str(tmp_path / "data"), prompt_len=len, max_prompt_len=64)
  config.task.skip_long = True
  task = setup.build_task(config.task, str(tmp_path / "data"), prompt_len=len, max_prompt_len=64)
  assert len(task.heldout) == 3
  assert all(len(example.prompt) <= 64 for example in task.heldout)


def _text(value):
  return value.decode() if isinstance(value, bytes) else value
