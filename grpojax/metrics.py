"""Training metrics: TensorBoard events, a JSONL history, console lines, progress, timing, plots.

`MetricWriter` writes each scalar twice: to TensorBoard event files through tensorboardX (no
TensorFlow needed) and as one JSON line per step to `<workdir>/metrics.jsonl`. The JSONL file is
the history a resumed run continues and `plot_curves` draws from. Write metrics from one
process only (`jax.process_index() == 0`).
"""

import contextlib
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib.figure
import numpy as np
import tqdm
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


class MetricWriter:
  """Writes scalar metrics to TensorBoard and to an append-only JSONL history.

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
    tensorboard: bool = True,
  ):
    """Opens the writers.

    Args:
      workdir: directory for the event files and `metrics.jsonl`; created if missing.
      purge_step: drop history entries with `step >= purge_step`.
      tensorboard: also write TensorBoard event files.
    """
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.history_path = os.path.join(self.workdir, HISTORY_FILENAME)
    self._history = read_history(self.history_path)
    if purge_step is not None:
      kept = [r for r in self._history if r["step"] < purge_step]
      if len(kept) != len(self._history):
        _rewrite_history(self.history_path, kept)
      self._history = kept
    # tensorboardX names event files by the second and opens them with "wb": without a unique
    # suffix, a writer reopened within the same second would erase the previous one's events.
    self._tb = (
      _tensorboardx().SummaryWriter(
        logdir=self.workdir,
        purge_step=purge_step,
        flush_secs=30,
        filename_suffix=f".{os.getpid()}.{time.time_ns()}",
      )
      if tensorboard
      else None
    )
    # O_APPEND: each record is one write() at the end of the file, so a crash can at worst
    # truncate the last line (which `read_history` skips), never interleave two records.
    self._fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if not _ends_with_newline(self.history_path):
      os.write(self._fd, b"\n")  # Seal a partial last line so the next record starts clean.

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def history(self) -> list[dict]:
    """All records so far (earlier runs included), oldest first; a copy."""
    return [dict(r) for r in self._history]

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Records one step's scalars.

    Args:
      step: the training step.
      scalars: metric name -> scalar (Python number or 0-d/size-1 array). Non-finite values
        are kept (as NaN/Infinity in the JSONL file).
    """
    values = {name: _to_float(name, value) for name, value in scalars.items()}
    record = {"step": int(step), **values}
    line = json.dumps(record) + "\n"
    os.write(self._fd, line.encode("utf-8"))
    self._history.append(record)
    if self._tb is not None:
      for name, value in values.items():
        self._tb.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    """Pushes buffered events and the JSONL history to disk."""
    if self._tb is not None:
      self._tb.flush()
    os.fsync(self._fd)

  def close(self) -> None:
    """Flushes and closes; further writes are errors."""
    if self._fd is None:
      return
    self.flush()
    if self._tb is not None:
      self._tb.close()
    os.close(self._fd)
    self._fd = None


class NullWriter:
  """A `MetricWriter` that writes nothing: what every process but the first holds."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _format_value(value: Any) -> str:
  if isinstance(value, bool | str):
    return str(value)
  if isinstance(value, int):
    return str(value)
  try:
    value = float(value)
  except (TypeError, ValueError):
    return str(value)
  if value.is_integer() and abs(value) < 1e6:
    return str(int(value))
  return f"{value:.4g}"


def format_console_line(
  step: int, metrics: Mapping[str, Any], keys: Sequence[str] | None = None
) -> str:
  """A compact one-line summary, e.g. `step 120 | loss 0.01234 | reward 0.5 | kl -`.

  Args:
    step: the training step.
    metrics: name -> value; arrays must be scalars.
    keys: names to show, in this order (missing ones shown as "-"); None shows all, sorted.

  Returns:
    The line, floats to 4 significant digits.
  """
  names = sorted(metrics) if keys is None else keys
  parts = [f"step {int(step)}"]
  parts += [f"{k} {_format_value(metrics[k]) if k in metrics else '-'}" for k in names]
  return " | ".join(parts)


def progress(
  iterable: Iterable,
  desc: str,
  *,
  total: int | None = None,
  enabled: bool | None = None,
) -> Iterable:
  """Wraps `iterable` in a tqdm progress bar on stderr.

  Args:
    iterable: what to iterate over.
    desc: label shown before the bar.
    total: number of items, when `iterable` has no length.
    enabled: True or False forces the bar on or off; None shows it only when stderr is a
      terminal, so logs and CI output stay clean.

  Returns:
    An iterable yielding the same items.
  """
  if enabled is None:
    enabled = sys.stderr.isatty()
  return tqdm.tqdm(
    iterable, desc=desc, total=total, disable=not enabled, leave=False, dynamic_ncols=True
  )


def format_duration(seconds: float) -> str:
  """`1h02m05s`, `3m07s` or `42s` (rounded to the second)."""
  total = max(int(round(seconds)), 0)
  hours, rest = divmod(total, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{secs:02d}s"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_line(done: int, total: int, *, since: int, elapsed_s: float) -> str:
  """A progress line for logs where no progress bar shows (stderr not a terminal).

  Args:
    done: steps finished.
    total: steps in the run.
    since: the step this process started at (a resumed run's earlier steps took no time here).
    elapsed_s: seconds since then.

  Returns:
    `progress: step 12/40 (30%), 0m24s elapsed, ETA 0m56s` (the ETA at this process's mean
    step time so far).
  """
  ran = max(done - since, 1)
  eta = elapsed_s / ran * max(total - done, 0)
  percent = 100 * done // max(total, 1)
  return (
    f"progress: step {done}/{total} ({percent}%), {format_duration(elapsed_s)} elapsed, "
    f"ETA {format_duration(eta)}"
  )


class Timer:
  """Accumulates wall-clock seconds per named phase.

  JAX dispatches asynchronously: block on the phase's outputs (`jax.block_until_ready`) inside
  the `with` block, or the time lands in whichever later phase first waits for them.

  Example:
    timer = Timer()
    with timer.phase("sample"):
      completions = jax.block_until_ready(sample(...))
    writer.write_scalars(step, timer.as_metrics())
    timer.reset()
  """

  def __init__(self):
    self.durations: dict[str, float] = {}

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    """Context manager adding the time spent inside it to `durations[name]`."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self.durations[name] = self.durations.get(name, 0.0) + time.perf_counter() - start

  def as_metrics(self, prefix: str = "time/") -> dict[str, float]:
    """The durations as metrics named `<prefix><phase>`."""
    return {prefix + name: seconds for name, seconds in self.durations.items()}

  def reset(self) -> None:
    """Forgets all durations."""
    self.durations.clear()


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
