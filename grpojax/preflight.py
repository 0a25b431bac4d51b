"""Checks a launch can make before the accelerator stack is imported.

`grpojax.main` runs these between parsing its flags and importing the trainer, so a missing
config file, a misspelt `--config.a.b=value` override or a missing input path is reported in one
line within seconds, not after jax, flax, orbax, tfds and grain have loaded (tens of seconds on
a busy machine). This module imports only the standard library and ml_collections; every check
returns a message (None when all is well) and leaves the printing to the caller.
"""

import difflib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Sequence

import ml_collections
from absl import app, flags

_FLAG = "config"


def config_file_argument(argv: Sequence[str]) -> str | None:
  """The value given to `--config` (`path` or `path:arg`), or None when absent."""
  for i, arg in enumerate(argv):
    match = re.fullmatch(rf"--?{_FLAG}(=(.*))?", arg)
    if match:
      if match.group(1) is not None:
        return match.group(2)
      return argv[i + 1] if i + 1 < len(argv) else None
  return None


def config_file_error(argv: Sequence[str]) -> str | None:
  """A message when `--config` names a file that does not exist (config_flags would only fail
  later, when the config is first read)."""
  value = config_file_argument(argv)
  if value is None:
    return None  # absl reports the missing required flag itself
  path = value.split(":", 1)[0]
  if not os.path.isfile(path):
    return f"--{_FLAG}: no config file {path!r} (relative to {os.getcwd()})"
  return None


def load_config(value: str) -> ml_collections.ConfigDict:
  """Builds the config `--config=path[:arg]` names, as config_flags does (without overrides)."""
  path, *arg = value.split(":", 1)
  spec = importlib.util.spec_from_file_location(f"{_FLAG}_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*arg)


def override_paths(argv: Sequence[str]) -> list[str]:
  """The field paths `--config.a.b=value` (or `--noconfig.a.b`) overrides, in order."""
  paths = []
  for arg in argv:
    match = re.match(rf"--?(?:no)?{_FLAG}\.([^=]+)", arg)
    if match:
      paths.append(match.group(1))
  return paths


def _field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _field_paths(value, path + ".")
    yield path


def unknown_field(config: ml_collections.ConfigDict, path: str) -> str | None:
  """A one-line message when `path` ('a.b.c') names no field of `config`, else None.

  The message names the full field path and the closest existing names: difflib's nearest keys
  of the section the path breaks off in, and any field elsewhere with the same last name
  (`objective.name` -> `objective.correction.name`).
  """
  node, walked = config, []
  for key in path.split("."):
    where = ".".join([_FLAG, *walked])
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{_FLAG}.{path}: {where} is a {type(node).__name__}, not a section with fields"
    if key not in node:
      keys = sorted(node.keys())
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
      same_name = [p for p in _field_paths(config) if p.rsplit(".", 1)[-1] == key]
      hints = []
      if close:
        hints.append("did you mean " + " or ".join(f"{where}.{k}" for k in close) + "?")
      if same_name:
        hints.append(f"fields named {key!r}: " + ", ".join(f"{_FLAG}.{p}" for p in same_name))
      if not close:
        hints.append(f"the fields of {where}: " + ", ".join(keys))
      return f"{_FLAG}.{path}: no field {key!r} in {where}; " + "; ".join(hints)
    node = node[key]
    walked.append(key)
  return None


def first_unknown_override(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str | None:
  """The message of the first `--config.*` override in `argv` that names no field."""
  for path in override_paths(argv):
    message = unknown_field(config, path)
    if message:
      return message
  return None


def _reward_checkpoints(config: ml_collections.ConfigDict) -> list[tuple[str, str, str]]:
  """(field, path, file it needs) of the reward model and LLM judge directories, when set."""
  reward = config.get("reward") or {}
  out = []
  for source in ("model", "judge"):
    path = (reward.get(source) or {}).get("path", "")
    out.append((f"reward.{source}.path", path, "config.json"))
  return out


def input_path_errors(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Messages for the run's input paths that are missing or of the wrong kind.

  Checks what the trainer would otherwise only find after its imports and set-up: the task's
  JSON-lines files, the model, reward model and judge checkpoint directories (with their
  `config.json`), the tokenizer directory (with its `tokenizer.json`), and that an existing
  workdir is a directory.
  """
  errors = []
  for field in ("data_path", "heldout_path"):
    path = config.task.get(field, "")
    if path and not os.path.isfile(path):
      errors.append(f"{_FLAG}.task.{field}: no file {path!r}")
  for field, path, needs in (
    ("model.checkpoint", config.model.get("checkpoint", ""), "config.json"),
    ("tokenizer.path", config.tokenizer.get("path", ""), "tokenizer.json"),
    *_reward_checkpoints(config),
  ):
    if not path:
      continue
    if not os.path.isdir(path):
      errors.append(f"{_FLAG}.{field}: no directory {path!r}")
    elif not os.path.isfile(os.path.join(path, needs)):
      errors.append(f"{_FLAG}.{field}: {path!r} holds no {needs}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    errors.append(f"--workdir: {workdir!r} exists and is not a directory")
  return errors


def checkpoint_source(path: str) -> tuple[str, str]:
  """What a checkpoint path names: `("run", path)` for a run directory with checkpoints under
  `checkpoints/`, `("hf", dir)` for a run's exported `policy/` or a Hugging Face directory.

  Raises:
    ValueError: the path is none of these (the message names `--checkpoint`).
  """
  steps_dir = os.path.join(path, "checkpoints")
  if os.path.isdir(steps_dir) and any(name.isdigit() for name in os.listdir(steps_dir)):
    return "run", path
  for candidate in (os.path.join(path, "policy"), path):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      return "hf", candidate
  raise ValueError(
    f"--checkpoint: {path!r} is neither a grpojax run directory (checkpoints/ or policy/) nor "
    f"a Hugging Face checkpoint directory (config.json)"
  )


def fail(message: str):
  """Ends the program with one line on stderr (exit status 1)."""
  sys.exit(f"error: {message}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for a `--config` entry point, with one-line errors for a missing config
  file and unknown fields (pass it to `app.run` as `flags_parser`).

  config_flags reports an override of a missing field as a long traceback ending in an escaped
  KeyError, and a missing config file only when the config is first read; both are caught here.
  """
  message = config_file_error(argv)
  if message:
    fail(message)
  try:
    args = app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    message = first_unknown_override(load_config(config_file_argument(argv)), argv)
    if not message:
      raise
    fail(message)
  try:
    flags.FLAGS.config.keys()
  except OSError as error:  # the file exists but failed to load (config_flags defers this)
    fail(f"--config: {' '.join(str(error).split())}")
  return args
