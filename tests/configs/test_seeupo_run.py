"""SeeUPO end to end: the calculator's multi-turn episodes through the trainer, turn by turn."""

import json
import os
import sys

import numpy as np

from grpojax import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_seeupo_trains_turn_by_turn_on_multi_turn_episodes(tmp_path):
  sys.path.insert(0, REPO)
  from configs import seeupo

  config = seeupo.get_config("local")
  config.metrics.writers = ("jsonl",)
  config.eval.update(dict(num_prompts=2, batch_prompts=2, samples=2, pass_k=2))
  config.objective.entropy_coef = 0.1  # every turn's update moves the policy, rewarded or not
  config.optim.warmup_steps = 0
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rl = [r for r in map(json.loads, f) if "turn/active" in r]
  assert len(rl) == config.train.steps
  for row in rl:
    # Episodes of the untrained policy: at least one turn with policy tokens each step, every
    # turn's ratio and the accumulated M inside SeeUPO's clamps.
    assert 1 <= row["turn/active"] <= config.env.max_turns
    assert 0.8 <= row["turn/rho_mean"] <= 1.2 and 0.8 <= row["turn/m_mean"] <= 1.2
    assert np.isfinite(row["loss"]) and row["grad_norm"] > 0
    assert {f"turn/loss_{k}" for k in range(1, config.env.max_turns + 1)} <= set(row)
