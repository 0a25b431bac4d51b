"""configs/vcpo.py and configs/lad.py run two RL steps end to end."""

import importlib.util
import json
import os

import pytest

from grpojax import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(name, arg="local"):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _rl_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if "objective/loss" in r]


@pytest.mark.parametrize("optimal_baseline", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_vcpo_runs_two_steps_with_an_ess_scaled_learning_rate(tmp_path, optimal_baseline):
  config = _config("vcpo")
  config.objective.optimal_baseline = optimal_baseline
  assert config.train.epochs * config.train.minibatches == 4  # off-policy minibatches
  train.train_and_evaluate(config, str(tmp_path))
  rl = _rl_rows(tmp_path)
  assert len(rl) == 2
  for r in rl:
    assert r["update/nonfinite"] == 0
    assert 0 < r["update/ess_ratio_min"] <= r["update/ess_ratio"] <= 1 + 1e-6
    assert 0 < r["update/lr_scale_min"] <= r["update/lr_scale"] <= 1 + 1e-6


def test_lad_runs_two_steps(tmp_path):
  config = _config("lad")
  train.train_and_evaluate(config, str(tmp_path))
  rl = _rl_rows(tmp_path)
  assert len(rl) == 2
  assert all(r["update/nonfinite"] == 0 and "objective/matched_gap" in r for r in rl)
