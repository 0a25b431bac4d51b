"""Every config file builds, validates, and rejects typos and bad values by field name."""

import glob
import importlib.util
import os

import pytest

from grpojax.rl import setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(
  p
  for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
  if os.path.basename(p) not in ("__init__.py", "common.py")
)


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
@pytest.mark.parametrize("arg", [None, "local"])
def test_config_builds_and_validates(path, arg):
  config = _load(path).get_config(arg)
  if config.task.name == "gsm8k":
    with pytest.raises(ValueError, match=r"task\.data_path"):
      setup.validate_config(config)
    config.task.data_path = "train.jsonl"  # validation reads no files
    config.model.checkpoint = "checkpoint_dir"
  if config.objective.recipe == "flowrl":
    with pytest.raises(ValueError, match="log Z"):
      setup.validate_config(config)
  else:
    setup.validate_config(config)
  assert "python -m grpojax.main --config=configs/" in _load(path).__doc__


def test_unknown_argument_and_typos_fail_loudly():
  default = _load(os.path.join(REPO, "configs", "default.py"))
  with pytest.raises(ValueError, match="unknown config argument"):
    default.get_config("fast")
  config = default.get_config()
  with pytest.raises(AttributeError):
    config.rollout.temprature = 0.5  # locked: a typo cannot add a field


@pytest.mark.parametrize(
  "field, value, culprit",
  [
    ("rollout.top_p", 1.5, "rollout.top_p"),
    ("rollout.temperature", 0.0, "rollout.temperature"),
    ("train.minibatches", 3, "train.minibatches"),
    ("train.microbatch_rows", 48, "train.microbatch_rows"),
    ("eval.pass_k", 16, "eval.pass_k"),
    ("optim.learning_rate", -1.0, "optim.learning_rate"),
    ("model.dtype", "float16", "model.dtype"),
    ("objective.surrogate.epsilon_low", -0.1, "objective.surrogate.epsilon_low"),
  ],
)
def test_bad_values_name_the_field(field, value, culprit):
  config = _load(os.path.join(REPO, "configs", "default.py")).get_config()
  node = config
  *parents, leaf = field.split(".")
  for name in parents:
    node = node[name]
  node[leaf] = value
  with pytest.raises(ValueError, match=culprit.replace(".", r"\.")):
    setup.validate_config(config)
