"""Run tracking: metric writers and plots (the run's start records are in `run_records`, what it
prints in `console`).

`MetricWriter` is the one writer interface: every step's scalars go as one JSON line to
`<workdir>/metrics.jsonl` (always: the history a resumed run continues and `plot_curves` draws
from) and to the other writers `config.metrics.writers` selects: TensorBoard event files through
tensorboardX (no TensorFlow needed), a long-format `metrics.csv`, a Weights & Biases run. Write
metrics from one process only (`jax.process_index() == 0`).
"""

import csv
import importlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.figure
import numpy as np
from absl import logging
from matplotlib.backends import backend_agg

HISTORY_FILENAME = "metrics.jsonl"


def _to_float(name: str, value: Any) -> float:
  """A scalar (Python number, NumPy or JAX 0-d or size-1 array) as a float."""
  try:
    array = np.asarray(value)
    if array.size != 1:
      raise ValueError(f"size {array.size}")
    return float(array.reshape(()))
  except (TypeError, ValueError) as e:
    raise ValueError(f"Metric {name!r} is not a scalar: {value!r}") from e


def _tensorboardx():
  """tensorboardX, imported on first use and without torch.

  tensorboardX imports torch at module level only to accept torch tensors, which costs seconds
  at every start wherever torch is installed; these scalars are floats. Unless something else
  already loaded torch, it is hidden during that import (`import torch` then raises ImportError,
  which tensorboardX expects) and visible again right after.
  """
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None
    try:
      importlib.import_module("tensorboardX")
    finally:
      del sys.modules["torch"]
  return importlib.import_module("tensorboardX")


def read_history(path: str | os.PathLike) -> list[dict]:
  """Reads a JSONL metrics history, skipping lines that do not parse.

  A process killed mid-write can leave a partial last line; it is skipped with a warning.

  Args:
    path: the `metrics.jsonl` file; a missing file is an empty history.

  Returns:
    One dict per line, each with an integer "step" and float metrics, in file order.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        record["step"] = int(record["step"])
      except (ValueError, KeyError, TypeError) as e:
        logging.warning("Skipping unreadable line %d of %s: %s", lineno, path, e)
        continue
      records.append(record)
  return records


def _ends_with_newline(path: str) -> bool:
  """Whether the file at `path` is empty or ends with a newline."""
  with open(path, "rb") as f:
    if f.seek(0, os.SEEK_END) == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def _rewrite_history(path: str, records: Sequence[Mapping]) -> None:
  """Atomically replaces the JSONL file at `path` by `records`."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


WRITERS = ("tensorboard", "jsonl", "csv", "wandb")
CSV_FILENAME = "metrics.csv"
CSV_HEADER = ("step", "name", "value")
WANDB_ID_FILENAME = "wandb_run_id"


def writers_error(writers: Any) -> str | None:
  """Why `writers` (the `metrics.writers` config field) is not a valid selection, or None.

  A valid selection is a tuple of distinct names from `WRITERS` that includes "jsonl": the
  JSONL history is what a resumed run continues and `curves.png` is drawn from. "wandb" needs
  the optional `wandb` package (the `wandb` extra).
  """
  if isinstance(writers, str) or not isinstance(writers, Sequence):
    return f"must be a tuple of writer names from {WRITERS}, got {writers!r}"
  unknown = [w for w in writers if w not in WRITERS]
  if unknown:
    # A flag `--config.metrics.writers=tensorboard,csv` arrives as one name with commas.
    names = tuple(n.strip() for n in unknown[0].split(","))
    hint = f'; on the command line, a tuple: "{names!r}"' if len(names) > 1 else ""
    return f"unknown writer {unknown[0]!r} (expected some of {', '.join(WRITERS)}){hint}"
  if len(set(writers)) != len(writers):
    return f"names a writer twice: {tuple(writers)}"
  if "jsonl" not in writers:
    return "must include 'jsonl' (the history a resumed run continues and curves.png shows)"
  if "wandb" in writers and importlib.util.find_spec("wandb") is None:
    return "'wandb' needs the wandb package: pip install 'grpojax[wandb]'"
  return None


class _TensorBoardSink:
  """Scalars as TensorBoard event files in the workdir (tensorboardX, no TensorFlow)."""

  def __init__(self, workdir: str, purge_step: int | None):
    # tensorboardX names event files by the second and opens them with "wb": without a unique
    # suffix, a writer reopened within the same second would erase the previous one's events.
    self._tb = _tensorboardx().SummaryWriter(
      logdir=workdir,
      purge_step=purge_step,
      flush_secs=30,
      filename_suffix=f".{os.getpid()}.{time.time_ns()}",
    )
    self.where = f"TensorBoard events in {workdir}"

  def write(self, step: int, values: Mapping[str, float]) -> None:
    for name, value in values.items():
      self._tb.add_scalar(name, value, global_step=step)

  def flush(self) -> None:
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()


def _drop_partial_last_line(path: str) -> None:
  """Truncates `path` after its last newline: a row cut short by a crash is not data."""
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      cut = data.rfind(b"\n") + 1
      logging.warning("Dropping a partial last line of %s: %r", path, data[cut:])
      f.truncate(cut)


def read_csv_history(path: str | os.PathLike) -> list[tuple[int, str, float]]:
  """The (step, name, value) rows of a CSV history written by the "csv" writer."""
  if not os.path.exists(path):
    return []
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  if rows and tuple(rows[0]) != CSV_HEADER:
    raise ValueError(f"{path}:1: header {rows[0]} is not {list(CSV_HEADER)}")
  return [(int(step), name, float(value)) for step, name, value in rows[1:]]


class _CsvSink:
  """Scalars in long format, one `step,name,value` row each, in `<workdir>/metrics.csv`.

  Long, not wide: the header never changes when a later step brings a new metric (an
  evaluation, a phase's own metrics), so the file is only ever appended to, as the JSONL
  history is. `pandas.read_csv(path).pivot(index="step", columns="name", values="value")` gives
  the wide table.
  """

  def __init__(self, workdir: str, purge_step: int | None):
    self.path = os.path.join(workdir, CSV_FILENAME)
    if os.path.exists(self.path):
      _drop_partial_last_line(self.path)
      rows = read_csv_history(self.path)  # checks the header before anything is appended
      if purge_step is not None and any(step >= purge_step for step, _, _ in rows):
        kept = [r for r in rows if r[0] < purge_step]
        _atomic_write(self.path, _csv_text([CSV_HEADER, *kept]))
    else:
      _atomic_write(self.path, _csv_text([CSV_HEADER]))
    # O_APPEND and one write() per step, as for the JSONL history.
    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
    self.where = self.path

  def write(self, step: int, values: Mapping[str, float]) -> None:
    os.write(self._fd, _csv_text([(step, n, v) for n, v in values.items()]).encode("utf-8"))

  def flush(self) -> None:
    os.fsync(self._fd)

  def close(self) -> None:
    os.close(self._fd)


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
  out = io.StringIO()
  csv.writer(out, lineterminator="\n").writerows(rows)
  return out.getvalue()


def _atomic_write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class _WandbSink:
  """Scalars to a Weights & Biases run (`WANDB_MODE=offline` keeps it on disk).

  The run's id is kept in `<workdir>/wandb_run_id`, so a resumed run continues the same W&B run.
  W&B cannot take back what a crashed run logged after its last checkpoint: the resumed run's
  repeated steps are dropped by W&B (steps must increase); the JSONL and CSV histories are
  purged of them.
  """

  def __init__(self, workdir: str, *, project: str, name: str, config: Mapping | None):
    wandb = importlib.import_module("wandb")  # the optional `wandb` extra
    id_path = os.path.join(workdir, WANDB_ID_FILENAME)
    if os.path.exists(id_path):
      with open(id_path, encoding="utf-8") as f:
        run_id = f.read().strip()
    else:
      run_id = secrets.token_hex(6)  # W&B run ids: lowercase letters and digits
      _atomic_write(id_path, run_id + "\n")
    self._run = wandb.init(
      project=project,
      name=name or os.path.basename(os.path.normpath(workdir)),
      id=run_id,
      resume="allow",
      dir=workdir,
      config=dict(config or {}),
    )
    self.where = f"W&B run {run_id} ({self._run.dir})"

  def write(self, step: int, values: Mapping[str, float]) -> None:
    self._run.log(dict(values), step=step)

  def flush(self) -> None:
    pass  # W&B's own process streams the records

  def close(self) -> None:
    self._run.finish()


class MetricWriter:
  """Writes scalar metrics to an append-only JSONL history and to the other selected writers.

  Writers (`writers`, from `config.metrics.writers`): "jsonl" (`<workdir>/metrics.jsonl`,
  always), "tensorboard" (event files in the workdir), "csv" (`<workdir>/metrics.csv`, long
  format) and "wandb" (a Weights & Biases run; the optional `wandb` extra).

  On opening an existing workdir the earlier history is loaded, so a resumed run keeps it. Pass
  `purge_step`, the first step the resumed run will log (checkpoint step + 1 if a step's
  metrics are written before its checkpoint), to drop what the crashed run logged after its
  last checkpoint; TensorBoard hides those events too.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    purge_step: int | None = None,
    writers: Sequence[str] = ("tensorboard", "jsonl"),
    wandb_project: str = "grpojax",
    wandb_name: str = "",
    run_config: Mapping | None = None,
  ):
    """Opens the writers.

    Args:
      workdir: directory for the files; created if missing.
      purge_step: drop history entries with `step >= purge_step`.
      writers: names from `WRITERS`; must include "jsonl".
      wandb_project: the W&B project ("wandb" writer).
      wandb_name: the W&B run's display name; "" = the workdir's base name.
      run_config: the run's config as a dict, attached to the W&B run.

    Raises:
      ValueError: a bad `writers` selection (see `writers_error`).
    """
    error = writers_error(writers)
    if error:
      raise ValueError(f"writers {error}")
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.history_path = os.path.join(self.workdir, HISTORY_FILENAME)
    self._history = read_history(self.history_path)
    if purge_step is not None:
      kept = [r for r in self._history if r["step"] < purge_step]
      if len(kept) != len(self._history):
        _rewrite_history(self.history_path, kept)
      self._history = kept
    # O_APPEND: each record is one write() at the end of the file, so a crash can at worst
    # truncate the last line (which `read_history` skips), never interleave two records.
    self._fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if not _ends_with_newline(self.history_path):
      os.write(self._fd, b"\n")  # Seal a partial last line so the next record starts clean.
    self._sinks = []
    try:
      for name in writers:
        if name == "tensorboard":
          self._sinks.append(_TensorBoardSink(self.workdir, purge_step))
        elif name == "csv":
          self._sinks.append(_CsvSink(self.workdir, purge_step))
        elif name == "wandb":
          sink = _WandbSink(self.workdir, project=wandb_project, name=wandb_name, config=run_config)
          self._sinks.append(sink)
    except BaseException:
      self.close()  # the writers opened so far, and the history
      raise

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def history(self) -> list[dict]:
    """All records so far (earlier runs included), oldest first; a copy."""
    return [dict(r) for r in self._history]

  @property
  def destinations(self) -> list[str]:
    """Where the metrics go, one phrase per writer (the JSONL history first)."""
    return [self.history_path] + [sink.where for sink in self._sinks]

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Records one step's scalars in every writer.

    Args:
      step: the training step.
      scalars: metric name -> scalar (Python number or 0-d/size-1 array). Non-finite values
        are kept (as NaN/Infinity in the JSONL file, nan/inf in the CSV file).
    """
    values = {name: _to_float(name, value) for name, value in scalars.items()}
    record = {"step": int(step), **values}
    line = json.dumps(record) + "\n"
    os.write(self._fd, line.encode("utf-8"))
    self._history.append(record)
    for sink in self._sinks:
      sink.write(int(step), values)

  def flush(self) -> None:
    """Pushes buffered records of every writer to disk."""
    for sink in self._sinks:
      sink.flush()
    os.fsync(self._fd)

  def close(self) -> None:
    """Flushes and closes every writer; further writes are errors."""
    if self._fd is None:
      return
    self.flush()
    for sink in self._sinks:
      sink.close()
    os.close(self._fd)
    self._fd = None
    self._sinks = []


class NullWriter:
  """A `MetricWriter` that writes nothing: what every process but the first holds."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _series(records: Iterable[Mapping], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of one metric, later records winning on a repeated step, sorted by step."""
  by_step = {r["step"]: r[key] for r in records if key in r}
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def plot_curves(
  history_jsonl_path: str | os.PathLike,
  out_png: str | os.PathLike,
  keys: Sequence[str],
  *,
  title: str | None = None,
  markers: Mapping[str, float] | None = None,
) -> list[str]:
  """Draws one subplot per metric against step into a PNG, without a display.

  Keys absent from the history get an empty subplot saying so; non-finite values leave gaps.

  Args:
    history_jsonl_path: a `metrics.jsonl` file written by `MetricWriter`.
    out_png: where to write the PNG (atomically: a temporary file, then a rename).
    keys: the metrics to draw, one subplot each, top to bottom.
    title: optional figure title.
    markers: label -> step, drawn as a labelled vertical line on every subplot (the warm-start
      -> RL boundary, for example).

  Returns:
    The keys that had data.
  """
  records = read_history(history_jsonl_path)
  # Figure + FigureCanvasAgg, not pyplot: no global figure state and no GUI backend.
  fig = matplotlib.figure.Figure(figsize=(7, 2.2 * max(len(keys), 1)), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(max(len(keys), 1), 1, sharex=True, squeeze=False)[:, 0]
  plotted = []
  for ax, key in zip(axes, keys, strict=False):
    steps, values = _series(records, key)
    values = [v if math.isfinite(v) else math.nan for v in values]
    ax.set_ylabel(key)
    ax.grid(True, alpha=0.3)
    if steps:
      ax.plot(steps, values, linewidth=1.2)
      plotted.append(key)
    else:
      ax.text(0.5, 0.5, f"no data for {key!r}", ha="center", va="center", transform=ax.transAxes)
  for i, (label, at) in enumerate((markers or {}).items()):
    for ax in axes:
      ax.axvline(at, color=f"C{i + 1}", linestyle="--", linewidth=1.0, label=label)
  if markers:
    axes[0].legend(loc="best", fontsize="small")
  axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  out_png = os.fspath(out_png)
  tmp = out_png + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, out_png)
  return plotted
