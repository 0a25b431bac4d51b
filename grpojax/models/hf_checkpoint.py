"""Hugging Face checkpoint directories in and out: `config.json` plus safetensors, without torch.

Loading is all-or-nothing: every tensor name, shape and file is checked before any parameter is
built, and each error names the tensor or file at fault. Saving writes into a fresh sibling
directory and renames it into place, so a crash never leaves a half-written checkpoint and an
existing one is replaced only when asked.
"""

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from grpojax import precision as precision_lib
from grpojax.models import build, transformer
from grpojax.models import config as config_lib
from grpojax.models import heads as heads_lib

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tensors real checkpoints carry that the model does not need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_name(path: tuple[Any, ...]) -> tuple[str, bool]:
  """Maps a parameter path of `transformer.Decoder` to its Hugging Face tensor name.

  Returns:
    (name, transposed): `transposed` is True for dense kernels, which grpojax stores [in, out]
    and torch's Linear stores [out, in].
  """
  parts = [str(p) for p in path]
  leaf = parts[-1]
  prefix = [] if parts[0] == "lm_head" else ["model"]
  if leaf == "kernel":
    return ".".join(prefix + parts[:-1] + ["weight"]), True
  if leaf in ("scale", "embedding"):
    return ".".join(prefix + parts[:-1] + ["weight"]), False
  return ".".join(prefix + parts), False


def _checkpoint_files(checkpoint_dir: str) -> dict[str, str]:
  """Tensor name -> safetensors file path, from the index or the single file."""
  index_path = os.path.join(checkpoint_dir, INDEX_FILE)
  single_path = os.path.join(checkpoint_dir, SINGLE_FILE)
  if os.path.exists(index_path):
    try:
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{index_path}: unreadable safetensors index ({e!r})") from e
    return {name: os.path.join(checkpoint_dir, fname) for name, fname in weight_map.items()}
  if not os.path.exists(single_path):
    raise FileNotFoundError(
      f"{checkpoint_dir}: no {SINGLE_FILE} or {INDEX_FILE} found (only safetensors checkpoints "
      "are supported)"
    )
  return {name: single_path for name in _tensor_names(single_path)}


def _tensor_names(path: str) -> list[str]:
  try:
    with safetensors.safe_open(path, framework="numpy") as f:
      return list(f.keys())
  except FileNotFoundError:
    raise FileNotFoundError(f"safetensors file not found: {path}") from None
  except Exception as e:  # safetensors raises its own error types for corrupt headers.
    raise ValueError(f"{path}: unreadable safetensors file ({e})") from e


def _read_tensors(files: dict[str, str], wanted: set[str]) -> dict[str, np.ndarray]:
  """Reads the wanted tensors, opening each file once and naming it on failure."""
  by_file: dict[str, list[str]] = {}
  for name in sorted(wanted):
    by_file.setdefault(files[name], []).append(name)
  out = {}
  for path, names in by_file.items():
    try:
      with safetensors.safe_open(path, framework="numpy") as f:
        present = set(f.keys())
        for name in names:
          if name not in present:
            raise ValueError(f"{path}: index lists tensor {name!r} but the file lacks it")
          out[name] = f.get_tensor(name)
    except FileNotFoundError:
      raise FileNotFoundError(f"safetensors file not found: {path}") from None
    except ValueError:
      raise
    except Exception as e:
      raise ValueError(f"{path}: unreadable safetensors file ({e})") from e
  return out


def abstract_pretrained(
  checkpoint_dir: str,
  *,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  precision: precision_lib.PrecisionPolicy = transformer.DEFAULT_PRECISION,
  remat: str = "none",
  activation_sharding=None,
  heads: heads_lib.HeadsConfig = transformer.NO_HEADS,
) -> transformer.Decoder:
  """The policy `from_pretrained` would build, with shapes and dtypes only: reads
  `config.json` alone and allocates nothing (for compile-only dry runs).

  Args:
    checkpoint_dir: holds `config.json`.
    dtype, param_dtype, precision, remat, activation_sharding, heads: as in `from_pretrained`.

  Returns:
    A `Decoder` whose variables hold `jax.ShapeDtypeStruct`s.
  """
  return build.abstract_policy(
    config_lib.load_config(checkpoint_dir),
    dtype=dtype,
    param_dtype=param_dtype,
    precision=precision,
    remat=remat,
    activation_sharding=activation_sharding,
    heads=heads,
  )


def from_pretrained(
  checkpoint_dir: str,
  *,
  dtype=jnp.float32,
  param_dtype=jnp.float32,
  precision: precision_lib.PrecisionPolicy = transformer.DEFAULT_PRECISION,
  remat: str = "none",
  activation_sharding=None,
  heads: heads_lib.HeadsConfig = transformer.NO_HEADS,
  seed: int = 0,
  cache_block: int = transformer.CACHE_BLOCK,
) -> transformer.Decoder:
  """Loads a local Hugging Face Qwen2/Qwen3/Llama checkpoint directory as a policy.

  The checkpoint gives the decoder's weights; the precision policy's transforms and the heads
  follow as in `build.init_policy` (a Hugging Face checkpoint holds no heads: they start from
  their random initialisation).

  Args:
    checkpoint_dir: holds `config.json` and `model.safetensors` or a sharded set with
      `model.safetensors.index.json`.
    dtype: compute dtype.
    param_dtype: dtype the parameters are cast to on load.
    precision, remat, activation_sharding, heads: the constructor arguments of
      `transformer.Decoder`.
    seed: keys of the LoRA adapters and the heads (`build.lora_key`, `build.heads_key`).
    cache_block: the constructor argument of `transformer.Decoder`.

  Returns:
    The policy with the checkpoint's weights.

  Raises:
    FileNotFoundError, ValueError: naming the file or tensor that is missing, extra, mis-shaped
      or unreadable. Nothing is built unless every check passes.
  """
  cfg = config_lib.load_config(checkpoint_dir)
  decoder_params, _ = read_decoder_params(checkpoint_dir, cfg, param_dtype=param_dtype)
  return build.assemble(
    decoder_params,
    cfg,
    seed=seed,
    dtype=dtype,
    param_dtype=param_dtype,
    precision=precision,
    remat=remat,
    activation_sharding=activation_sharding,
    heads=heads,
    cache_block=cache_block,
  )


def read_decoder_params(
  checkpoint_dir: str,
  cfg: config_lib.ModelConfig,
  *,
  param_dtype=jnp.float32,
  extra: tuple[str, ...] = (),
) -> tuple[nnx.State, dict[str, np.ndarray]]:
  """Reads a plain decoder's parameters, and the named extra tensors, from a checkpoint.

  Args:
    checkpoint_dir: holds `model.safetensors` or a sharded set with its index.
    cfg: the decoder's architecture (with `tie_word_embeddings` the checkpoint needs no
      `lm_head.weight`; a sequence classifier, which has none, is read that way).
    param_dtype: dtype the decoder's parameters are cast to.
    extra: names of further tensors the checkpoint must hold (e.g. a classifier's
      `score.weight`), returned as stored.

  Returns:
    (the state of a `Decoder(cfg)` under the default precision policy without heads,
    extra name -> NumPy array).

  Raises:
    FileNotFoundError, ValueError: naming the file or tensor that is missing, extra, mis-shaped
      or unreadable. Nothing is read unless every check passes.
  """
  plain = build.abstract_policy(cfg, param_dtype=param_dtype)
  flat = nnx.to_flat_state(nnx.state(plain))
  expected = {}
  for path, var in flat:
    name, transposed = hf_name(path)
    shape = tuple(var.get_value().shape)
    expected[name] = (path, shape[::-1] if transposed else shape, transposed)

  files = _checkpoint_files(checkpoint_dir)
  missing = sorted((set(expected) | set(extra)) - set(files))
  if missing:
    raise ValueError(f"{checkpoint_dir}: checkpoint lacks tensor(s) {missing}")
  unexpected = sorted(
    n
    for n in set(files) - set(expected) - set(extra)
    if not n.endswith(_IGNORED_SUFFIXES) and not (cfg.tie_word_embeddings and n == "lm_head.weight")
  )
  if unexpected:
    raise ValueError(
      f"{checkpoint_dir}: unexpected tensor(s) {unexpected} for a "
      f"{cfg.model_type} model with this config.json"
    )
  for name, (_, shape, _) in expected.items():
    got = _tensor_shape(files[name], name)
    if got != shape:
      raise ValueError(f"{files[name]}: tensor {name!r} has shape {got}, expected {shape}")

  arrays = _read_tensors(files, set(expected) | set(extra))
  values = {}
  for name, (path, _, transposed) in expected.items():
    a = arrays[name]
    if transposed:
      a = a.T
    values[path] = jnp.asarray(a, dtype=param_dtype)
  decoder_params = nnx.from_flat_state([(path, var.replace(values[path])) for path, var in flat])
  return decoder_params, {name: arrays[name] for name in extra}


def _tensor_shape(path: str, name: str) -> tuple[int, ...]:
  try:
    with safetensors.safe_open(path, framework="numpy") as f:
      return tuple(f.get_slice(name).get_shape())
  except FileNotFoundError:
    raise FileNotFoundError(f"safetensors file not found: {path}") from None
  except Exception as e:
    raise ValueError(f"{path}: unreadable safetensors file ({e})") from e


def export_params(model: transformer.Decoder) -> nnx.State:
  """The decoder's parameters as a Hugging Face checkpoint holds them: LoRA adapters merged and
  quantised bases dequantised (`precision.merge_lora`), heads left out.

  Returns:
    The `nnx.Param` state of a plain `Decoder(model.config)` (default precision, no heads).
  """
  merged = precision_lib.merge_lora(nnx.state(model), model.precision)
  return nnx.from_flat_state(
    [(path, var) for path, var in nnx.to_flat_state(merged) if path[0] != "heads"]
  )


def state_to_hf_tensors(model: transformer.Decoder, dtype=None) -> dict[str, np.ndarray]:
  """`export_params(model)` as Hugging Face-named NumPy arrays ([out, in] for Linear weights)."""
  out = {}
  for path, var in nnx.to_flat_state(export_params(model)):
    name, transposed = hf_name(path)
    a = np.asarray(jax.device_get(var.get_value()))
    if dtype is not None:
      a = a.astype(dtype)
    out[name] = np.ascontiguousarray(a.T if transposed else a)
  return out


def save_pretrained(
  model: transformer.Decoder,
  checkpoint_dir: str,
  *,
  overwrite: bool = False,
  max_shard_bytes: int | None = None,
  dtype=None,
  extra_files: dict[str, str | bytes] | None = None,
) -> None:
  """Writes a directory that `transformers` (and vLLM) load as the same model.

  The weights are plain Hugging Face tensors (`export_params`): LoRA adapters are merged into
  their kernels and quantised bases dequantised, so the checkpoint computes the adapted model's
  logits up to float rounding. Heads are not part of a Hugging Face checkpoint and are not
  written (save them with the training checkpoint).

  Args:
    model: the policy to save.
    checkpoint_dir: destination; written atomically (a sibling temporary directory renamed into
      place).
    overwrite: replace an existing directory; otherwise an existing one raises FileExistsError.
    max_shard_bytes: split the weights into several files with an index when they exceed this.
    dtype: NumPy dtype to cast parameters to (for example `ml_dtypes.bfloat16`); default keeps
      the parameter dtype.
    extra_files: file name -> a source path (str) copied alongside, or the file's contents
      (bytes); tokenizer files, for example.

  The directory is world-readable (directories 0755, files 0644) so that another user or a
  serving container can read it.
  """
  checkpoint_dir = os.path.abspath(checkpoint_dir)
  if os.path.exists(checkpoint_dir) and not overwrite:
    raise FileExistsError(f"{checkpoint_dir} exists; pass overwrite=True to replace it")
  parent = os.path.dirname(checkpoint_dir)
  os.makedirs(parent, exist_ok=True)
  tensors = state_to_hf_tensors(model, dtype)
  hf_config = model.config.to_hf_dict()
  hf_config["torch_dtype"] = str(next(iter(tensors.values())).dtype)
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(checkpoint_dir) + "-", dir=parent)
  try:
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2)
    _write_tensors(tensors, tmp, max_shard_bytes)
    for fname, src in (extra_files or {}).items():
      if isinstance(src, bytes):
        with open(os.path.join(tmp, fname), "wb") as f:
          f.write(src)
      else:
        shutil.copyfile(src, os.path.join(tmp, fname))
    _make_readable(tmp)
    _replace_dir(tmp, checkpoint_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _write_tensors(tensors: dict[str, np.ndarray], out_dir: str, max_shard_bytes: int | None):
  metadata = {"format": "pt"}  # transformers refuses safetensors files without it.
  total = sum(a.nbytes for a in tensors.values())
  if max_shard_bytes is None or total <= max_shard_bytes:
    safetensors.numpy.save_file(tensors, os.path.join(out_dir, SINGLE_FILE), metadata=metadata)
    return
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    a = tensors[name]
    if current and size + a.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = a
    size += a.nbytes
  shards.append(current)
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    safetensors.numpy.save_file(shard, os.path.join(out_dir, fname), metadata=metadata)
    weight_map.update({name: fname for name in shard})
  with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _make_readable(root: str) -> None:
  """Directories 0755 and files 0644 under `root`: `mkdtemp` makes a private 0700 directory,
  which the rename would otherwise carry into place."""
  os.chmod(root, 0o755)
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames:
      os.chmod(os.path.join(dirpath, name), 0o755)
    for name in filenames:
      os.chmod(os.path.join(dirpath, name), 0o644)


def _replace_dir(new: str, dest: str) -> None:
  """Renames `new` to `dest`, moving an existing `dest` aside first and removing it after."""
  if not os.path.exists(dest):
    os.rename(new, dest)
    return
  old = dest + ".old"
  shutil.rmtree(old, ignore_errors=True)
  os.rename(dest, old)
  os.rename(new, dest)
  shutil.rmtree(old, ignore_errors=True)
