"""IntroLLM (arXiv 2602.13035): a token policy and a temperature policy trained by coordinate
ascent on the same GRPO advantages.

The sampler draws each token's temperature τ_t from the temperature head's distribution
(`sampling.HeadTemperature`) and records log p_φold(τ_t); the trainer scores every token at its
own τ_t and re-evaluates log p_φ(τ_t) under the current head (`LossInputs.temperature_logprobs`).
Two policy-gradient terms share the group z-score advantages Â of the rewards:

  token:        ℓ^tok_t  = PPO-clip(log π_θ(o_t | τ_t) − log π_old(o_t | τ_t), Â)   (+ KL, entropy)
  temperature:  ℓ^temp_t = c · PPO-clip(log p_φ(τ_t) − log p_φold(τ_t), Â)

where PPO-clip(Δ, Â) = max(−Â e^Δ, −Â clip(e^Δ, 1 − ε, 1 + ε)) (arXiv 1707.06347). The paper's
abstract states joint training "using a coordinate ascent scheme"; its schedule could not be
read, so grpojax's reading is a configurable alternation: with `alternate_every` = k > 0, RL steps
[0, k) train the token policy only, [k, 2k) the temperature policy only, and so on; k = 0 trains
both every step. A phase is a weight of 0 or 1 on each term, so the resting term gets no
gradient. Two caveats of that reading, both documented choices: the temperature head reads the
decoder's hidden states and, as every head here, passes its gradient into the decoder, so a
temperature phase also moves the decoder through the temperature term; and AdamW's momentum and
weight decay keep moving a block whose gradient is zero for a step. The step counter lives in
the objective's state (checkpointed) and advances in `finalize`, once per RL step.

Legend: B rows, T response tokens.
"""

from typing import Any, NamedTuple

import jax.numpy as jnp

from grpojax.objectives import aggregation, base, surrogates
from grpojax.objectives import recipe_parts as parts

_TEMPERATURE_INPUTS = ("temperature", "temperature_logprobs", "sampler_temperature_logprobs")


class CoordinateState(NamedTuple):
  """State of `coordinate_ascent`.

  Attributes:
    step: int32 RL steps finalised so far (selects the phase).
    token, temperature: the two terms' own states.
  """

  step: Any
  token: Any
  temperature: Any


def temperature_policy_loss(
  *, epsilon_low: float = 0.2, epsilon_high: float = 0.2, coef: float = 1.0
) -> base.LossTransform:
  """loss += coef · PPO-clip on the temperature policy's ratio p_φ(τ_t) / p_φold(τ_t).

  The behaviour density is the sampler's (`sampler_temperature_logprobs`): the temperatures were
  drawn by the sampler's copy of the head. Metrics (those of `surrogates.ppo_clip`) come out of
  the surrogate unprefixed; `coordinate_ascent` prefixes them with `temperature/`.
  """
  surrogates.check_hparam(
    "temperature_policy_loss", "coef", coef, lambda v: 0 <= v < float("inf"), ">= 0 and finite"
  )

  def update(terms, state, x):
    loss_bt, metrics = surrogates.ppo_clip(
      x.temperature_logprobs,
      x.sampler_temperature_logprobs,
      x.advantages,
      terms.mask,
      epsilon_low=epsilon_low,
      epsilon_high=epsilon_high,
    )
    new = terms._replace(
      loss=terms.loss + coef * loss_bt, metrics=base.merge_metrics(terms.metrics, metrics)
    )
    return new, state

  requires = frozenset({*_TEMPERATURE_INPUTS, "advantages"})
  return base.LossTransform(init=base._no_state, update=update, requires=requires)


def phase_weights(step, alternate_every: int):
  """(token weight, temperature weight), each 0.0 or 1.0, at RL step `step`.

  k = `alternate_every` = 0: (1, 1) always; else (1, 0) when (step // k) is even, (0, 1) odd.
  """
  if alternate_every == 0:
    one = jnp.ones((), jnp.float32)
    return one, one
  token_phase = (jnp.asarray(step) // alternate_every) % 2 == 0
  return token_phase.astype(jnp.float32), (~token_phase).astype(jnp.float32)


def coordinate_ascent(
  token: base.LossTransform, temperature: base.LossTransform, *, alternate_every: int
) -> base.LossTransform:
  """The token chain and the temperature term, weighted by the phase of the RL step.

  Args:
    token: the token policy's loss chain (surrogate, regularisers); its mask and weights go on.
    temperature: the temperature policy's term (`temperature_policy_loss`).
    alternate_every: k >= 0 RL steps per phase; 0 trains both every step.

  Returns:
    A LossTransform with `CoordinateState`; metrics: the token chain's, the temperature term's
    prefixed `temperature/`, and `phase/token`, `phase/temperature` (the weights in force).
  """
  if isinstance(alternate_every, bool) or int(alternate_every) != alternate_every:
    raise ValueError(f"alternate_every must be an integer >= 0, got {alternate_every!r}")
  if alternate_every < 0:
    raise ValueError(f"alternate_every must be an integer >= 0, got {alternate_every!r}")
  alternate_every = int(alternate_every)

  def init():
    return CoordinateState(
      step=jnp.zeros((), jnp.int32), token=token.init(), temperature=temperature.init()
    )

  def update(terms, state, x):
    w_token, w_temperature = phase_weights(state.step, alternate_every)
    zero = jnp.zeros_like(terms.loss)
    tok, tok_state = token.update(terms._replace(loss=zero), state.token, x)
    tmp, tmp_state = temperature.update(terms._replace(loss=zero, metrics={}), state.temperature, x)
    metrics = base.merge_metrics(tok.metrics, tmp.metrics, prefix="temperature/")
    metrics = base.merge_metrics(
      metrics, {"phase/token": w_token, "phase/temperature": w_temperature}
    )
    new = tok._replace(
      loss=terms.loss + w_token * tok.loss + w_temperature * tmp.loss, metrics=metrics
    )
    return new, state._replace(token=tok_state, temperature=tmp_state)

  def finalize(state):
    return CoordinateState(
      step=state.step + 1,
      token=token.finalize(state.token),
      temperature=temperature.finalize(state.temperature),
    )

  return base.LossTransform(
    init=init, update=update, finalize=finalize, requires=token.requires | temperature.requires
  )


def introllm(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  temperature_epsilon: float = 0.2,
  temperature_coef: float = 1.0,
  alternate_every: int = 1,
  kl_coef: float = 0.04,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """IntroLLM (arXiv 2602.13035): GRPO on the token policy (z-score advantages, PPO clip 0.2,
  k3 KL β = 0.04, (1/G) Σ_i (1/|o_i|) Σ_t, as the `grpo` recipe) and a PPO-clip policy gradient
  on the temperature policy's log-densities with the same advantages, alternated every
  `alternate_every` RL steps [ours: the paper's schedule is unknown; 0 = both every step].

  The temperature range and concentration are sampling settings (`rollout.temperature_policy`):
  the sampler draws with them and the trainer scores with them. The KL and the entropy bonus
  act on the token policy and follow its phase.
  """
  check = surrogates.check_hparam
  check("introllm", "temperature_epsilon", temperature_epsilon, lambda v: v >= 0, ">= 0")
  check("introllm", "temperature_coef", temperature_coef, lambda v: 0 <= v < float("inf"), ">= 0")
  if (
    isinstance(alternate_every, bool) or not isinstance(alternate_every, int) or alternate_every < 0
  ):
    raise ValueError(f"introllm: alternate_every must be an integer >= 0, got {alternate_every!r}")
  token = parts.objective(
    parts.zscore(eps, ddof),
    [parts.ppo_clip(epsilon_low, epsilon_high, parts.INF)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  temperature = temperature_policy_loss(
    epsilon_low=temperature_epsilon, epsilon_high=temperature_epsilon, coef=temperature_coef
  )
  return token._replace(
    terms=coordinate_ascent(token.terms, temperature, alternate_every=alternate_every)
  )
