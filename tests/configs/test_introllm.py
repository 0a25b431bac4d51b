"""configs/introllm.py runs two RL steps end to end, and its sampler and objective must agree."""

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


def test_introllm_runs_two_steps_with_learned_temperatures(tmp_path):
  config = _config("introllm")
  assert setup.heads_for(setup.validate_config(config)).temperature
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if "temperature/mean" in r]
  assert len(rl) == config.train.steps == 2
  for r in rl:
    assert 0.5 <= r["temperature/mean"] <= 1.5
    assert r["update/nonfinite"] == 0
  # alternate_every = 1: the first RL step trains the tokens, the second the temperatures.
  assert [r["objective/phase/token"] for r in rl] == [1.0, 0.0]
  assert [r["objective/phase/temperature"] for r in rl] == [0.0, 1.0]


@pytest.mark.parametrize(
  "name, enabled, field",
  [
    ("default", True, "rollout.temperature_policy.enabled"),
    ("introllm", False, "rollout.temperature_policy.enabled"),
  ],
)
def test_sampler_and_objective_must_agree(name, enabled, field):
  config = _config(name, None)
  config.rollout.temperature_policy.enabled = enabled
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    setup.validate_config(config)


@pytest.mark.parametrize(
  "field, value",
  [("tau_min", 0.0), ("tau_max", 0.4), ("concentration", 0.0)],
)
def test_bad_temperature_range_names_the_field(field, value):
  config = _config("introllm", None)
  config.rollout.temperature_policy[field] = value
  with pytest.raises(ValueError, match=rf"rollout\.temperature_policy\.{field}"):
    setup.validate_config(config)
