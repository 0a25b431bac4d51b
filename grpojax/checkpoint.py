"""Checkpoints of the trainer's explicit state pytree, with orbax.

One checkpoint is one step directory `<directory>/<step>/` (the trainer uses
`<workdir>/checkpoints`) written by an `orbax.checkpoint.CheckpointManager`, holding three items:

  state/     the state pytree (params, optimiser and objective state, PRNG key, step), with
             typed PRNG keys stored as their raw `uint32` key data;
  extra/     a small JSON document (the data-loader position, for example);
  manifest/  JSON written by this module: per leaf its key path, shape, dtype, PRNG
             implementation and a CRC-32 of its bytes, plus a CRC-32 of `extra`.

Atomicity (orbax 0.12.8, verified by experiment): a save writes everything into
`<step>.orbax-checkpoint-tmp/`, writes `commit_success.txt` there last, then renames the
directory to `<step>/`. A save killed part-way (SIGKILL during the write) leaves only the tmp
directory, which `CheckpointManager` does not list as a step; a later save of the same step
replaces it. The rename is not followed by an fsync, so durability across a power cut is up to
the file system; the manifest checksums catch what that can leave behind.

Corruption: orbax detects a deleted or truncated array file and a missing or garbled `_METADATA`
or JSON file, but NOT a flipped byte inside a compressed array chunk (it restores wrong values
silently). The manifest's checksums close that gap. `restore_latest_good` walks back from the
newest step, moves each unreadable step directory aside to `<step>.corrupt` (never deleting
it; orbax ignores that name) with a warning naming the step and the reason, and returns the
newest good checkpoint, or None when there is none.

A checkpoint whose leaves do not match the restore target (a changed model or optimiser) is a
caller error, not corruption: it raises `CheckpointMismatchError` and nothing is moved.
"""

import contextlib
import fcntl
import json
import os
import shutil
import zlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

PyTree = Any

CORRUPT_SUFFIX = ".corrupt"
_TMP_MARKER = ".orbax-checkpoint-tmp"
_MANIFEST_FORMAT = 1


class CheckpointMismatchError(ValueError):
  """The checkpoint's leaves (paths, shapes, dtypes) differ from the restore target."""


class CorruptCheckpointError(RuntimeError):
  """The checkpoint was read but its contents fail the manifest's checks."""


class WorkdirLockedError(RuntimeError):
  """Another run holds the workdir's lock."""


class DiskSpaceError(OSError):
  """Too little free disk space to save a checkpoint."""


LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_workdir(workdir: str | os.PathLike):
  """Holds an exclusive lock on `workdir` (flock on `<workdir>/.lock`) for the `with` block.

  Two runs on one workdir would delete each other's checkpoints and write duplicate metric
  rows; the second one stops here instead. The lock is the kernel's: it ends with the process,
  however that ends, so a killed run never leaves the workdir locked.

  Raises:
    WorkdirLockedError: another process holds the lock (its pid is in the message).
  """
  path = os.path.join(os.fspath(workdir), LOCK_NAME)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      raise WorkdirLockedError(
        f"{os.fspath(workdir)} is in use by another run (pid {holder} holds {path}); wait for "
        "it to finish or choose another --workdir"
      ) from None
    try:
      f.truncate(0)
      f.write(f"{os.getpid()}\n")
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _dir_bytes(path: str) -> int:
  """Total size of the files under `path`."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      with contextlib.suppress(OSError):  # a file removed while we walk
        total += os.path.getsize(os.path.join(root, name))
  return total


def _gib(n: int) -> str:
  return f"{n / 2**30:.2f} GiB"


def check_free_space(directory: str, needed_bytes: int, *, step: int) -> None:
  """Raises DiskSpaceError unless `directory`'s file system has `needed_bytes` free.

  Args:
    directory: where the checkpoint would be written.
    needed_bytes: the space the save needs.
    step: the step being saved, for the message.
  """
  free = shutil.disk_usage(directory).free
  if free < needed_bytes:
    raise DiskSpaceError(
      f"step {step}: not enough disk space to save a checkpoint in {directory}: "
      f"{_gib(free)} free, {_gib(needed_bytes)} needed; free some space and rerun the same "
      "command to resume from the last checkpoint"
    )


class Restored(NamedTuple):
  """A restored (or freshly initialised) trainer state.

  Attributes:
    step: the checkpoint step, or None when the state was freshly initialised.
    state: the state pytree, structured exactly like the restore target.
    extra: the JSON document saved with the state.
  """

  step: int | None
  state: PyTree
  extra: dict


def _is_prng_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _keys_to_data(state: PyTree) -> PyTree:
  """Replaces typed PRNG key arrays by their raw `uint32` key data, which orbax can store."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_prng_key(x) else x, state)


def _abstract_leaf_to_data(leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
  """The abstract array orbax restores for one target leaf.

  A typed key becomes its key data (extra trailing dimensions, `uint32`); its sharding still
  applies because unnamed trailing dimensions are replicated. A leaf without a sharding is
  placed on the first local device rather than on the saved sharding, which may name devices
  this process does not have.
  """
  sharding = getattr(leaf, "sharding", None)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if _is_prng_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _crc32(x: Any) -> int | None:
  """CRC-32 of an array's bytes, or None when this process cannot see all of it."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return None
  flat = np.ascontiguousarray(np.asarray(jax.device_get(x))).reshape(-1)
  return zlib.crc32(flat.view(np.uint8))


def _json_crc32(doc: Any) -> int:
  return zlib.crc32(json.dumps(doc, sort_keys=True).encode())


def _describe(tree: PyTree) -> list[dict]:
  """Key path, shape and dtype of each leaf, in flattening order."""
  return [
    {"path": jax.tree_util.keystr(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def _make_manifest(state: PyTree, extra: dict, *, checksums: bool) -> dict:
  """The manifest item: leaf descriptions, PRNG implementations and checksums."""
  leaves = _describe(state)
  for entry, leaf in zip(leaves, jax.tree.leaves(state), strict=True):
    if _is_prng_key(leaf):
      entry["key_impl"] = str(jax.random.key_impl(leaf))
      leaf = jax.random.key_data(leaf)
    entry["crc32"] = _crc32(leaf) if checksums else None
  return {"format": _MANIFEST_FORMAT, "leaves": leaves, "extra_crc32": _json_crc32(extra)}


def _check_matches_target(manifest: dict, target: PyTree, step: int) -> None:
  """Raises CheckpointMismatchError if the saved leaves differ from the target's."""
  saved = [{k: e[k] for k in ("path", "shape", "dtype")} for e in manifest["leaves"]]
  wanted = _describe(target)
  if saved == wanted:
    return
  only_saved = [e for e in saved if e not in wanted]
  only_wanted = [e for e in wanted if e not in saved]
  raise CheckpointMismatchError(
    f"Checkpoint step {step} does not match the restore target: saved-only leaves "
    f"{only_saved[:3]}, target-only leaves {only_wanted[:3]} (showing at most 3 each)."
  )


def _verify(manifest: dict, data_leaves: list, extra: dict) -> None:
  """Raises CorruptCheckpointError if a restored leaf or `extra` fails its checksum."""
  if _json_crc32(extra) != manifest["extra_crc32"]:
    raise CorruptCheckpointError("checksum mismatch in the extra JSON")
  for entry, leaf in zip(manifest["leaves"], data_leaves, strict=True):
    if entry["crc32"] is None:
      continue
    actual = _crc32(leaf)  # None when restored across hosts: nothing to compare here.
    if actual is not None and actual != entry["crc32"]:
      raise CorruptCheckpointError(f"checksum mismatch in leaf {entry['path']}")


def _from_data(manifest: dict, target: PyTree, data_leaves: list) -> PyTree:
  """Rebuilds the target's exact pytree from restored leaves, re-wrapping PRNG keys."""
  target_leaves, treedef = jax.tree.flatten(target)
  leaves = []
  for entry, want, got in zip(manifest["leaves"], target_leaves, data_leaves, strict=True):
    if "key_impl" in entry:
      got = jax.random.wrap_key_data(got, impl=entry["key_impl"])
    if got.shape != want.shape or got.dtype != want.dtype:
      raise CorruptCheckpointError(
        f"leaf {entry['path']} restored as {got.dtype}{list(got.shape)}, "
        f"expected {want.dtype}{list(want.shape)}"
      )
    leaves.append(got)
  return jax.tree.unflatten(treedef, leaves)


class Checkpointer:
  """A thin wrapper over `orbax.checkpoint.CheckpointManager` for an explicit state pytree.

  Saves are asynchronous: `save` returns once the arrays are copied off the device (so the
  state may be donated right after), and `wait` blocks until the write is committed. Use as a
  context manager, or call `close`.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    max_to_keep: int | None = 3,
    save_interval_steps: int = 1,
    checksums: bool = True,
    min_free_bytes: int = 0,
  ):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      directory: where the step directories go, e.g. `<workdir>/checkpoints`; a directory of
        its own, so that other files stay out of orbax's way.
      max_to_keep: how many of the newest checkpoints to keep; None keeps all.
      save_interval_steps: `save` without `force` saves at multiples of this, and (orbax's
        policy) when the directory holds no checkpoint yet.
      checksums: record a CRC-32 of every leaf on save and check it on restore. It costs a
        synchronous device-to-host copy and a pass over the bytes (about 1 s per GB); leaves
        that span other hosts are never checksummed.
      min_free_bytes: `save` refuses to start (DiskSpaceError) unless the file system has free
        at least this much and the size of the newest checkpoint (of this process's share of
        the state when there is none yet): a save that runs out of space fails in the
        background, long after its step.
    """
    self.directory = os.path.abspath(os.fspath(directory))
    self._checksums = checksums
    self._min_free_bytes = int(min_free_bytes)
    self._closed = False
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        create=True,
      ),
    )
    for name in sorted(os.listdir(self.directory)):
      if _TMP_MARKER in name:
        logging.warning(
          "Ignoring %s in %s: an unfinished save (the process was killed or the save "
          "failed); orbax replaces it if that step is saved again.",
          name,
          self.directory,
        )

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
      return
    # Leaving on an error: still wait for the save in flight, so it is committed rather than
    # left as a tmp directory, but let the error that ends the run be the one reported.
    try:
      self.close()
    except Exception as e:  # noqa: BLE001
      logging.warning("A checkpoint save in flight failed too: %s: %s", type(e).__name__, e)

  def all_steps(self) -> list[int]:
    """Steps of the committed checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed step, or None when there is no checkpoint."""
    return self._manager.latest_step()

  def save(
    self, step: int, state: PyTree, extra_json: Mapping | None = None, *, force: bool = False
  ) -> bool:
    """Starts an asynchronous save of `state` and `extra_json` as checkpoint `step`.

    Args:
      step: the training step, used as the checkpoint's name.
      state: pytree of arrays; typed PRNG keys are allowed.
      extra_json: a small JSON-serialisable mapping, snapshotted now (tuples come back as
        lists).
      force: save even if `step` is not a multiple of `save_interval_steps`.

    Returns:
      Whether a save was started.

    Raises:
      DiskSpaceError: too little free space (see `min_free_bytes`); nothing was written.
    """
    step = int(step)
    if not force and not self._manager.should_save(step):
      return False
    check_free_space(self.directory, self._space_needed(state), step=step)
    extra = json.loads(json.dumps(dict(extra_json or {})))
    manifest = _make_manifest(state, extra, checksums=self._checksums)
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_keys_to_data(state)),
        extra=ocp.args.JsonSave(extra),
        manifest=ocp.args.JsonSave(manifest),
      ),
      force=force,
    )

  def restore(self, step: int | None = None, *, target: PyTree) -> tuple[PyTree, dict]:
    """Restores one checkpoint exactly into the structure of `target`.

    Args:
      step: the step to restore; None means the latest.
      target: the abstract state (`jax.eval_shape` of the init function), whose leaves'
        shardings say where the arrays go; leaves without one go to the first local device.

    Returns:
      `(state, extra_json)`: `state` has `target`'s pytree structure (NamedTuples included),
      shapes and dtypes, and bitwise the saved values.

    Raises:
      FileNotFoundError: there is no checkpoint.
      CheckpointMismatchError: the checkpoint's leaves differ from the target's.
      CorruptCheckpointError: a checksum or restored shape or dtype is wrong.
      Exception: whatever orbax raises on a damaged checkpoint.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"No checkpoint in {self.directory}")
    manifest = self._manager.restore(
      step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore())
    ).manifest
    if manifest.get("format") != _MANIFEST_FORMAT:
      raise CorruptCheckpointError(f"unknown manifest format {manifest.get('format')!r}")
    _check_matches_target(manifest, target, step)
    abstract_data = jax.tree.map(_abstract_leaf_to_data, target)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_data), extra=ocp.args.JsonRestore()
      ),
    )
    data_leaves = jax.tree.leaves(restored.state)
    if len(data_leaves) != len(manifest["leaves"]):
      raise CorruptCheckpointError(
        f"restored {len(data_leaves)} leaves, manifest lists {len(manifest['leaves'])}"
      )
    _verify(manifest, data_leaves, restored.extra)
    return _from_data(manifest, target, data_leaves), restored.extra

  def restore_latest_good(self, target: PyTree) -> Restored | None:
    """Restores the newest checkpoint that reads back intact, setting bad ones aside.

    Each newer checkpoint that fails to restore is renamed to `<step>.corrupt` (or
    `<step>.corrupt-<n>`) with a warning naming the step and the error, so that it is kept
    for inspection but no longer listed, and a resumed run can save that step again.

    Args:
      target: the abstract state, as for `restore`.

    Returns:
      The restored checkpoint, or None when there is none (with a warning when there were
      checkpoints but none was usable).

    Raises:
      CheckpointMismatchError: a readable checkpoint does not match `target`; nothing is
        moved, because the cause is the code or config, not the files.
    """
    self._manager.reload()
    steps = self.all_steps()
    if not steps:
      logging.info("No checkpoint in %s; starting from scratch.", self.directory)
      return None
    for step in reversed(steps):
      try:
        state, extra = self.restore(step, target=target)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # noqa: BLE001 - any failure to read a step makes it unusable.
        moved_to = self._set_aside(step)
        logging.warning(
          "Checkpoint step %d is unusable (%s: %s); moved it to %s and falling back to an "
          "older checkpoint.",
          step,
          type(e).__name__,
          str(e).splitlines()[0][:500] if str(e) else "",
          moved_to,
        )
        continue
      return Restored(step=step, state=state, extra=extra)
    logging.warning(
      "None of the checkpoints %s in %s is usable; starting from scratch.", steps, self.directory
    )
    return None

  def restore_or_init(
    self,
    init_fn: Callable[[], PyTree],
    *,
    target: PyTree | None = None,
    default_extra: Mapping | None = None,
  ) -> Restored:
    """Resumes from the newest good checkpoint, or initialises a fresh state.

    Args:
      init_fn: builds the initial state; only traced (`jax.eval_shape`) when resuming.
      target: the abstract state; defaults to `jax.eval_shape(init_fn)`.
      default_extra: the extra JSON of a fresh run.

    Returns:
      The restored checkpoint, or `Restored(step=None, state=init_fn(), extra=default_extra)`.
    """
    if target is None:
      target = jax.eval_shape(init_fn)
    restored = self.restore_latest_good(target)
    if restored is not None:
      return restored
    return Restored(step=None, state=init_fn(), extra=dict(default_extra or {}))

  def _space_needed(self, state: PyTree) -> int:
    """Bytes a save of `state` needs: the newest checkpoint's size, or the state's."""
    latest = self._manager.latest_step()
    size = 0 if latest is None else _dir_bytes(os.path.join(self.directory, str(latest)))
    if not size:  # no committed checkpoint yet
      size = sum(
        sum(s.data.nbytes for s in x.addressable_shards)
        if isinstance(x, jax.Array)
        else getattr(x, "nbytes", 0)
        for x in jax.tree.leaves(_keys_to_data(state))
      )
    return max(size, self._min_free_bytes)

  def wait(self) -> None:
    """Blocks until every started save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's resources (once; later calls do nothing)."""
    if not self._closed:
      self._closed = True
      self._manager.close()

  def _set_aside(self, step: int) -> str:
    """Renames step directory `step` to a free `<step>.corrupt*` name; returns the new path."""
    src = os.path.join(self.directory, str(step))
    dst = src + CORRUPT_SUFFIX
    n = 0
    while os.path.exists(dst):
      n += 1
      dst = f"{src}{CORRUPT_SUFFIX}-{n}"
    if jax.process_index() == 0 and os.path.exists(src):
      os.rename(src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"grpojax_set_aside_{step}")
    self._manager.reload()
    return dst
