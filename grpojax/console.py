"""What a run prints: compact metric lines, a progress bar on terminals, ETA lines for logs,
and per-phase timing."""

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import tqdm


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
