"""Tests for grpojax/metrics.py.

TensorBoard event files are read back by hand: TFRecord framing (length, masked CRC-32C of the
length, payload, masked CRC-32C of the payload) around `Event` protos from `tensorboardX.proto`,
with the CRCs checked, since tensorboardX ships no reader and TensorBoard needs TensorFlow.
"""

import csv
import glob
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2

import grpojax
from grpojax import console, metrics, run_records

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_tfrecords(path):
  """Payloads of a TFRecord file, checking both CRCs of every record."""
  records = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      assert struct.unpack("<I", header[8:])[0] == record_writer.masked_crc32c(header[:8])
      payload = f.read(length)
      (crc,) = struct.unpack("<I", f.read(4))
      assert crc == record_writer.masked_crc32c(payload)
      records.append(payload)
  return records


def _scalar_events(workdir):
  """(tag, step, value) of every scalar summary in the workdir's event files."""
  found = []
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for payload in _read_tfrecords(path):
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        found.append((value.tag, event.step, value.simple_value))
  return found


# ---------------------------------------------------------------------------------------------
# MetricWriter.


def test_tensorboard_events_read_back(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {"loss": 0.5, "reward/mean": jnp.float32(0.25)})
    writer.write_scalars(2, {"loss": np.float64(0.125)})
  events = _scalar_events(tmp_path)
  # 0.5, 0.25 and 0.125 are exact in float32, the proto's simple_value type.
  assert sorted(events) == [("loss", 1, 0.5), ("loss", 2, 0.125), ("reward/mean", 1, 0.25)]


def test_no_torch_is_imported_for_metrics(tmp_path):
  """tensorboardX probes for torch at import, seconds at every start where torch is installed:
  `grpojax.metrics` loads tensorboardX only for a writer, and keeps torch out of it."""
  code = (
    "import importlib.util, sys\n"
    "from grpojax import metrics\n"
    "names = {'tensorboardX', 'torch'}\n"
    "print(sorted(names & set(sys.modules)))\n"
    f"with metrics.MetricWriter({str(tmp_path)!r}) as w:\n"
    "  w.write_scalars(1, {'loss': 0.5})\n"
    "print(sorted(names & set(sys.modules)))\n"
    "if importlib.util.find_spec('torch'):\n"
    "  import torch  # hidden only while tensorboardX loaded\n"
    "  print(torch.tensor([1.5]).sum().item())\n"
  )
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
  )
  lines = out.stdout.split("\n")
  assert lines[:2] == ["[]", "['tensorboardX']"], out.stdout
  assert _scalar_events(tmp_path) == [("loss", 1, 0.5)]


def test_history_survives_reopen_and_appends(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {"loss": 1.0, "reward": 0.1})
    writer.write_scalars(1, {"loss": 0.75})
  with metrics.MetricWriter(tmp_path) as writer:
    # The resumed writer starts with the earlier history in memory...
    assert writer.history == [{"step": 0, "loss": 1.0, "reward": 0.1}, {"step": 1, "loss": 0.75}]
    writer.write_scalars(2, {"loss": 0.5, "kl": float("nan")})
    assert [r["step"] for r in writer.history] == [0, 1, 2]
  # ...and appends to the file, one JSON object per line.
  path = os.path.join(tmp_path, metrics.HISTORY_FILENAME)
  lines = open(path).read().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]
  last = metrics.read_history(path)[-1]
  assert last["loss"] == 0.5 and math.isnan(last["kl"])
  # Two runs, two event files (even within one second); TensorBoard reads them together.
  assert len(glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))) == 2
  assert sorted((step, tag) for tag, step, _ in _scalar_events(tmp_path)) == [
    (0, "loss"),
    (0, "reward"),
    (1, "loss"),
    (2, "kl"),
    (2, "loss"),
  ]


def test_purge_step_drops_entries_logged_after_the_checkpoint(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    for step in range(5):
      writer.write_scalars(step, {"loss": float(step)})
  # Resuming from a checkpoint at step 3: entries 3 and 4 will be logged again.
  with metrics.MetricWriter(tmp_path, purge_step=3) as writer:
    assert [r["step"] for r in writer.history] == [0, 1, 2]
    writer.write_scalars(3, {"loss": 30.0})
  history = metrics.read_history(os.path.join(tmp_path, metrics.HISTORY_FILENAME))
  assert [(r["step"], r["loss"]) for r in history] == [(0, 0), (1, 1), (2, 2), (3, 30)]
  # The event-file side: tensorboardX writes the SessionLog.START at step 3 that tells
  # TensorBoard to hide the first run's events from step 3 on.
  starts = [
    event.step
    for path in glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))
    for event in map(event_pb2.Event.FromString, _read_tfrecords(path))
    if event.session_log.status == event_pb2.SessionLog.START
  ]
  assert starts == [3]


def test_partial_last_line_is_skipped_and_sealed(tmp_path, caplog):
  path = os.path.join(tmp_path, metrics.HISTORY_FILENAME)
  with open(path, "w") as f:
    f.write('{"step": 0, "loss": 1.0}\n{"step": 1, "lo')  # A write cut short by a crash.
  with caplog.at_level(logging.WARNING):
    with metrics.MetricWriter(tmp_path, writers=("jsonl",)) as writer:
      assert writer.history == [{"step": 0, "loss": 1.0}]
      writer.write_scalars(1, {"loss": 0.5})
  assert any("line 2" in r.getMessage() for r in caplog.records)
  assert metrics.read_history(path) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]


def test_write_scalars_rejects_non_scalars(tmp_path):
  with metrics.MetricWriter(tmp_path, writers=("jsonl",)) as writer:
    writer.write_scalars(0, {"a": np.array([2.0]), "b": jnp.int32(3), "c": True})
    with pytest.raises(ValueError, match="'v' is not a scalar"):
      writer.write_scalars(1, {"v": jnp.ones(3)})
    assert writer.history == [{"step": 0, "a": 2.0, "b": 3.0, "c": 1.0}]


# ---------------------------------------------------------------------------------------------
# Writer selection, CSV, W&B.


def _csv_rows(workdir):
  with open(os.path.join(workdir, metrics.CSV_FILENAME), newline="") as f:
    return list(csv.reader(f))


def test_writers_select_the_files(tmp_path):
  only_csv, only_tb = tmp_path / "csv", tmp_path / "tb"
  with metrics.MetricWriter(only_csv, writers=("jsonl", "csv")) as writer:
    writer.write_scalars(1, {"loss": 0.5})
    assert writer.destinations == [
      os.path.join(only_csv, metrics.HISTORY_FILENAME),
      os.path.join(only_csv, metrics.CSV_FILENAME),
    ]
  with metrics.MetricWriter(only_tb) as writer:  # the default: tensorboard and jsonl
    writer.write_scalars(1, {"loss": 0.5})
  assert sorted(os.listdir(only_csv)) == ["metrics.csv", "metrics.jsonl"]
  assert not glob.glob(os.path.join(only_csv, "events.out.tfevents.*"))
  assert metrics.CSV_FILENAME not in os.listdir(only_tb)
  assert _scalar_events(only_tb) == [("loss", 1, 0.5)]


def test_csv_rows_read_back_with_a_stable_header(tmp_path):
  with metrics.MetricWriter(tmp_path, writers=("jsonl", "csv")) as writer:
    writer.write_scalars(1, {"loss": 0.5, "reward/mean": jnp.float32(0.25)})
    # A metric first seen at step 2 is new rows, not a new column: the header stays.
    writer.write_scalars(2, {"loss": np.float64(0.125), "eval/pass@4": 1, "kl": float("nan")})
  rows = _csv_rows(tmp_path)
  assert rows[0] == ["step", "name", "value"]
  assert rows[1:5] == [
    ["1", "loss", "0.5"],
    ["1", "reward/mean", "0.25"],
    ["2", "loss", "0.125"],
    ["2", "eval/pass@4", "1.0"],
  ]
  assert rows[5][:2] == ["2", "kl"] and math.isnan(float(rows[5][2]))
  assert len(rows) == 6
  parsed = metrics.read_csv_history(os.path.join(tmp_path, metrics.CSV_FILENAME))
  assert parsed[:4] == [
    (1, "loss", 0.5),
    (1, "reward/mean", 0.25),
    (2, "loss", 0.125),
    (2, "eval/pass@4", 1.0),
  ]


def test_csv_resume_purges_later_steps_and_a_partial_row(tmp_path):
  with metrics.MetricWriter(tmp_path, writers=("jsonl", "csv")) as writer:
    for step in range(5):
      writer.write_scalars(step, {"loss": float(step)})
  path = os.path.join(tmp_path, metrics.CSV_FILENAME)
  with open(path, "a") as f:
    f.write("5,lo")  # a row cut short by a crash
  with metrics.MetricWriter(tmp_path, purge_step=3, writers=("jsonl", "csv")) as writer:
    writer.write_scalars(3, {"loss": 30.0})
  assert _csv_rows(tmp_path) == [
    ["step", "name", "value"],
    ["0", "loss", "0.0"],
    ["1", "loss", "1.0"],
    ["2", "loss", "2.0"],
    ["3", "loss", "30.0"],
  ]


def test_csv_with_another_header_is_refused_untouched(tmp_path):
  path = os.path.join(tmp_path, metrics.CSV_FILENAME)
  with open(path, "w") as f:
    f.write("step,loss\n1,0.5\n")
  with pytest.raises(ValueError, match=r"metrics\.csv:1: header \['step', 'loss'\]"):
    metrics.MetricWriter(tmp_path, writers=("jsonl", "csv"))
  assert open(path).read() == "step,loss\n1,0.5\n"


@pytest.mark.parametrize(
  "writers, message",
  [
    (("tensorbord", "jsonl"), "unknown writer 'tensorbord'"),
    (("jsonl, csv",), "on the command line, a tuple: \"('jsonl', 'csv')\""),  # a comma list
    ("jsonl", "must be a tuple of writer names"),  # a string, not a tuple of one
    (("jsonl", "csv", "jsonl"), "names a writer twice"),
    (("tensorboard", "csv"), "must include 'jsonl'"),
  ],
)
def test_bad_writer_selection_is_refused_before_any_file(tmp_path, writers, message):
  assert message in metrics.writers_error(writers)
  with pytest.raises(ValueError, match=re.escape(message)):
    metrics.MetricWriter(tmp_path / "run", writers=writers)
  assert not (tmp_path / "run").exists()


def test_wandb_needs_its_package(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *a: None if name == "wandb" else real_find_spec(name, *a),
  )
  assert "pip install 'grpojax[wandb]'" in metrics.writers_error(("jsonl", "wandb"))
  assert metrics.writers_error(("jsonl", "csv", "tensorboard")) is None


def _wandb_records(path):
  """The `Record` protos of an offline W&B run file: a 7-byte file header (`:W&B`, magic,
  version), then LevelDB log framing (32 KiB blocks; chunks of crc32, length, type: 1 full,
  2 first, 3 middle, 4 last), as W&B writes it."""
  from wandb.proto import wandb_internal_pb2

  data = open(path, "rb").read()
  assert data[:4] == b":W&B"
  pos, chunks = 7, []
  while pos + 7 <= len(data):
    if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
      pos += 32768 - pos % 32768
      continue
    _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
    if pos + 7 + length > len(data):  # a chunk still being written
      break
    chunks.append(data[pos + 7 : pos + 7 + length])
    pos += 7 + length
    if kind in (1, 4):
      yield wandb_internal_pb2.Record.FromString(b"".join(chunks))
      chunks = []


def _wandb_logged(run_dir):
  """({step: {metric: value}}, {config key: value}) logged in one offline run directory."""
  (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
  # W&B's service process writes the file on its own time: `finish()` can return first.
  deadline = time.monotonic() + 60
  while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(path)):
    assert time.monotonic() < deadline, f"{path}: no exit record after 60 s"
    time.sleep(0.1)
  history, config = {}, {}

  def key(item):  # W&B writes a name as `key` or as the path `nested_key`
    return item.key or "/".join(item.nested_key)

  for record in _wandb_records(path):
    kind = record.WhichOneof("record_type")
    if kind == "history":
      items = {key(i): json.loads(i.value_json) for i in record.history.item}
      history[items["_step"]] = {k: v for k, v in items.items() if not k.startswith("_")}
    elif kind in ("run", "config"):
      update = record.run.config.update if kind == "run" else record.config.update
      config.update({key(i): json.loads(i.value_json) for i in update if key(i) != "_wandb"})
  return history, config


def test_wandb_offline_run_is_written_and_resumed(tmp_path, monkeypatch):
  pytest.importorskip("wandb", reason="the optional wandb extra is not installed")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  config = {"seed": 3, "optim": {"learning_rate": 0.5}}
  with metrics.MetricWriter(tmp_path, writers=("jsonl", "wandb"), run_config=config) as writer:
    writer.write_scalars(1, {"loss": 0.5})
    writer.write_scalars(2, {"loss": 0.25, "reward/mean": jnp.float32(0.75)})
  run_id = open(os.path.join(tmp_path, metrics.WANDB_ID_FILENAME)).read().strip()
  (first,) = glob.glob(os.path.join(tmp_path, "wandb", f"offline-run-*-{run_id}"))
  history, logged_config = _wandb_logged(first)
  assert history == {1: {"loss": 0.5}, 2: {"loss": 0.25, "reward/mean": 0.75}}
  assert logged_config == config
  with metrics.MetricWriter(tmp_path, writers=("jsonl", "wandb")) as writer:  # a resume
    writer.write_scalars(3, {"loss": 0.125})
  # The same W&B run id, continued: a second offline directory of the same run.
  assert open(os.path.join(tmp_path, metrics.WANDB_ID_FILENAME)).read().strip() == run_id
  runs = glob.glob(os.path.join(tmp_path, "wandb", f"offline-run-*-{run_id}"))
  (second,) = set(runs) - {first}
  assert _wandb_logged(second)[0] == {3: {"loss": 0.125}}


# ---------------------------------------------------------------------------------------------
# Run info.


class _Config:
  """Stands in for a ConfigDict: `record_run_start` needs only `to_json_best_effort`."""

  def __init__(self, d):
    self.d = d

  def to_json_best_effort(self, **kwargs):
    return json.dumps(self.d, **kwargs)


def _git(cwd, *args):
  return subprocess.run(
    ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()


def test_run_info_is_appended_per_start(tmp_path):
  config = ml_collections.ConfigDict({"seed": 1, "metrics": {"writers": ("tensorboard", "jsonl")}})
  first = run_records.record_run_start(tmp_path, config, start_step=0)
  config.seed = 2  # a resume with a changed config keeps the first start's record
  run_records.record_run_start(tmp_path, config, start_step=4)
  records = run_records.read_run_info(tmp_path)
  assert records[0] == first
  assert [r["start_step"] for r in records] == [0, 4]
  assert [r["config"] for r in records] == [
    {"seed": 1, "metrics": {"writers": ["tensorboard", "jsonl"]}},
    {"seed": 2, "metrics": {"writers": ["tensorboard", "jsonl"]}},
  ]
  assert first["grpojax_version"] == grpojax.__version__
  assert first["versions"]["jax"] == importlib.metadata.version("jax")
  assert first["argv"] == sys.argv
  # This tree's commit when it is a git checkout (the package directly under its top level).
  package_dir = os.path.dirname(os.path.abspath(grpojax.__file__))
  try:
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    head = _git(package_dir, "rev-parse", "HEAD")
  except (OSError, subprocess.CalledProcessError):
    top = head = None
  if top and os.path.realpath(top) == os.path.dirname(os.path.realpath(package_dir)):
    assert first["git_commit"] == head and isinstance(first["git_dirty"], bool)
  else:
    assert (first["git_commit"], first["git_dirty"]) == ("unknown", None)


def test_git_state_of_a_checkout_and_elsewhere(tmp_path):
  if shutil.which("git") is None:
    pytest.skip("git is not installed")
  repo, package = tmp_path / "repo", tmp_path / "repo" / "pkg"
  package.mkdir(parents=True)
  (package / "a.py").write_text("x = 1\n")
  _git(repo, "init", "-q")
  _git(repo, "add", ".")
  _git(repo, "commit", "-q", "-m", "first")
  head = _git(repo, "rev-parse", "HEAD")
  assert run_records.git_state(package) == (head, False)
  (package / "a.py").write_text("x = 2\n")  # a modified tracked file
  assert run_records.git_state(package) == (head, True)
  # Not the package's own checkout: a copy nested deeper in a repository, or no repository.
  (package / "sub").mkdir()
  assert run_records.git_state(package / "sub") == ("unknown", None)
  (tmp_path / "plain").mkdir()
  assert run_records.git_state(tmp_path / "plain") == ("unknown", None)


def test_run_info_seals_a_partial_line(tmp_path):
  with open(os.path.join(tmp_path, run_records.RUN_INFO_FILENAME), "w") as f:
    f.write('{"start_step": 0, "conf')  # a write cut short by a crash
  run_records.record_run_start(tmp_path, _Config({"seed": 0}), start_step=2)
  records = run_records.read_run_info(tmp_path)
  assert [(r["start_step"], r["config"]) for r in records] == [(2, {"seed": 0})]


# ---------------------------------------------------------------------------------------------
# Console line, progress, timer.


def test_format_console_line_fixed_order_and_short_floats():
  logs = {"loss": 0.0123456, "reward": 0.5, "n": 3, "kl": 1.23456e-5, "big": 123456.7}
  line = console.format_console_line(12, logs, keys=["loss", "reward", "entropy", "n", "kl", "big"])
  # 4 significant digits; missing keys shown as "-" so the columns keep their order.
  assert (
    line == "step 12 | loss 0.01235 | reward 0.5 | entropy - | n 3 | kl 1.235e-05 | big 1.235e+05"
  )


def test_format_console_line_defaults_to_sorted_keys():
  line = console.format_console_line(3, {"b": jnp.float32(2.5), "a": float("nan"), "c": 1.0})
  assert line == "step 3 | a nan | b 2.5 | c 1"


def test_progress_is_quiet_unless_enabled(capsys):
  assert list(console.progress(range(5), "quiet", enabled=False)) == [0, 1, 2, 3, 4]
  # Under pytest stderr is not a terminal, so the default is quiet too.
  assert list(console.progress(iter(range(3)), "default")) == [0, 1, 2]
  assert capsys.readouterr().err == ""
  assert list(console.progress(range(3), "loud", enabled=True)) == [0, 1, 2]
  assert "loud" in capsys.readouterr().err


def test_timer_accumulates_phases():
  timer = console.Timer()
  for _ in range(2):
    with timer.phase("sample"):
      time.sleep(0.01)
  with pytest.raises(RuntimeError):
    with timer.phase("learn"):
      raise RuntimeError("recorded anyway")
  assert set(timer.durations) == {"sample", "learn"}
  assert timer.durations["sample"] >= 0.02
  assert set(timer.as_metrics()) == {"time/sample", "time/learn"}
  timer.reset()
  assert timer.durations == {}


# ---------------------------------------------------------------------------------------------
# Plot.


def test_plot_curves_writes_png_and_tolerates_missing_keys(tmp_path):
  with metrics.MetricWriter(tmp_path, writers=("jsonl",)) as writer:
    for step in range(20):
      writer.write_scalars(step, {"loss": 1.0 / (step + 1), "reward/mean": step / 20})
    writer.write_scalars(20, {"loss": float("inf")})  # Drawn as a gap, not an error.
  out = os.path.join(tmp_path, "curves.png")
  plotted = metrics.plot_curves(
    writer.history_path, out, keys=["loss", "reward/mean", "eval/accuracy"], title="run"
  )
  assert plotted == ["loss", "reward/mean"]
  data = open(out, "rb").read()
  assert data[:8] == _PNG_MAGIC
  assert len(data) > 10_000
  # IHDR: width and height of a 7 x 6.6 inch figure at 100 dpi.
  width, height = struct.unpack(">II", data[16:24])
  assert (width, height) == (700, 660)
  assert not glob.glob(os.path.join(tmp_path, "*.tmp*"))


def test_plot_curves_without_history(tmp_path):
  out = os.path.join(tmp_path, "empty.png")
  assert metrics.plot_curves(os.path.join(tmp_path, "missing.jsonl"), out, keys=["loss"]) == []
  assert open(out, "rb").read(8) == _PNG_MAGIC


def test_plot_curves_marks_the_phase_boundary(tmp_path):
  import matplotlib.image

  with metrics.MetricWriter(tmp_path, writers=("jsonl",)) as writer:
    for step in range(1, 21):
      writer.write_scalars(step, {"loss": 1.0 / step})
  plain, marked = os.path.join(tmp_path, "plain.png"), os.path.join(tmp_path, "marked.png")
  metrics.plot_curves(writer.history_path, plain, keys=["loss"])
  metrics.plot_curves(writer.history_path, marked, keys=["loss"], markers={"RL starts": 10})

  def orange_pixels(path):  # the marker's colour, C1 = #ff7f0e; the curve is C0 (blue)
    rgb = matplotlib.image.imread(path)[..., :3]
    return int(np.sum(np.all(np.abs(rgb - [1.0, 0.498, 0.055]) < 0.05, axis=-1)))

  assert orange_pixels(plain) == 0
  assert orange_pixels(marked) > 100  # a dashed line across the subplot and its legend entry


def test_eta_line_extrapolates_this_process_mean_step_time():
  # Resumed at step 10, 5 steps in 10 s -> 2 s a step; 25 steps left -> 50 s.
  assert console.eta_line(15, 40, since=10, elapsed_s=10.0) == (
    "progress: step 15/40 (37%), 10s elapsed, ETA 50s"
  )
  assert console.eta_line(40, 40, since=0, elapsed_s=3725.0).endswith("1h02m05s elapsed, ETA 0s")
  assert console.format_duration(187.4) == "3m07s"
