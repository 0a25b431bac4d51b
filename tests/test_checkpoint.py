"""Tests for grpojax/checkpoint.py.

The state mimics the trainer's: a NamedTuple holding bf16 and f32 params, the NamedTuple state
of `optax.adamw(...).init(params)` with non-zero moments, an objective state NamedTuple holding
NaN and -0.0 (so equality must be bitwise, not numeric), a typed PRNG key, an int32 step and a
None field. Damage is done to copies of checkpoints written once per module, to keep the file
fast.
"""

import functools
import gc
import glob
import logging
import os
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpojax import checkpoint

_TMP_SUFFIX = ".orbax-checkpoint-tmp"


class _ObjectiveState(NamedTuple):
  kl_coef: jax.Array
  reward_stats: jax.Array


class _TrainState(NamedTuple):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  objective: _ObjectiveState
  rng: jax.Array
  ref_params: dict | None


def _random(rng, shape, dtype):
  # NumPy, not jax.random: no per-op compilation, which dominated this file's run time.
  return jnp.asarray((rng.standard_normal(shape) * 3).astype(dtype))


def _build_state(step: int) -> _TrainState:
  """A trainer-like state whose every leaf depends on `step`; traceable."""
  rng = np.random.default_rng(step)
  params = {
    "embed": _random(rng, (16, 8), jnp.bfloat16),
    # 64 x 64 random f32: big enough for its own data chunk file in the checkpoint.
    "dense": {
      "kernel": _random(rng, (64, 64), np.float32),
      "bias": _random(rng, (64,), np.float32),
    },
  }
  # Real adamw state (NamedTuples, an int32 count), filled with non-zero moments.
  opt_state = optax.adamw(1e-3).init(params)
  opt_state = jax.tree.map(lambda x: _random(rng, x.shape, x.dtype), opt_state)
  objective = _ObjectiveState(
    kl_coef=jnp.float32(0.05 * step),
    reward_stats=jnp.array([np.nan, -0.0, step], jnp.float32),
  )
  return _TrainState(
    step=jnp.asarray(step, jnp.int32),
    params=params,
    opt_state=opt_state,
    objective=objective,
    rng=jax.random.wrap_key_data(np.array([1234, step], np.uint32), impl="threefry2x32"),
    ref_params=None,
  )


# Cached for speed (arrays are immutable); never call it under a trace, or tracers leak.
_make_state = functools.cache(_build_state)


def _target():
  return jax.eval_shape(lambda: _build_state(0))


def _bits(leaf):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf).tobytes()


def _assert_bitwise_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  actual_leaves = jax.tree_util.tree_flatten_with_path(actual)[0]
  expected_leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
  for (path, a), (_, e) in zip(actual_leaves, expected_leaves, strict=True):
    name = jax.tree_util.keystr(path)
    assert a.dtype == e.dtype, name
    assert a.shape == e.shape, name
    assert _bits(a) == _bits(e), name


def _extra(step):
  return {"epoch": step // 2, "index": 100 * step, "shuffle_seed": 7, "files": ["a", "b"]}


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
  """A directory with checkpoints 1, 2, 3 (closed), made once per module."""
  ckpt_dir = tmp_path_factory.mktemp("template")
  with checkpoint.Checkpointer(ckpt_dir, max_to_keep=5) as ckpt:
    for step in (1, 2, 3):
      assert ckpt.save(step, _make_state(step), _extra(step))
  return ckpt_dir


@pytest.fixture
def ckpt_dir(saved_runs, tmp_path):
  """A private copy of the template checkpoint directory."""
  dst = tmp_path / "run"
  shutil.copytree(saved_runs, dst)
  return dst


def _step_dir(ckpt_dir, step):
  return os.path.join(ckpt_dir, str(step))


# ---------------------------------------------------------------------------------------------
# Round trip.


def test_round_trip_is_bitwise(ckpt_dir):
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.all_steps() == [1, 2, 3]
    assert ckpt.latest_step() == 3
    state, extra = ckpt.restore(target=_target())
    state2, extra2 = ckpt.restore(2, target=_target())
  expected = _make_state(3)
  _assert_bitwise_equal(state, expected)
  _assert_bitwise_equal(state2, _make_state(2))
  assert extra == _extra(3) and extra2 == _extra(2)
  # Structure, not just leaves: the NamedTuple types survive.
  assert type(state) is _TrainState and state.ref_params is None
  assert type(state.objective) is _ObjectiveState
  assert type(state.opt_state[0]) is optax.ScaleByAdamState
  assert state.params["embed"].dtype == jnp.bfloat16
  assert state.step.dtype == jnp.int32 and int(state.step) == 3
  assert state.rng.dtype == expected.rng.dtype
  assert jax.random.key_impl(state.rng) == jax.random.key_impl(expected.rng)
  # The restored key draws the same numbers.
  np.testing.assert_array_equal(
    jax.random.uniform(state.rng, (4,)), jax.random.uniform(expected.rng, (4,))
  )


def test_save_is_visible_only_after_commit_and_snapshots_extra(tmp_path):
  extra = {"index": 1}
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(5, _make_state(5), extra)
    extra["index"] = 999  # Mutating after save must not change what is written.
    ckpt.wait()
    names = os.listdir(ckpt.directory)
    assert names == ["5"], names  # Committed: renamed, no tmp directory left.
    assert os.path.exists(os.path.join(ckpt.directory, "5", "commit_success.txt"))
    _, restored_extra = ckpt.restore(5, target=_target())
  assert restored_extra == {"index": 1}


def test_arrays_may_be_donated_once_save_returns(tmp_path):
  # The trainer donates its state to the next step right after `save`; on CPU donation is a
  # no-op, so delete the buffers outright.
  state = _build_state(6)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(6, state, {})
    for leaf in jax.tree.leaves(state):
      leaf.delete()
    ckpt.wait()
    restored, _ = ckpt.restore(6, target=_target())
  _assert_bitwise_equal(restored, _make_state(6))


def test_max_to_keep_and_save_interval(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2) as ckpt:
    state = _make_state(0)
    saved = [ckpt.save(step, state, {}) for step in range(1, 9)]
    # Interval 2: even steps, plus orbax's initial save into an empty directory.
    assert saved == [True, True, False, True, False, True, False, True]
    assert ckpt.save(9, state, {}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [8, 9]
  assert sorted(os.listdir(tmp_path)) == ["8", "9"]


def test_restore_or_init_fresh_then_resume(tmp_path):
  calls = []

  def init_fn():
    calls.append(1)
    return _build_state(0)

  with checkpoint.Checkpointer(tmp_path) as ckpt:
    fresh = ckpt.restore_or_init(init_fn, default_extra={"index": 0})
    assert fresh.step is None and fresh.extra == {"index": 0}
    _assert_bitwise_equal(fresh.state, _make_state(0))
    ckpt.save(4, _make_state(4), {"index": 40})
  calls.clear()
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    resumed = ckpt.restore_or_init(init_fn)
  assert calls == []  # Resuming only traces init_fn (eval_shape), never runs it.
  assert resumed.step == 4 and resumed.extra == {"index": 40}
  _assert_bitwise_equal(resumed.state, _make_state(4))


def test_restore_without_checkpoint_raises(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError):
      ckpt.restore(target=_target())


def test_mismatched_target_raises_and_moves_nothing(ckpt_dir):
  target = _target()
  target.params["embed"] = jax.ShapeDtypeStruct((32, 8), jnp.bfloat16)
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatchError, match="embed"):
      ckpt.restore_latest_good(target)
    assert ckpt.all_steps() == [1, 2, 3]
  assert sorted(os.listdir(ckpt_dir)) == ["1", "2", "3"]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints.


def _largest_file(directory):
  """The biggest file under `directory`: the data chunk of the 64 x 64 kernel."""
  files = glob.glob(os.path.join(directory, "**"), recursive=True)
  return max((p for p in files if os.path.isfile(p)), key=os.path.getsize)


def _state_dir(step_dir):
  return os.path.join(step_dir, "state")


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_byte(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01
  with open(path, "wb") as f:
    f.write(bytes(data))


def _garble(path):
  with open(path, "w") as f:
    f.write('{"truncated": ')


_DAMAGE = {
  # Orbax itself notices these.
  "delete_array_file": lambda d: os.remove(_largest_file(_state_dir(d))),
  "truncate_array_file": lambda d: _truncate(_largest_file(_state_dir(d))),
  "delete_btree_node": lambda d: [
    os.remove(p) for p in glob.glob(os.path.join(d, "state", "d", "*"))
  ],
  "delete_state_metadata": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
  "garble_state_metadata": lambda d: _garble(os.path.join(d, "state", "_METADATA")),
  "garble_extra_json": lambda d: _garble(os.path.join(d, "extra", "metadata")),
  "delete_manifest": lambda d: shutil.rmtree(os.path.join(d, "manifest")),
  "empty_step_dir": lambda d: [shutil.rmtree(d), os.mkdir(d)],
  # Orbax restores wrong values silently here; only the manifest checksum catches it.
  "flip_byte_in_array_file": lambda d: _flip_byte(_largest_file(_state_dir(d))),
}


@pytest.fixture
def _collect_abandoned_reads():
  """Garbage-collects what orbax leaves behind after a failed read, within the test.

  A failed restore abandons tensorstore callbacks and un-awaited read coroutines; their
  "Event loop is closed" / "never awaited" messages are noise, ignored by the marker below
  as long as they surface here rather than in whichever later test the collector runs in.
  """
  yield
  gc.collect()


def _damaged(test_fn):
  test_fn = pytest.mark.usefixtures("_collect_abandoned_reads")(test_fn)
  return pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(test_fn)


@_damaged
@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_corrupt_latest_falls_back_to_previous(ckpt_dir, damage, caplog):
  _DAMAGE[damage](_step_dir(ckpt_dir, 3))
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    with caplog.at_level(logging.WARNING):
      restored = ckpt.restore_latest_good(_target())
    assert restored.step == 2
    _assert_bitwise_equal(restored.state, _make_state(2))
    assert restored.extra == _extra(2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step 3" in m and "3.corrupt" in m for m in warnings), warnings
    # Set aside, not deleted; no longer listed, so the resumed run can save step 3 again.
    assert not os.path.exists(_step_dir(ckpt_dir, 3))
    assert os.path.isdir(_step_dir(ckpt_dir, 3) + ".corrupt")
    assert ckpt.all_steps() == [1, 2]
    assert ckpt.save(3, _make_state(3), _extra(3))
    ckpt.wait()
    state, _ = ckpt.restore(3, target=_target())
  _assert_bitwise_equal(state, _make_state(3))


def test_checksum_is_what_catches_a_flipped_byte(ckpt_dir):
  """Without checksums a flipped byte in a data chunk restores silently to wrong values."""
  _flip_byte(_largest_file(_state_dir(_step_dir(ckpt_dir, 3))))
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum mismatch in leaf"):
      ckpt.restore(3, target=_target())


@_damaged
def test_second_corruption_of_same_step_gets_a_new_name(ckpt_dir):
  os.mkdir(_step_dir(ckpt_dir, 3) + ".corrupt")
  _DAMAGE["delete_state_metadata"](_step_dir(ckpt_dir, 3))
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.restore_latest_good(_target()).step == 2
  assert os.path.isdir(_step_dir(ckpt_dir, 3) + ".corrupt-1")


@_damaged
def test_no_good_checkpoint_returns_none_and_restore_or_init_starts_fresh(ckpt_dir, caplog):
  for step in (1, 2, 3):
    _DAMAGE["garble_state_metadata"](_step_dir(ckpt_dir, step))
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    with caplog.at_level(logging.WARNING):
      resumed = ckpt.restore_or_init(lambda: _build_state(0))
  assert resumed.step is None and resumed.extra == {}
  _assert_bitwise_equal(resumed.state, _make_state(0))
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  for step in (1, 2, 3):
    assert any(f"step {step} is unusable" in m for m in warnings), warnings
  assert any("starting from scratch" in m for m in warnings), warnings
  names = sorted(os.listdir(ckpt_dir))
  assert names == ["1.corrupt", "2.corrupt", "3.corrupt"]


def test_leftover_tmp_dir_from_killed_save_is_ignored(ckpt_dir, caplog):
  # What a SIGKILL during the save of step 4 leaves (observed): the step's tmp directory holding
  # step metadata and the unfinished item directory, and no commit_success.txt.
  tmp_dir = _step_dir(ckpt_dir, 4) + _TMP_SUFFIX
  os.mkdir(tmp_dir)
  shutil.copy(os.path.join(_step_dir(ckpt_dir, 3), "_CHECKPOINT_METADATA"), tmp_dir)
  shutil.copytree(
    os.path.join(_step_dir(ckpt_dir, 3), "state"), os.path.join(tmp_dir, "state" + _TMP_SUFFIX)
  )
  os.remove(_largest_file(os.path.join(tmp_dir, "state" + _TMP_SUFFIX)))
  with caplog.at_level(logging.WARNING):
    ckpt = checkpoint.Checkpointer(ckpt_dir)
  with ckpt:
    assert any("4" + _TMP_SUFFIX in r.getMessage() for r in caplog.records)
    assert ckpt.all_steps() == [1, 2, 3]
    restored = ckpt.restore_latest_good(_target())
    assert restored.step == 3
    _assert_bitwise_equal(restored.state, _make_state(3))
    # Saving step 4 again replaces the leftover.
    assert ckpt.save(4, _make_state(4), _extra(4))
    ckpt.wait()
    assert not os.path.exists(tmp_dir)
    state, extra = ckpt.restore(4, target=_target())
  _assert_bitwise_equal(state, _make_state(4))
  assert extra == _extra(4)


def test_second_lock_on_a_workdir_is_refused(tmp_path):
  with checkpoint.lock_workdir(tmp_path):
    with pytest.raises(checkpoint.WorkdirLockedError, match=f"pid {os.getpid()} holds"):
      with checkpoint.lock_workdir(tmp_path):
        pass
  with checkpoint.lock_workdir(tmp_path):  # released at the end of the first run
    pass


def test_save_refused_without_free_space_for_the_last_checkpoint(tmp_path, monkeypatch):
  state = _build_state(1)
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, state, force=True)
    ckpt.wait()
    size = sum(
      os.path.getsize(os.path.join(root, f))
      for root, _, files in os.walk(tmp_path / "ckpt" / "1")
      for f in files
    )
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
      shutil, "disk_usage", lambda path: usage._replace(free=size - 1)
    )  # one byte short of what the newest checkpoint took
    with pytest.raises(checkpoint.DiskSpaceError, match=r"step 2: not enough disk space"):
      ckpt.save(2, state, force=True)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=size))
    assert ckpt.save(2, state, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
  assert not glob.glob(str(tmp_path / "ckpt" / f"*{_TMP_SUFFIX}"))


def test_first_save_and_minimum_free_space(tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
  with checkpoint.Checkpointer(tmp_path / "a", min_free_bytes=11 * 2**20) as ckpt:
    with pytest.raises(checkpoint.DiskSpaceError, match="0.01 GiB free, 0.01 GiB needed"):
      ckpt.save(1, _build_state(1), force=True)
    assert ckpt.all_steps() == []
  # No checkpoint yet: the state's own bytes (about 50 KB here) must fit.
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
  with checkpoint.Checkpointer(tmp_path / "b") as ckpt:
    with pytest.raises(checkpoint.DiskSpaceError):
      ckpt.save(1, _build_state(1), force=True)


def test_leaving_on_an_error_waits_for_the_save_in_flight(tmp_path):
  with pytest.raises(FloatingPointError):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
      ckpt.save(1, _build_state(1), force=True)
      raise FloatingPointError("diverged")
  assert sorted(os.listdir(tmp_path)) == ["1"]  # committed, no tmp directory left
