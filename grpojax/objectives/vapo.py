"""VAPO (arXiv 2504.05118): PPO with a value head, decoupled and length-adaptive GAE, a token-level
clip-higher loss and a negative log-likelihood on the correct samples.

The pieces, each a pure function with a transform around it:

  gae_advantages(rewards_pg, values_bt, mask_bt)   policy advantages by GAE on the behaviour
                                                   policy's values V_old, λ_policy = VAPO's
                                                   length-adaptive λ (a GroupTransform reading
                                                   `values`, so the trainer scores the rollout
                                                   before updating)
  value_loss_terms(values_bt, rewards_b, mask_bt)  ½ (V_θ − G_t)² on the λ_critic = 1 targets
  positive_nll_terms(logprobs_bt, rewards_b, ...)  −log π_θ on the tokens of correct samples

and the `vapo` recipe chaining them after PPO's clip (ε 0.2 / 0.28). What we read and what we
chose where the paper's method section was not available (METHODS.md §4; summaries on
themoonlight.io, newfacade.github.io and xavierzhang2002.github.io agree on the points below):

- Sparse terminal reward, γ = 1: the row's reward sits on its last response token.
- Critic targets with λ_critic = 1 are the Monte-Carlo returns G_t = Σ_{k≥t} γ^{k−t} r_k, which
  need no values, so the loss computes them from the rewards alone (with γ = 1, G_t = R on every
  token). Other λ_critic would need V_old in the loss; `gae.gae` supports them for other uses.
- λ_policy = clamp(1 − 1/clamp(α·l, min=1), 0, 1) with α = 0.05 (NeMo-RL's form of the paper's
  1 − 1/(α·l); `gae.vapo_length_adaptive_lambda`). On answers shorter than 1/α = 20 tokens this
  is 0: one-step TD advantages r_t + V_{t+1} − V_t. `adaptive_lambda=False` uses a fixed
  `lambda_policy` instead (the paper's decoupled-GAE ablation used 0.95).
- The advantages are whitened over the batch's tokens (mean 0, unbiased variance 1), as verl's
  `compute_gae_advantage_return` does [GUESS: VAPO was built on verl; the paper says nothing].
- L_NLL = −(1/Σ_{o_i∈T}|o_i|) Σ_{o_i∈T} Σ_t log π_θ over the correct samples T, weighted μ = 0.1
  [RECALL]. [ours] Here it shares the token-mean denominator of the PPO loss (all the batch's
  tokens), so that micro-batch sums stay exact; the effective weight is μ times the fraction of
  tokens that belong to correct samples. "Correct" is reward ≥ `correct_threshold`.
- [ours] The critic is a linear head on the policy's last hidden states (`models.heads`), not a
  separate model; its loss gradient reaches the shared decoder, weighted `value_coef`. The head
  has its own learning rate (`optim.head_learning_rate`), and the critic warm-up (value
  pretraining on the warm-started policy's Monte-Carlo returns, decoder frozen) is the trainer's
  `train.critic_warmup_steps`.

Shapes: P prompts, G samples per prompt, B = P·G rows, T response tokens.
"""

import jax
import jax.numpy as jnp

from grpojax.objectives import aggregation, base, gae, masked, surrogates
from grpojax.objectives import recipe_parts as parts

INF = parts.INF


def _row_rewards(rewards_b, mask_bt):
  """float32 [B] rewards, 0 on rows without response tokens (their reward may be garbage)."""
  row_valid = jnp.any(jnp.asarray(mask_bt) > 0, axis=-1)
  return masked.sanitize(rewards_b, row_valid)


def whiten(x_bt, mask_bt, *, eps: float = 1e-8):
  """(x − mean) / sqrt(var + eps) over the masked entries, unbiased variance (verl's
  `masked_whiten`); 0 off the mask. Fewer than two entries: centred only."""
  valid = jnp.asarray(mask_bt) > 0
  count = jnp.sum(valid.astype(jnp.float32))
  mean = masked.masked_mean(x_bt, valid)
  centred = jnp.where(valid, x_bt - mean, 0.0)
  var = jnp.sum(jnp.square(centred)) / jnp.maximum(count - 1.0, 1.0)
  scale = jnp.where(count > 1, jax.lax.rsqrt(var + eps), 1.0)
  return centred * scale


def gae_advantages(
  rewards_pg,
  values_bt,
  mask_bt,
  valid_pg=None,
  *,
  gamma: float = 1.0,
  alpha: float = 0.05,
  adaptive_lambda: bool = True,
  lambda_policy: float = 0.95,
  whiten_advantages: bool = True,
):
  """VAPO's policy advantages: GAE on the behaviour policy's values with a length-adaptive λ.

    r_t = R·[t = last token],   δ_t = r_t + γ V_{t+1} − V_t,   Â_t = Σ_l (γ λ_i)^l δ_{t+l},
    λ_i = clamp(1 − 1/clamp(α·|o_i|, min=1), 0, 1)   (or the fixed `lambda_policy`),

  then whitened over the valid tokens when `whiten_advantages`.

  Args:
    rewards_pg: [P, G] rewards.
    values_bt: [P·G, T] V_old(s_t), the values the behaviour policy's critic gave each token.
    mask_bt: [P·G, T] response mask.
    valid_pg: [P, G] samples that count (None: all); the others get 0.
    gamma: discount in [0, 1].
    alpha: α > 0 of the length-adaptive λ.
    adaptive_lambda: use the length-adaptive λ (else `lambda_policy`).
    lambda_policy: the fixed λ in [0, 1] when not adaptive.
    whiten_advantages: whiten over the batch's valid tokens.

  Returns:
    [P·G, T] float32 advantages, stop-gradient, 0 off the mask.
  """
  surrogates.check_hparam("vapo", "alpha", alpha, lambda v: 0 < v < float("inf"), "> 0")
  surrogates.check_hparam(
    "vapo", "lambda_policy", lambda_policy, lambda v: 0 <= v <= 1, "in [0, 1]"
  )
  mask = jnp.asarray(mask_bt) > 0
  if valid_pg is not None:
    mask = mask & jnp.reshape(jnp.asarray(valid_pg), (-1, 1))
  rewards_b = jnp.reshape(rewards_pg, (-1,))
  values = masked.sanitize(values_bt, mask)
  lengths = jnp.sum(mask.astype(jnp.float32), axis=-1)
  lam = (
    gae.vapo_length_adaptive_lambda(lengths, alpha=alpha)
    if adaptive_lambda
    else jnp.full(lengths.shape, lambda_policy, jnp.float32)
  )
  out = gae.gae(
    gae.terminal_rewards(rewards_b, mask),
    values,
    mask,
    gamma=gamma,
    lambda_policy=lam,
    lambda_critic=1.0,
  )
  adv = out.advantages_bt
  if whiten_advantages:
    adv = whiten(adv, mask)
  return jax.lax.stop_gradient(jnp.where(mask, adv, 0.0))


def value_loss_terms(values_bt, rewards_b, mask_bt, *, gamma: float = 1.0):
  """½ (V_θ(s_t) − G_t)² per token, G_t the Monte-Carlo return (the λ_critic = 1 target).

  Returns:
    (loss_bt [B, T], 0 off the mask; metrics `value_loss` and `value_mean`, masked means).
  """
  valid = jnp.asarray(mask_bt) > 0
  returns = gae.monte_carlo_returns(rewards_b, valid, gamma=gamma)
  loss = jnp.where(valid, 0.5 * jnp.square(values_bt - returns), 0.0)
  metrics = {
    "value_loss": masked.masked_mean(loss, valid),
    "value_mean": masked.masked_mean(values_bt, valid),
  }
  return loss, metrics


def positive_nll_terms(logprobs_bt, rewards_b, mask_bt, *, correct_threshold: float = 0.5):
  """−log π_θ(o_t) on the tokens of correct samples (reward ≥ `correct_threshold`), 0 elsewhere.

  Returns:
    (loss_bt [B, T]; metrics `nll_pos` (the mean over those tokens, 0 if none) and
    `nll_pos_frac` (the fraction of the mask's tokens they are)).
  """
  valid = jnp.asarray(mask_bt) > 0
  correct = _row_rewards(rewards_b, valid) >= correct_threshold
  on = valid & correct[:, None]
  loss = jnp.where(on, -logprobs_bt, 0.0)
  metrics = {
    "nll_pos": masked.masked_mean(loss, on),
    "nll_pos_frac": masked.masked_mean(on.astype(jnp.float32), valid),
  }
  return loss, metrics


# ---------------------------------------------------------------------------------------------
# Transforms and the recipe.
# ---------------------------------------------------------------------------------------------


def gae_advantage(**hparams) -> base.GroupTransform:
  """`gae_advantages` as the objective's advantage transform (reads V_old: `values`)."""

  def update(rewards_pg, state, inputs):
    adv = gae_advantages(rewards_pg, inputs.values, inputs.mask, inputs.valid_pg, **hparams)
    return adv, state

  return base.GroupTransform(
    init=base._no_state, update=update, requires=frozenset({"values", "mask"})
  )


def value_loss(*, coef: float, gamma: float = 1.0) -> base.LossTransform:
  """loss += coef · ½ (V_θ − G_t)² on the mask in force (the critic's regression)."""
  surrogates.check_hparam("vapo", "value_coef", coef, lambda v: 0 < v < float("inf"), "> 0")

  def update(terms, state, x):
    loss, metrics = value_loss_terms(x.values, x.rewards, terms.mask, gamma=gamma)
    new = terms._replace(
      loss=terms.loss + coef * loss, metrics=base.merge_metrics(terms.metrics, metrics)
    )
    return new, state

  return base.LossTransform(
    init=base._no_state, update=update, requires=frozenset({"values", "rewards"})
  )


def positive_nll(*, coef: float, correct_threshold: float = 0.5) -> base.LossTransform:
  """loss += coef · (−log π_θ) on the correct samples' tokens (VAPO's positive-example LM loss)."""
  surrogates.check_hparam("vapo", "nll_coef", coef, lambda v: 0 <= v < float("inf"), ">= 0")

  def update(terms, state, x):
    loss, metrics = positive_nll_terms(
      x.logprobs, x.rewards, terms.mask, correct_threshold=correct_threshold
    )
    new = terms._replace(
      loss=terms.loss + coef * loss, metrics=base.merge_metrics(terms.metrics, metrics)
    )
    return new, state

  return base.LossTransform(init=base._no_state, update=update, requires=frozenset({"rewards"}))


def vapo(
  *,
  gamma: float = 1.0,
  alpha: float = 0.05,
  adaptive_lambda: bool = True,
  lambda_policy: float = 0.95,
  whiten_advantages: bool = True,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.28,
  dual_clip_c: float = INF,
  nll_coef: float = 0.1,
  correct_threshold: float = 0.5,
  value_coef: float = 1.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """VAPO (arXiv 2504.05118): GAE advantages on the value head's V_old with the length-adaptive
  λ_policy (α = 0.05), γ = 1, PPO clip-higher 0.2 / 0.28, μ = 0.1 positive-example NLL, the value
  loss on λ_critic = 1 (Monte-Carlo) targets, token-mean, no KL. See the module docstring for
  what is the paper's and what is ours."""
  advantage = gae_advantage(
    gamma=gamma,
    alpha=alpha,
    adaptive_lambda=adaptive_lambda,
    lambda_policy=lambda_policy,
    whiten_advantages=whiten_advantages,
  )
  terms = [parts.ppo_clip(epsilon_low, epsilon_high, dual_clip_c)]
  if nll_coef > 0:
    terms.append(positive_nll(coef=nll_coef, correct_threshold=correct_threshold))
  else:
    positive_nll(coef=nll_coef)  # checks the value
  terms.append(value_loss(coef=value_coef, gamma=gamma))
  return parts.objective(
    advantage,
    terms,
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
