"""configs/vapo.py runs two RL steps end to end (one critic warm-up step, one joint step), and a
bad critic warm-up is rejected by field name."""

import importlib.util
import json
import os

import pytest

from grpojax import train
from grpojax.rl import setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, arg="local"):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_vapo_runs_two_steps_with_a_critic(tmp_path):
  config = _config("vapo")
  assert setup.heads_for(setup.validate_config(config)).value
  assert config.train.critic_warmup_steps == 1 and config.train.steps == 2
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if "value/explained_variance" in r]
  assert len(rl) == config.train.steps
  for r in rl:
    assert r["update/nonfinite"] == 0
    assert r["value/explained_variance"] <= 1.0
    assert "objective/value_loss" in r and "objective/nll_pos_frac" in r


@pytest.mark.parametrize(
  "recipe, warmup, message",
  [("vapo", 2, "below train.steps"), ("vapo", -1, ">= 0"), ("grpo", 1, "has none")],
)
def test_bad_critic_warmup_names_the_field(recipe, warmup, message):
  config = _config("vapo")
  if recipe != "vapo":
    config.objective = _config("default").objective
  config.train.critic_warmup_steps = warmup
  with pytest.raises(ValueError, match=r"train\.critic_warmup_steps.*" + message):
    setup.validate_config(config)
