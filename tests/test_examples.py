"""The worked example in examples/ (a task, a reward and a recipe of a user's own, named by
import path) trains for two RL steps through the real entry point's function."""

import json
import os
import sys

import pytest

from grpojax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_example_config_trains_with_its_own_task_reward_and_recipe(tmp_path):
  sys.path.insert(0, REPO)
  from examples import config as example_config

  config = example_config.get_config("local")
  assert config.task.name == "examples.tasks:make_task"
  assert config.objective.recipe == "examples.recipes:clipped_grpo"
  train.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  rl = [r for r in rows if "reward/brevity/extra_chars" in r]
  assert len(rl) == 2  # two RL steps, each logging the example reward's components
  for r in rl:
    # brevity's value is its "reward" entry, 1 - 0.25 * extra characters (floored at 0), and
    # the run's reward is task + 0.1 * brevity.
    assert 0.0 <= r["reward/brevity"] <= 1.0
    assert r["reward/brevity"] == r["reward/brevity/reward"]
    assert r["reward/mean"] == pytest.approx(r["reward/task"] + 0.1 * r["reward/brevity"], abs=1e-6)
    assert r["reward/errors"] == 0.0
