"""SeeUPO's pure pieces: the update order, turn masks, ρ and M with both clamps, the advantage
chain of one turn (hand-worked), the recipe from config and its errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from grpojax import objectives
from grpojax.objectives import base
from grpojax.objectives import seeupo as seeupo_lib


def test_turn_order():
  assert seeupo_lib.turn_order("reverse", 3) == (3, 2, 1)
  assert seeupo_lib.turn_order("sequential", 3) == (1, 2, 3)
  with pytest.raises(ValueError, match="order"):
    seeupo_lib.turn_order("random", 3)
  with pytest.raises(ValueError, match="max_turns"):
    seeupo_lib.turn_order("reverse", 0)


def test_turn_mask_keeps_only_that_turns_completion_tokens():
  mask = jnp.array([[1, 1, 0, 1, 0]])  # position 2: an environment token of turn 1
  turns = jnp.array([[1, 1, 1, 2, 0]])
  np.testing.assert_array_equal(seeupo_lib.turn_mask(mask, turns, 1), [[1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(seeupo_lib.turn_mask(mask, turns, 2), [[0, 0, 0, 1, 0]])


def test_rho_and_m_hand_worked_with_both_clamps():
  # Row 0: Δ = (0.2, 0.4) -> mean 0.3, e^0.3 = 1.34986 -> ρ clamped to 1.2;
  #        M = 1.1 · 1.2 = 1.32 -> clamped to 1.2.
  # Row 1: Δ = (−0.05, masked 5.0) -> mean −0.05, ρ = e^−0.05 = 0.951229; M = 0.9 · ρ = 0.856106.
  # Row 2: Δ = (−30) -> mean clamped to −10 first, e^−10 -> ρ clamped to 0.8; M = 1 · 0.8.
  # Row 3: no tokens of this turn -> ρ = 1, M stays 0.85.
  old = np.zeros((4, 2))
  new = np.array([[0.2, 0.4], [-0.05, 5.0], [-30.0, 0.0], [3.0, 3.0]])
  mask = np.array([[1, 1], [1, 0], [1, 0], [0, 0]], np.float32)
  rho = seeupo_lib.turn_ratio(
    jnp.asarray(new, jnp.float32),
    jnp.asarray(old, jnp.float32),
    mask,
    ratio_low=0.2,
    ratio_high=0.2,
  )
  np.testing.assert_allclose(rho, [1.2, np.exp(-0.05), 0.8, 1.0], rtol=1e-6)
  m = seeupo_lib.accumulate_ratio(
    jnp.array([1.1, 0.9, 1.0, 0.85]), rho, ratio_low=0.2, ratio_high=0.2
  )
  np.testing.assert_allclose(m, [1.2, 0.9 * np.exp(-0.05), 0.8, 0.85], rtol=1e-6)


def _ref_turn_advantages(rewards_pg, m_b, clip=3.0):
  """float64: r − group mean, over the batch std (ddof 1), clamped, times M."""
  r = np.asarray(rewards_pg, np.float64)
  centred = r - r.mean(axis=1, keepdims=True)
  z = np.clip(centred / centred.std(ddof=1), -clip, clip)
  return z.reshape(-1) * m_b


def test_one_turns_advantages_hand_worked():
  # Groups [1, 0, 0, 0] and [1, 1, 1, 0]: centred [.75, −.25, −.25, −.25], [.25, .25, .25, −.75];
  # the 8 values have mean 0 and Σ x² = 0.75 + 0.75 = 1.5, std (ddof 1) = sqrt(1.5/7) = 0.46291;
  # 0.75 / 0.46291 = 1.62019, 0.25 / 0.46291 = 0.54006 (within the clamp). M scales each row.
  rewards = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
  m_b = np.array([1.0, 1.2, 0.8, 1.0, 1.1, 1.0, 1.0, 0.9])
  objective = seeupo_lib.seeupo(kl_coef=0.0, eps=0.0)
  mask = jnp.ones((8, 3))
  adv, _ = objective.advantages(rewards, objective.init(), base.GroupInputs(mask=mask))
  got = np.asarray(adv)[:, 0] * m_b
  s = np.sqrt(1.5 / 7)
  hand = np.array([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]) / s * m_b
  np.testing.assert_allclose(got, hand, rtol=1e-5)
  np.testing.assert_allclose(got, _ref_turn_advantages(rewards, m_b), rtol=1e-5)


def test_advantages_clamp_at_three():
  # 19 groups [0, 0] and one [1, 0]: centred ±0.5, std (ddof 1) = sqrt(0.5/39) = 0.113228;
  # 0.5 / 0.113228 = 4.41588 -> clamped to ±3.
  rewards = np.zeros((20, 2), np.float32)
  rewards[0, 0] = 1.0
  objective = seeupo_lib.seeupo(kl_coef=0.0, eps=0.0)
  adv, _ = objective.advantages(
    jnp.asarray(rewards), objective.init(), base.GroupInputs(mask=jnp.ones((40, 1)))
  )
  np.testing.assert_allclose(np.asarray(adv)[:2, 0], [3.0, -3.0], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(adv)[2:], 0.0)


def test_recipe_from_config_carries_the_schedule():
  config = objectives.default_config("seeupo")
  assert config.order == "reverse" and config.kl_coef == 0.002 and config.epsilon_low == 0.2
  objective = objectives.make(config)
  assert objective.turn_schedule == seeupo_lib.TurnSchedule("reverse", 0.2, 0.2, "all")
  assert objectives.make(objectives.default_config("gspo")).turn_schedule is None


@pytest.mark.parametrize(
  "field, value", [("order", "random"), ("stats_rows", "some"), ("ratio_low", 1.0)]
)
def test_bad_values_name_the_field(field, value):
  config = objectives.default_config("seeupo")
  config[field] = value
  with pytest.raises(objectives.ConfigError, match=rf"^objective\.{field}:"):
    objectives.make(config)


def test_single_turn_run_fails_naming_the_recipe():
  objective = seeupo_lib.seeupo(kl_coef=0.0)
  with pytest.raises(ValueError, match=r"^objective\.recipe: .*env\.name"):
    seeupo_lib.check_multi_turn(objective, "")
  seeupo_lib.check_multi_turn(objective, "calculator")
  seeupo_lib.check_multi_turn(objectives.make(objectives.default_config("grpo")), "")
