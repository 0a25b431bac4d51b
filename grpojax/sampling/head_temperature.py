"""A per-token temperature drawn from a policy over temperatures that reads the hidden state.

IntroLLM (arXiv 2602.13035) makes the sampling temperature an action: at each decoding step a
temperature policy conditioned on the decoder's hidden state h_t picks τ_t, and the next token is
drawn from softmax(logits / τ_t). Both policies are trained from the verifiable reward (see
`grpojax.objectives.introllm`).

What the paper's abstract and front matter state (read on arxiv.org/abs/2602.13035 and its HTML
front page): the temperature is chosen per decoding step from the hidden state, and the two
policies are optimised jointly by coordinate ascent. The method section (the distribution over
temperatures, its range, the head's architecture) could not be read, so the parameterisation
below is grpojax's choice, not the paper's:

  z_t = head(h_t)                    the temperature head's raw output (`models.heads`, one unit)
  m_t = sigmoid(z_t)                 the mode of u_t
  u_t ~ Beta(1 + κ m_t, 1 + κ (1 − m_t))
  τ_t = τ_min + (τ_max − τ_min) u_t

  log p(τ_t) = (κ m_t) log u_t + (κ (1 − m_t)) log(1 − u_t) − log B(1 + κ m_t, 1 + κ (1 − m_t))
               − log(τ_max − τ_min)

Why this one: the head has a single output, a Beta is the textbook bounded continuous law, and
with both shape parameters >= 1 its density is finite everywhere on [τ_min, τ_max] (log p and
its gradient stay bounded near the edges, unlike a Beta whose shape parameters may drop below
1). The head moves the mode; κ (the concentration) is fixed and sets how much the policy
explores around it: with κ = 8 and m = 0.5, u has standard deviation 0.15. A randomly
initialised head outputs z ≈ 0, so τ starts centred on (τ_min + τ_max) / 2. The seed note's
"Bernoulli gate (keep the base τ or adapt) + Beta" reading would need three head outputs; it
could not be verified and is not implemented.

τ is clipped to [τ_min + 1e-6 w, τ_max − 1e-6 w] (w = τ_max − τ_min), so that log p is finite at
every recorded temperature; the recorded τ and log p(τ) are those of the clipped value. log u and
log(1 − u) are taken of (τ − τ_min) / w and (τ_max − τ) / w, free of cancellation at either edge.

Shapes: B rows, N completion tokens.
"""

import dataclasses

import jax
import jax.numpy as jnp

from grpojax.sampling import methods

Array = jax.Array
_U_EPS = 1e-6


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HeadTemperature:
  """Sampling at a per-token temperature drawn from the temperature head (IntroLLM).

  Every setting is static: the distribution over temperatures depends on the parameters only
  through the head's output.

  Attributes:
    tau_min, tau_max: the temperature range, 0 < tau_min < tau_max.
    concentration: κ > 0; u ~ Beta(1 + κ m, 1 + κ (1 − m)).
    top_k, top_p, min_p: truncation after the temperature, as in `methods.Sample`.
  """

  tau_min: float = dataclasses.field(default=0.5, metadata=dict(static=True))
  tau_max: float = dataclasses.field(default=1.5, metadata=dict(static=True))
  concentration: float = dataclasses.field(default=8.0, metadata=dict(static=True))
  top_k: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  top_p: float = dataclasses.field(default=1.0, metadata=dict(static=True))
  min_p: float = dataclasses.field(default=0.0, metadata=dict(static=True))

  def __post_init__(self):
    if not 0 < self.tau_min < self.tau_max < float("inf"):
      raise ValueError(
        f"tau_min and tau_max must satisfy 0 < tau_min < tau_max < inf, got {self.tau_min}, "
        f"{self.tau_max}"
      )
    if not 0 < self.concentration < float("inf"):
      raise ValueError(f"concentration must be > 0 and finite, got {self.concentration}")
    # The truncation settings are checked by `methods.Sample`.
    self.token_method(1.0)

  def at(self, index_b: Array) -> "HeadTemperature":
    """Returns itself: the temperature comes from the head, not from a per-token array."""
    del index_b
    return self

  def token_method(self, temperature_b) -> methods.Sample:
    """The token-level method at the drawn temperatures [B]."""
    return methods.Sample(temperature_b, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)

  def beta_params(self, head_out) -> tuple[Array, Array]:
    """(a, b) of the Beta over u = (τ − τ_min) / (τ_max − τ_min), from the head's raw output."""
    m = jax.nn.sigmoid(jnp.asarray(head_out, jnp.float32))
    return 1.0 + self.concentration * m, 1.0 + self.concentration * (1.0 - m)

  def log_prob(self, head_out: Array, temperature: Array) -> Array:
    """log p(τ | z): the density of `temperature` under the head's output `head_out`.

    Args:
      head_out: the temperature head's raw outputs z, any shape.
      temperature: τ of the same shape (values outside the range are clipped into it, so that
        padding positions, recorded at τ = 1, stay finite).

    Returns:
      float32 log-densities (with respect to τ), differentiable in `head_out`.
    """
    a, b = self.beta_params(head_out)
    width = self.tau_max - self.tau_min
    tau = self._clipped(jnp.asarray(temperature, jnp.float32))
    # u and 1 − u from their own differences: 1 − u = (τ_max − τ) / w has no cancellation where
    # τ is close to τ_max (log1p(−u) of a rounded u would lose digits there).
    log_u = jnp.log(tau - self.tau_min) - jnp.log(width)
    log_1mu = jnp.log(self.tau_max - tau) - jnp.log(width)
    log_beta = jax.scipy.special.betaln(a, b)
    return (a - 1.0) * log_u + (b - 1.0) * log_1mu - log_beta - jnp.log(width)

  def _clipped(self, tau: Array) -> Array:
    """τ clipped to [τ_min + ε w, τ_max − ε w], w = τ_max − τ_min, ε = 1e-6 (finite log p)."""
    margin = _U_EPS * (self.tau_max - self.tau_min)
    return jnp.clip(tau, self.tau_min + margin, self.tau_max - margin)

  def draw(self, head_out_b: Array, key: Array) -> tuple[Array, Array]:
    """Draws τ per row and its log-density.

    Args:
      head_out_b: the head's raw outputs z [B].
      key: PRNG key.

    Returns:
      (τ [B] float32 in [τ_min, τ_max], log p(τ) [B] float32).
    """
    a, b = self.beta_params(head_out_b)
    u = jax.random.beta(key, a, b)
    tau = self._clipped(self.tau_min + (self.tau_max - self.tau_min) * u)
    return tau, self.log_prob(head_out_b, tau)

  def mean_temperature(self, head_out: Array) -> Array:
    """E[τ | z] = τ_min + (τ_max − τ_min) a / (a + b)."""
    a, b = self.beta_params(head_out)
    return self.tau_min + (self.tau_max - self.tau_min) * a / (a + b)
