"""Where each RL step's rollout comes from: made now, made k updates ago, or made in the background.

  pipeline.rollout(state, t) -> (Produced, state)   # the rollout RL step t trains on
  pipeline.published(state, t + 1)                  # after update t: the new policy is out
  pipeline.close()

Three modes (`config.rollout.pipeline.mode`):

- `sync`: step t samples with the current policy and trains on it (on-policy up to the
  sampler-trainer mismatch).
- `stale`: step t trains on rollouts sampled by the policy after update t - k (version
  max(t - k, 0)), k = `staleness`. The rollouts of the next k steps wait in a ring of k batches
  inside the checkpointed `DataState` (their logging metrics in the checkpoint's JSON), each made
  with the key and the prompts of the step it is for, so a run is reproducible and resumes bit
  for bit, and k = 0 is `sync` exactly. For experiments on staleness.
- `async`: a producer thread samples continuously with the most recently published policy while
  the trainer updates; every rollout carries the version that sampled it, and none older than
  `max_staleness` versions trains (`on_stale`: "drop" discards stale rollouts, "wait" holds the
  producer back until the trainer is close enough, so nothing is wasted). One process only.
  What is reproducible: the keys and the prompts of the n-th rollout; what is not: which
  version sampled it, which depends on timing. A resumed run restarts the producer from the
  data state of the last trained rollout (rollouts in flight are sampled again).

A stale rollout is corrected for the policy that sampled it: whenever rollouts can be stale, an
objective that neither reads the sampler's log-probs nor sets `objective.correction` gets
`pipeline.correction` (TIS by default; "none" turns it off) chained in front (see
`objective_config`), because asynchronous training without it collapses (arXiv 2602.10693,
arXiv 2602.17616).
"""

import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
from absl import logging

from grpojax import objectives
from grpojax.rl import step

MODES = ("sync", "stale", "async")
ON_STALE = ("drop", "wait")
CORRECTIONS = ("tis", "mis", "none")


class Produced(NamedTuple):
  """One rollout, ready to train on.

  Attributes:
    batch: the update's input.
    data: the data state after the prompts this rollout read.
    metrics: its generation-side metrics (host floats).
    version: the number of RL updates behind the policy that sampled it.
  """

  batch: step.Batch
  data: Any
  metrics: dict
  version: int = 0


# produce(params, data, index) -> Produced: the rollout of RL step `index`, sampled by the
# training-layout `params` (the caller converts them for the sampler), reading `data`.
Produce = Callable[[Any, Any, int], Produced]


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config.rollout.pipeline`; raises `objectives.ConfigError` naming the field."""
  pc = config.rollout.pipeline
  where = "config.rollout.pipeline"

  def require(ok, field, message):
    if not ok:
      raise objectives.ConfigError(f"{where}.{field}: {message}.")

  require(pc.mode in MODES, "mode", f"must be one of {MODES}, got {pc.mode!r}")
  require(pc.staleness >= 0, "staleness", f"must be >= 0, got {pc.staleness}")
  require(
    pc.mode == "stale" or pc.staleness == 0,
    "staleness",
    f"is read only by mode 'stale' (mode is {pc.mode!r}); set it to 0",
  )
  require(pc.max_staleness >= 0, "max_staleness", f"must be >= 0, got {pc.max_staleness}")
  require(pc.on_stale in ON_STALE, "on_stale", f"must be one of {ON_STALE}, got {pc.on_stale!r}")
  require(
    pc.correction in CORRECTIONS,
    "correction",
    f"must be one of {CORRECTIONS}, got {pc.correction!r}",
  )
  if pc.mode == "async":
    require(
      jax.process_count() == 1,
      "mode",
      f"'async' runs in one process (this run has {jax.process_count()}): every process "
      "would have to agree on which policy version sampled each rollout; use 'stale'",
    )
    require(
      config.curriculum.name == "sequential",
      "mode",
      f"'async' with curriculum.name={config.curriculum.name!r}: a learned curriculum scores "
      "prompts with the trainer's policy; use 'stale'",
    )


def can_be_stale(config: ml_collections.ConfigDict) -> bool:
  """Whether a rollout may have been sampled by an older policy than the one it trains."""
  pc = config.rollout.pipeline
  return (pc.mode == "stale" and pc.staleness > 0) or pc.mode == "async"


def objective_config(
  config: ml_collections.ConfigDict, reads_sampler_logprobs: bool
) -> ml_collections.ConfigDict:
  """`config.objective`, with `pipeline.correction` chained in front when rollouts can be stale
  and the objective has no correction of its own (it neither reads the sampler's log-probs, as
  OAPL, VCPO or VESPO with `include_sampler_ratio` do, nor sets `objective.correction`)."""
  pc = config.rollout.pipeline
  obj = config.objective
  has_own = reads_sampler_logprobs or obj.correction.name != "none"
  if not can_be_stale(config) or has_own or pc.correction == "none":
    return obj
  obj = ml_collections.ConfigDict(obj.to_dict())
  obj.correction = ml_collections.ConfigDict({"name": pc.correction})
  return obj


def staleness_metrics(version: int, current: int) -> dict[str, float]:
  return {"rollout/staleness": float(current - version), "rollout/policy_version": float(version)}


class Sync:
  """Each step samples with the current policy."""

  def __init__(self, produce: Produce):
    self._produce = produce
    self.histogram: dict[int, int] = {}

  def rollout(self, state: step.TrainState, t: int) -> tuple[Produced, step.TrainState]:
    out = self._produce(state.params, state.data, t)._replace(version=t)
    self.histogram[0] = self.histogram.get(0, 0) + 1
    return out, state._replace(data=out.data)

  def published(self, state, version: int) -> None:
    del state, version

  def checkpoint_extra(self) -> dict:
    return {}

  def restore(self, extra: dict) -> None:
    del extra

  def close(self) -> None:
    pass


def _write_slot(ring, slot, batch):
  return jax.tree.map(lambda r, x: r.at[slot].set(x), ring, batch)


def _read_slot(ring, slot):
  return jax.tree.map(lambda r: r[slot], ring)


class Stale:
  """Step t trains on the rollout sampled by version max(t - k, 0), from a ring of k batches.

  The ring (`DataState.pending`, slot s mod k holds the rollout of step s) and its metrics are
  checkpointed: at the end of step t the ring holds the rollouts of steps t + 1 .. t + k.
  """

  def __init__(self, produce: Produce, k: int, total_steps: int, batch_shardings):
    if k < 1:
      raise ValueError(f"staleness must be >= 1 for the ring, got {k}")
    self._produce, self.k, self._total = produce, k, total_steps
    self._metrics: list[dict | None] = [None] * k
    self.histogram: dict[int, int] = {}
    ring_sh = jax.tree.map(
      lambda s: jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(None, *s.spec)),
      batch_shardings,
    )
    self._write = jax.jit(_write_slot, out_shardings=ring_sh, donate_argnums=(0,))
    self._read = jax.jit(_read_slot, out_shardings=batch_shardings)

  def _push(self, params, data, s: int):
    """Samples the rollout of step s into its slot; returns the data state after it."""
    out = self._produce(params, data, s)
    slot = s % self.k
    ring = self._write(data.pending, slot, out.batch)
    self._metrics[slot] = dict(out.metrics)
    return out.data._replace(pending=ring)

  def rollout(self, state: step.TrainState, t: int) -> tuple[Produced, step.TrainState]:
    data = state.data
    if t == 0:  # the first k steps' rollouts, all from version 0
      for s in range(min(self.k, self._total)):
        data = self._push(state.params, data, s)
    slot = t % self.k
    if self._metrics[slot] is None:
      raise RuntimeError(
        f"no pending rollout for RL step {t}: the checkpoint's pending metrics are missing"
      )
    batch, metrics = self._read(data.pending, slot), self._metrics[slot]
    self._metrics[slot] = None
    if t + self.k < self._total:  # version t samples the rollout of step t + k
      data = self._push(state.params, data, t + self.k)
    version = max(t - self.k, 0)
    self.histogram[t - version] = self.histogram.get(t - version, 0) + 1
    return Produced(batch, data, metrics, version), state._replace(data=data)

  def published(self, state, version: int) -> None:
    del state, version

  def checkpoint_extra(self) -> dict:
    return {"pending_metrics": self._metrics}

  def restore(self, extra: dict) -> None:
    pending = extra.get("pending_metrics")
    if pending is not None:
      if len(pending) != self.k:
        raise ValueError(
          f"the checkpoint holds {len(pending)} pending rollouts, not "
          f"rollout.pipeline.staleness={self.k}: resume with the staleness it was written with"
        )
      self._metrics = [None if m is None else dict(m) for m in pending]

  def close(self) -> None:
    pass


@dataclasses.dataclass
class _Shared:
  """What the trainer and the producer thread share (under `lock`)."""

  params: Any
  version: int
  lock: threading.Condition = dataclasses.field(default_factory=threading.Condition)
  stop: bool = False
  error: BaseException | None = None


class Async:
  """A producer thread samples with the latest published policy; the trainer consumes.

  `publish` copies the parameters (the update donates its own), so the producer never holds a
  buffer the trainer frees. Rollout n uses the keys and prompts rollout n would have in `sync`.
  """

  def __init__(
    self,
    produce: Produce,
    *,
    max_staleness: int,
    on_stale: str,
    copy: Callable,
    join_timeout_s: float = 60.0,
  ):
    self._produce, self._k, self._on_stale = produce, max_staleness, on_stale
    self._copy, self._join_timeout_s = copy, join_timeout_s
    # The producer runs at most max_staleness + 1 rollouts ahead of the trainer.
    self._queue: queue.Queue = queue.Queue(maxsize=max_staleness + 1)
    self._shared: _Shared | None = None
    self._thread: threading.Thread | None = None
    self.dropped = 0
    self.histogram: dict[int, int] = {}

  def _start(self, state: step.TrainState, t: int) -> None:
    self._shared = _Shared(params=self._copy(state.params), version=t)
    data = self._copy(state.data)
    self._thread = threading.Thread(
      target=self._run, args=(data, t), name="rollout-producer", daemon=True
    )
    self._thread.start()

  def _run(self, data, n: int) -> None:
    shared = self._shared
    try:
      while True:  # until `close`; the bounded queue keeps it at most k + 1 rollouts ahead
        with shared.lock:
          if self._on_stale == "wait":  # sample n only once it would train within the bound
            shared.lock.wait_for(lambda n=n: shared.stop or shared.version >= n - self._k)
          if shared.stop:
            return
          params, version = shared.params, shared.version
        out = self._produce(params, data, n)._replace(version=version)
        data = out.data
        while not self._put(out):
          if shared.stop:
            return
        n += 1
    except BaseException as error:  # handed to the trainer, which raises it
      with shared.lock:
        shared.error = error
      self._put(None)

  def _put(self, item) -> bool:
    try:
      self._queue.put(item, timeout=0.1)
      return True
    except queue.Full:
      return False

  def rollout(self, state: step.TrainState, t: int) -> tuple[Produced, step.TrainState]:
    if self._thread is None:
      self._start(state, t)
    while True:
      item = self._queue.get()
      if item is None:
        error = self._shared.error
        raise RuntimeError(f"the rollout producer failed: {error!r}") from error
      staleness = t - item.version
      if staleness <= self._k:
        break
      self.dropped += 1  # only under "drop": "wait" never samples a rollout this stale
    self.histogram[staleness] = self.histogram.get(staleness, 0) + 1
    # The update donates the state: the trainer gets its own copy of the producer's data state.
    return item, state._replace(data=self._copy(item.data))

  def published(self, state: step.TrainState, version: int) -> None:
    if self._shared is None:
      return
    params = self._copy(state.params)
    with self._shared.lock:
      self._shared.params, self._shared.version = params, version
      self._shared.lock.notify_all()

  def checkpoint_extra(self) -> dict:
    return {}

  def restore(self, extra: dict) -> None:
    del extra

  def close(self) -> None:
    """Stops the producer and waits for it (a rollout in flight finishes first)."""
    if self._thread is None:
      return
    with self._shared.lock:
      self._shared.stop = True
      self._shared.lock.notify_all()
    while self._thread.is_alive():
      try:  # unblock a producer waiting to put
        while True:
          self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=0.1)
      self._join_timeout_s -= 0.1
      if self._join_timeout_s <= 0:
        logging.warning("the rollout producer did not stop; leaving it (a daemon thread)")
        break
    self._thread = None


def histogram_line(histogram: dict[int, int]) -> str:
  """'staleness of the trained rollouts: 0 x3, 4 x37' for the end-of-run summary."""
  parts = [f"{s} x{c}" for s, c in sorted(histogram.items())]
  return "staleness of the trained rollouts (updates behind): " + (", ".join(parts) or "none")


def build(config, produce: Produce, *, total_steps: int, batch_shardings, copy) -> Any:
  """The configured pipeline."""
  pc = config.rollout.pipeline
  if pc.mode == "async":
    return Async(
      produce,
      max_staleness=pc.max_staleness,
      on_stale=pc.on_stale,
      copy=copy,
    )
  if pc.mode == "stale" and pc.staleness > 0:
    return Stale(produce, pc.staleness, total_steps, batch_shardings)
  return Sync(produce)


def pending_ring_like(config, batch_like) -> Any:
  """The shapes of the ring of `staleness` batches a `stale` run keeps in `DataState.pending`
  (None otherwise); `batch_like` gives each field's shape and dtype."""
  pc = config.rollout.pipeline
  if pc.mode != "stale" or pc.staleness == 0:
    return None
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((pc.staleness, *x.shape), x.dtype), batch_like)
