"""Tests for grpojax/objectives/compose.py: registries, KL controllers, inputs, error paths."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import compose

# ---------------------------------------------------------------------------------------------
# Registries stay in sync with the pieces they call.
# ---------------------------------------------------------------------------------------------


def _registered():
  for stage, registry in compose.REGISTRIES.items():
    for name, piece in registry.items():
      if piece.fn is not None:
        yield f"{stage}.{name}", piece


@pytest.mark.parametrize("label,piece", list(_registered()), ids=lambda x: str(x))
def test_registry_fields_are_keyword_arguments_of_the_piece(label, piece):
  params = inspect.signature(piece.fn).parameters
  passed = [field for field in piece.defaults if field not in piece.local] + list(piece.fixed)
  for field in passed:
    assert field in params, f"{label}: {field} is not an argument of {piece.fn.__name__}"
    assert params[field].kind is inspect.Parameter.KEYWORD_ONLY, f"{label}: {field}"
    default = params[field].default
    # Where the piece has a concrete default, the registry mirrors it (None is written as inf
    # or as an explicit value; see compose.Piece).
    if default is not inspect.Parameter.empty and default is not None:
      assert piece.defaults.get(field, piece.fixed.get(field)) == default, f"{label}: {field}"
  for field in piece.none_if_inf:
    assert piece.defaults[field] == compose.INF, f"{label}: {field}"


def test_piece_kwargs_maps_inf_to_none_and_drops_local_fields():
  cispo = compose.SURROGATES["cispo"]
  config = {**cispo.defaults, "epsilon_high": 0.3}
  assert compose.piece_kwargs(cispo, config) == {
    "epsilon_low": None,
    "epsilon_high": 0.3,
    "bound": "relative",
  }
  vespo = compose.SURROGATES["vespo"]
  assert "include_sampler_ratio" not in compose.piece_kwargs(vespo, dict(vespo.defaults))
  tis = compose.CORRECTIONS["tis"]
  assert compose.piece_kwargs(tis, dict(tis.defaults))["mode"] == "truncate"


# ---------------------------------------------------------------------------------------------
# KL controllers.
# ---------------------------------------------------------------------------------------------


def test_adaptive_kl_controller_follows_its_formula():
  # β_{k+1} = β_k (1 + rate · clip(KL/target − 1, ±max_error)), β_0 = 0.1, target 0.05, rate 0.1.
  controller = compose.adaptive_kl_controller(init_coef=0.1, target=0.05, rate=0.1, max_error=0.2)
  state = controller.init()
  assert state.coef.dtype == jnp.float32
  np.testing.assert_allclose(state.coef, 0.1)
  cases = [
    (0.055, 0.101),  # e = 0.055/0.05 − 1 = 0.1 -> 0.1 · (1 + 0.01) = 0.101
    (0.06, 0.102),  # e = 0.2 (the bound) -> 0.1 · 1.02
    (0.5, 0.102),  # e = 9 -> clipped to 0.2
    (0.04, 0.098),  # e = −0.2 -> 0.1 · 0.98
    (0.0, 0.098),  # e = −1 -> clipped to −0.2
  ]
  for kl, expected in cases:
    np.testing.assert_allclose(controller.update(jnp.float32(kl), state).coef, expected, rtol=1e-6)
  # Two steps: 0.1 -> (e = 0.1) 0.101 -> (KL 0.045, e = −0.1) 0.101 · 0.99 = 0.09999.
  state = controller.update(0.055, state)
  state = controller.update(0.045, state)
  np.testing.assert_allclose(state.coef, 0.09999, rtol=1e-6)


def test_adaptive_kl_controller_is_jittable_and_stops_gradients():
  controller = compose.adaptive_kl_controller(init_coef=0.1, target=0.05)
  step = jax.jit(controller.update)
  np.testing.assert_allclose(step(0.055, controller.init()).coef, 0.101, rtol=1e-6)
  grad = jax.grad(lambda kl: controller.update(kl, controller.init()).coef)(0.055)
  assert grad == 0.0


def test_fixed_kl_controller_ignores_the_observation():
  controller = compose.fixed_kl_controller(coef=0.04)
  state = controller.init()
  np.testing.assert_allclose(controller.update(123.0, state).coef, 0.04)


@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"init_coef": 0.0, "target": 0.1}, "coef"),
    ({"init_coef": 0.1, "target": 0.0}, "target"),
    ({"init_coef": 0.1, "target": 0.1, "rate": -1.0}, "rate"),
    ({"init_coef": 0.1, "target": 0.1, "max_error": 0.0}, "max_error"),
    ({"init_coef": 0.1, "target": 0.1, "rate": 5.0, "max_error": 0.2}, "rate \\* max_error"),
  ],
)
def test_adaptive_kl_controller_rejects_bad_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    compose.adaptive_kl_controller(**kwargs)


def test_fixed_kl_controller_rejects_negative_coef():
  with pytest.raises(ValueError, match="coef"):
    compose.fixed_kl_controller(coef=-0.1)


# ---------------------------------------------------------------------------------------------
# Inputs, errors, metrics.
# ---------------------------------------------------------------------------------------------


def test_loss_batch_is_a_pytree_with_static_max_len():
  batch = compose.LossBatch(
    old_logprobs=jnp.zeros((2, 3)),
    sampler_logprobs=jnp.zeros((2, 3)),
    advantages=jnp.ones((2, 3)),
    mask=jnp.ones((2, 3)),
    max_len=7,
  )
  assert len(jax.tree.leaves(batch)) == 4  # None fields hold no leaves; max_len is static.

  @jax.jit
  def f(b):
    assert isinstance(b.max_len, int)  # Static under jit.
    return jnp.sum(b.advantages) * b.max_len

  assert f(batch) == 42.0
  half = jax.tree.map(lambda x: x[:1], batch)
  assert half.max_len == 7 and half.mask.shape == (1, 3)


def test_config_errors_names_the_first_field_the_message_mentions():
  with pytest.raises(compose.ConfigError, match=r"^objective\.correction\.low: low must"):
    with compose.config_errors("objective.correction", ("high", "low", "level")):
      raise ValueError("low must be smaller than high, got low=3 >= high=2.")
  # No field mentioned: the stage path alone. Word boundaries: 'low' is not in 'epsilon_low'.
  with pytest.raises(compose.ConfigError, match=r"^objective\.surrogate: bad epsilon_low"):
    with compose.config_errors("objective.surrogate", ("low",)):
      raise ValueError("bad epsilon_low")
  # Already attributed errors pass through unchanged.
  with pytest.raises(compose.ConfigError, match=r"^objective\.kl\.coef: x"):
    with compose.config_errors("objective", ("coef",)):
      raise compose.ConfigError("objective.kl.coef: x")


def test_merge_micro_batches_reduces_extrema_and_averages_the_rest():
  metrics_k = {
    "ratio_max": jnp.array([1.5, 2.5]),
    "ratio_min": jnp.array([0.5, 0.25]),
    "ratio_mean": jnp.array([1.0, 2.0]),
  }
  states_k = compose.ObjectiveState(kl=compose.KLControllerState(coef=jnp.array([0.1, 0.3])))
  metrics, state = compose.merge_micro_batches(metrics_k, states_k)
  assert metrics == {"ratio_max": 2.5, "ratio_min": 0.25, "ratio_mean": 1.5}
  np.testing.assert_allclose(state.kl.coef, 0.2)
  assert compose.merge_micro_batches(metrics_k)[1] is None
