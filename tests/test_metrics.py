"""Tests for grpojax/metrics.py.

TensorBoard event files are read back by hand: TFRecord framing (length, masked CRC-32C of the
length, payload, masked CRC-32C of the payload) around `Event` protos from `tensorboardX.proto`,
with the CRCs checked, since tensorboardX ships no reader and TensorBoard needs TensorFlow.
"""

import glob
import json
import logging
import math
import os
import struct
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2

from grpojax import metrics

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
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
      assert writer.history == [{"step": 0, "loss": 1.0}]
      writer.write_scalars(1, {"loss": 0.5})
  assert any("line 2" in r.getMessage() for r in caplog.records)
  assert metrics.read_history(path) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]


def test_write_scalars_rejects_non_scalars(tmp_path):
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
    writer.write_scalars(0, {"a": np.array([2.0]), "b": jnp.int32(3), "c": True})
    with pytest.raises(ValueError, match="'v' is not a scalar"):
      writer.write_scalars(1, {"v": jnp.ones(3)})
    assert writer.history == [{"step": 0, "a": 2.0, "b": 3.0, "c": 1.0}]


# ---------------------------------------------------------------------------------------------
# Console line, progress, timer.


def test_format_console_line_fixed_order_and_short_floats():
  logs = {"loss": 0.0123456, "reward": 0.5, "n": 3, "kl": 1.23456e-5, "big": 123456.7}
  line = metrics.format_console_line(12, logs, keys=["loss", "reward", "entropy", "n", "kl", "big"])
  # 4 significant digits; missing keys shown as "-" so the columns keep their order.
  assert (
    line == "step 12 | loss 0.01235 | reward 0.5 | entropy - | n 3 | kl 1.235e-05 | big 1.235e+05"
  )


def test_format_console_line_defaults_to_sorted_keys():
  line = metrics.format_console_line(3, {"b": jnp.float32(2.5), "a": float("nan"), "c": 1.0})
  assert line == "step 3 | a nan | b 2.5 | c 1"


def test_progress_is_quiet_unless_enabled(capsys):
  assert list(metrics.progress(range(5), "quiet", enabled=False)) == [0, 1, 2, 3, 4]
  # Under pytest stderr is not a terminal, so the default is quiet too.
  assert list(metrics.progress(iter(range(3)), "default")) == [0, 1, 2]
  assert capsys.readouterr().err == ""
  assert list(metrics.progress(range(3), "loud", enabled=True)) == [0, 1, 2]
  assert "loud" in capsys.readouterr().err


def test_timer_accumulates_phases():
  timer = metrics.Timer()
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
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
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

  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
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
  assert metrics.eta_line(15, 40, since=10, elapsed_s=10.0) == (
    "progress: step 15/40 (37%), 10s elapsed, ETA 50s"
  )
  assert metrics.eta_line(40, 40, since=0, elapsed_s=3725.0).endswith("1h02m05s elapsed, ETA 0s")
  assert metrics.format_duration(187.4) == "3m07s"
