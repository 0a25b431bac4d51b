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
  objective = setup.validate_config(config)
  # The heads follow from what the objective reads: FlowRL's log Z gets its head.
  assert setup.heads_for(objective).log_z == (config.objective.recipe == "flowrl")
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
    ("train.length_buckets", -1, "train.length_buckets"),
    ("train.length_buckets", 10**6, "train.length_buckets"),
    ("eval.pass_k", 16, "eval.pass_k"),
    ("optim.learning_rate", -1.0, "optim.learning_rate"),
    ("model.dtype", "float16", "model.dtype"),
    ("objective.epsilon_low", -0.1, "objective.epsilon_low"),
    ("objective.kl_kind", "k9", "objective.kl_kind"),
    ("objective.correction.name", "tiss", "objective.correction.name"),
    ("reward.overlong.cache", 99, "reward.overlong.cache"),
    ("rollout.refill.max_generation_batches", 0, "rollout.refill.max_generation_batches"),
    ("precision.lora.alpha", -1.0, "precision.lora.alpha"),
    ("precision.matmul", "fp4", "precision.matmul"),
    ("optim.head_learning_rate", -1.0, "optim.head_learning_rate"),
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


def test_dapo_switches_on_its_data_side_techniques():
  dapo = _load(os.path.join(REPO, "configs", "dapo.py")).get_config()
  assert dapo.rollout.refill.enabled and dapo.reward.overlong.enabled
  default = _load(os.path.join(REPO, "configs", "default.py")).get_config()
  assert not default.rollout.refill.enabled and not default.reward.overlong.enabled


def _flat(config, prefix=""):
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _method(config):
  """The fields that say what is trained and how, as opposed to how big or how long."""
  flat = _flat(config)
  method = {
    k: v
    for k, v in flat.items()
    if k.startswith(("objective.", "precision.", "tokenizer."))
    or k.endswith(".enabled")
    or k in ("task.name", "curriculum.name", "model.model_type", "model.dtype")
  }
  # A phase is part of the method: whether it runs, not for how many steps.
  method["has warm start"] = flat["warm_start.steps"] > 0
  method["has critic warm-up"] = flat["train.critic_warmup_steps"] > 0
  return method


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_local_shrinks_sizes_but_keeps_the_method(path):
  module = _load(path)
  full, local = module.get_config(), module.get_config("local")
  assert _method(local) == _method(full)
  assert local.train.steps <= full.train.steps
  assert local.warm_start.steps <= full.warm_start.steps
