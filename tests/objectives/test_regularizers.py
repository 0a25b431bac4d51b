"""Tests for grpojax/objectives/regularizers.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.objectives import regularizers

B, T = 4, 6
KINDS = regularizers.KL_KINDS


def _reference_kl(logp, ref, kind):
  """KL(π‖π_ref) estimators in float64 from Schulman's definitions, with verl's k3 clamps."""
  logp = np.asarray(logp, np.float64)
  ref = np.asarray(ref, np.float64)
  if kind == "k1":
    return logp - ref
  if kind == "k2":
    return 0.5 * (logp - ref) ** 2
  log_r = np.clip(ref - logp, -20.0, 20.0)  # log(π_ref/π)
  return np.clip(np.exp(log_r) - log_r - 1.0, -10.0, 10.0)


def _random_inputs(seed):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 1.0, size=(B, T))).astype(np.float32)
  ref = np.log(rng.uniform(0.05, 1.0, size=(B, T))).astype(np.float32)
  lengths = np.array([0, T, 3, 1])
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
  return logp, ref, mask


@functools.partial(jax.jit, static_argnames=("kind", "coef"))
def _loss_jit(logp, ref, mask, *, kind, coef):
  return regularizers.kl_penalty_loss(logp, ref, mask, kind=kind, coef=coef)


def test_hand_worked_estimators():
  # π = 0.5, π_ref = 0.25: δ = log π − log π_ref = ln 2 = 0.693147.
  # k1 = 0.693147; k2 = ½·0.693147² = 0.240227; k3 = π_ref/π − ln(π_ref/π) − 1 = 0.5 + 0.693147 − 1
  #    = 0.193147.
  logp = jnp.log(jnp.array([[0.5]]))
  ref = jnp.log(jnp.array([[0.25]]))
  want = {"k1": 0.693147, "k2": 0.240227, "k3": 0.193147}
  for kind, value in want.items():
    np.testing.assert_allclose(
      regularizers.kl_estimate(logp, ref, kind=kind), [[value]], rtol=1e-5, err_msg=kind
    )
  # coef 0.1, masked: loss = 0.1·0.193147 = 0.0193147.
  np.testing.assert_allclose(
    regularizers.kl_penalty_loss(logp, ref, jnp.ones((1, 1)), kind="k3", coef=0.1),
    [[0.0193147]],
    rtol=1e-5,
  )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_float64_reference(kind, seed):
  logp, ref, mask = _random_inputs(seed)
  got = _loss_jit(logp, ref, mask, kind=kind, coef=0.04)
  want = 0.04 * _reference_kl(logp, ref, kind) * mask
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(got)[mask == 0] == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_analytic_form(kind):
  logp, ref, mask = _random_inputs(2)
  coef = 0.3
  grad_logp, grad_ref = jax.jit(
    jax.grad(
      lambda lp, rf: jnp.sum(regularizers.kl_penalty_loss(lp, rf, mask, kind=kind, coef=coef)),
      argnums=(0, 1),
    )
  )(logp, ref)
  delta = np.asarray(logp, np.float64) - np.asarray(ref, np.float64)
  # ∂k1/∂logπ = 1; ∂k2/∂logπ = δ; ∂k3/∂logπ = 1 − π_ref/π = 1 − exp(−δ).
  analytic = {"k1": np.ones_like(delta), "k2": delta, "k3": 1.0 - np.exp(-delta)}[kind]
  assert np.all(_reference_kl(logp, ref, "k3") < 10.0)  # No clamp active on these inputs.
  np.testing.assert_allclose(grad_logp, coef * analytic * mask, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(grad_ref, np.zeros_like(grad_ref))  # π_ref is a constant.


def test_k3_gradient_sign_and_zero_at_equality():
  # 1 − π_ref/π: positive where π > π_ref (pushes logπ down), 0 at π = π_ref.
  logp = jnp.log(jnp.array([[0.5, 0.2, 0.3]]))
  ref = jnp.log(jnp.array([[0.25, 0.4, 0.3]]))
  grad = jax.grad(
    lambda lp: jnp.sum(regularizers.kl_penalty_loss(lp, ref, jnp.ones((1, 3)), kind="k3", coef=1))
  )(logp)
  # [1 − 0.25/0.5, 1 − 0.4/0.2, 1 − 1] = [0.5, −1, 0]
  np.testing.assert_allclose(grad, [[0.5, -1.0, 0.0]], atol=1e-6)


def test_k3_clamps_at_extreme_log_ratios():
  # δ = logπ − logπ_ref = ±50.
  # δ = −50: log(π_ref/π) = 50 → clamp 20 → e^20 − 20 − 1 ≈ 4.85e8 → clamp 10.
  # δ = +50: log(π_ref/π) = −50 → clamp −20 → e^−20 + 20 − 1 ≈ 19 → clamp 10.
  logp = jnp.array([[-50.0, 0.0, -1.0]])
  ref = jnp.array([[0.0, -50.0, -1.0]])
  mask = jnp.ones((1, 3))
  for kind in KINDS:
    value, grad = jax.jit(
      jax.value_and_grad(
        lambda lp, kind=kind: jnp.sum(
          regularizers.kl_penalty_loss(lp, ref, mask, kind=kind, coef=1.0)
        )
      )
    )(logp)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), kind
  k3 = regularizers.kl_estimate(logp, ref, kind="k3")
  np.testing.assert_allclose(k3, [[10.0, 10.0, 0.0]])
  k3_grad = jax.grad(lambda lp: jnp.sum(regularizers.kl_estimate(lp, ref, kind="k3")))(logp)
  np.testing.assert_array_equal(k3_grad, [[0.0, 0.0, 0.0]])  # Clamped values carry no gradient.
  np.testing.assert_allclose(regularizers.kl_estimate(logp, ref, kind="k2"), [[1250, 1250, 0]])


def test_reward_penalty_is_detached_and_equals_loss():
  logp, ref, mask = _random_inputs(3)
  penalty = regularizers.kl_reward_penalty(logp, ref, mask, kind="k1", coef=0.05)
  np.testing.assert_allclose(penalty, 0.05 * _reference_kl(logp, ref, "k1") * mask, rtol=1e-5)
  grad = jax.grad(
    lambda lp: jnp.sum(regularizers.kl_reward_penalty(lp, ref, mask, kind="k3", coef=0.05))
  )(logp)
  np.testing.assert_array_equal(grad, np.zeros_like(grad))


def test_entropy_bonus_value_and_gradient():
  rng = np.random.default_rng(4)
  entropy = rng.uniform(0.0, 3.0, size=(B, T)).astype(np.float32)
  _, _, mask = _random_inputs(4)
  loss, grad = jax.jit(
    jax.value_and_grad(
      lambda h: jnp.sum(regularizers.entropy_bonus_loss(h, mask, coef=0.01)), has_aux=False
    )
  )(entropy)
  np.testing.assert_allclose(loss, -0.01 * np.sum(entropy.astype(np.float64) * mask), rtol=1e-5)
  np.testing.assert_allclose(grad, -0.01 * mask, rtol=1e-6)
  # Hand-worked: H = [2, 5], mask [1, 0], c = 0.1 → [−0.2, 0].
  np.testing.assert_allclose(
    regularizers.entropy_bonus_loss(jnp.array([[2.0, 5.0]]), jnp.array([[1.0, 0.0]]), coef=0.1),
    [[-0.2, 0.0]],
  )


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_matches_per_slice(kind):
  slices = [_random_inputs(s) for s in range(3)]
  logp, ref, mask = (np.stack(x) for x in zip(*slices, strict=True))
  fn = jax.jit(jax.vmap(lambda a, b, c: regularizers.kl_penalty_loss(a, b, c, kind=kind, coef=1.0)))
  got = fn(logp, ref, mask)
  for i in range(3):
    np.testing.assert_allclose(got[i], _reference_kl(logp[i], ref[i], kind) * mask[i], rtol=1e-5)


def test_all_padding_and_garbage_padding_stay_finite():
  logp = jnp.full((2, T), -jnp.inf)  # Padding logprobs may be anything.
  ref = jnp.zeros((2, T))
  mask = jnp.zeros((2, T))
  for kind in KINDS:
    loss = regularizers.kl_penalty_loss(logp, ref, mask, kind=kind, coef=1.0)
    np.testing.assert_array_equal(loss, np.zeros((2, T)))
  entropy_loss = regularizers.entropy_bonus_loss(jnp.full((2, T), jnp.nan), mask, coef=1.0)
  np.testing.assert_array_equal(entropy_loss, np.zeros((2, T)))


@pytest.mark.parametrize(
  "kwargs, field",
  [
    ({"kind": "k4", "coef": 1.0}, "kind"),
    ({"kind": "low_var_kl", "coef": 1.0}, "kind"),
    ({"kind": "k3", "coef": -0.1}, "coef"),
    ({"kind": "k3", "coef": 1.0, "log_ratio_clip": 0.0}, "log_ratio_clip"),
    ({"kind": "k3", "coef": 1.0, "k3_clip": -1.0}, "k3_clip"),
  ],
)
def test_bad_hyper_parameters_raise(kwargs, field):
  logp, ref, mask = _random_inputs(0)
  with pytest.raises(ValueError, match=field):
    regularizers.kl_penalty_loss(logp, ref, mask, **kwargs)
  if "kind" in kwargs and kwargs.get("coef", 0) >= 0:
    with pytest.raises(ValueError, match=field):
      regularizers.kl_reward_penalty(logp, ref, mask, **kwargs)


def test_negative_entropy_coef_raises():
  with pytest.raises(ValueError, match="coef"):
    regularizers.entropy_bonus_loss(jnp.ones((1, 1)), jnp.ones((1, 1)), coef=-1.0)


def test_traced_coef_from_an_adaptive_controller():
  logp, ref, mask = _random_inputs(5)
  fn = jax.jit(
    lambda beta, c: (
      regularizers.kl_penalty_loss(logp, ref, mask, kind="k2", coef=beta),
      regularizers.entropy_bonus_loss(jnp.ones((B, T)), mask, coef=c),
    )
  )
  kl_loss, ent_loss = fn(jnp.float32(0.2), jnp.float32(0.5))
  np.testing.assert_allclose(kl_loss, 0.2 * _reference_kl(logp, ref, "k2") * mask, rtol=1e-5)
  np.testing.assert_allclose(ent_loss, -0.5 * mask)


def test_k3_from_log_ratio_has_no_cancellation_near_zero():
  # e^r − 1 − r ≈ r²/2 for small r; float32 must keep ~7 significant digits across all scales.
  r = np.concatenate([np.geomspace(1e-6, 20.0, 400), -np.geomspace(1e-6, 20.0, 400)])
  r = r.astype(np.float32)
  got = jax.jit(regularizers.k3_from_log_ratio)(r)
  r64 = r.astype(np.float64)
  np.testing.assert_allclose(got, np.expm1(r64) - r64, rtol=1e-6)
  # Its derivative is e^r − 1 (the k3 gradient), also accurate near 0.
  grad = jax.jit(jax.vmap(jax.grad(regularizers.k3_from_log_ratio)))(r)
  np.testing.assert_allclose(grad, np.expm1(r64), rtol=1e-6)
