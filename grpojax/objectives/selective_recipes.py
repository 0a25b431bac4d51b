"""Recipes that select tokens, reshape advantages or regress instead of clipping a ratio:
STAPO, ProGRPO, Clip-Cov, KL-Cov, OAPL, FlowRL. Plain functions like those of `recipes`, whose
keyword signatures are their configs' only defaults."""

import jax.numpy as jnp

from grpojax.objectives import advantages as adv_lib
from grpojax.objectives import (
  aggregation,
  base,
  regression_losses,
  selective_surrogates,
  surrogates,
)
from grpojax.objectives import (
  recipe_parts as parts,
)
from grpojax.objectives import transforms as t

INF = parts.INF


def stapo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  prob_threshold: float = 0.01,
  entropy_rule: str = "quantile",
  entropy_quantile: float = 0.05,
  entropy_threshold: float = 0.0,
  use_old_probs: bool = False,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """STAPO (arXiv 2602.15620): the S2T mask (τ_p = 0.01, τ_h = the 5% entropy quantile of the
  batch, on π_θ's probability) then GRPO's clip 0.2, renormalised over the kept tokens
  [ours: token-mean, no KL]. `entropy_rule` "fixed" uses `entropy_threshold` (> 0) as τ_h."""
  if entropy_rule not in ("quantile", "fixed"):
    raise ValueError(f"entropy_rule must be 'quantile' or 'fixed', got {entropy_rule!r}.")
  if entropy_rule == "fixed" and not entropy_threshold > 0:
    raise ValueError(
      f"entropy_threshold must be > 0 with entropy_rule='fixed', got {entropy_threshold}."
    )
  filter_ = t.token_filter(
    selective_surrogates.stapo_mask,
    probs="old_logprobs" if use_old_probs else "logprobs",
    extras=("entropy",),
    prob_threshold=prob_threshold,
    entropy_quantile=entropy_quantile,
    entropy_threshold=entropy_threshold if entropy_rule == "fixed" else None,
  )
  objective = parts.objective(
    parts.zscore(eps, ddof),
    [filter_, parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  # The entropy quantile is taken over the micro-batch's tokens.
  return objective._replace(micro_batch_statistics=entropy_rule == "quantile")


def progrpo(
  *,
  alpha: float = 0.1,
  low_prob_fraction: float = 0.2,
  correct_threshold: float = 0.5,
  correct_only: bool = False,
  prompt_confidence: bool = True,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """ProGRPO (arXiv 2602.05281): the ARM advantage A + α(c(q) − c(o|q)) with both confidences
  the mean log-prob over T_low, the lowest-probability 20% of the tokens; c(q) from the prompt
  tokens of the pre-update forward pass (`prompt_confidence=False`: the group's mean answer
  confidence); then GRPO's clip [ours: α = 0.1, no KL, seq-mean-token-mean].

  T_low is the paper's "low-probability token length normalisation": the sources read (the
  abstract, secondary summaries; the paper's body and code were not available) describe it as
  the normalisation of the confidence (a mean over T_low instead of over every token), which is
  what the confidences do here. No source states a policy-loss aggregation over T_low, and
  restricting the gradient to 20% of the tokens would be another algorithm, so the loss keeps
  GRPO's aggregation."""
  advantage = t.progrpo_advantages(
    prompt_confidence=prompt_confidence,
    alpha=alpha,
    low_prob_fraction=low_prob_fraction,
    correct_threshold=correct_threshold,
    correct_only=correct_only,
    eps=eps,
    ddof=ddof,
  )
  return parts.objective(
    advantage,
    [parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def clip_cov(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 1.0,
  epsilon_high: float = 1.0,
  clip_cov_ratio: float = 2e-4,
  clip_cov_lb: float = 1.0,
  clip_cov_ub: float = 5.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """Clip-Cov (arXiv 2505.22617) as the authors ran it (PRIME-RL/Entropy-Mechanism-of-RL
  `recipe/dapo/7b_clip_cov.sh`): detach 2e-4 of the tokens with covariance in (1, 5), the PPO
  clip loosened to ratio bounds [0, 2] (`clip_ratio_low = clip_ratio_high = 1`), so the
  covariance clip is the trust region; token-mean, no KL. verl's generic defaults clip at 0.2
  (`epsilon_low = epsilon_high = 0.2`). The authors' run also filters groups by accuracy
  (DAPO's dynamic sampling), a data-side choice left to the config."""
  surrogate = t.policy_loss(
    selective_surrogates.clip_cov,
    extras=("key",),
    epsilon_low=epsilon_low,
    epsilon_high=epsilon_high,
    clip_cov_ratio=clip_cov_ratio,
    clip_cov_lb=clip_cov_lb,
    clip_cov_ub=clip_cov_ub,
  )
  objective = parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  # The covariance selection ranks the micro-batch's tokens.
  return objective._replace(micro_batch_statistics=True)


def kl_cov(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  kl_cov_ratio: float = 2e-3,
  kl_cov_coef: float = 1.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """KL-Cov (arXiv 2505.22617) as the authors ran it (PRIME-RL/Entropy-Mechanism-of-RL
  `recipe/dapo/7b_kl_cov.sh`: `k_percent=0.2`, a percentage, `ppo_kl_coef=1`): the top 2e-3
  tokens by covariance get |Δ| with coefficient 1.0, no ratio clip, token-mean. 2e-3 is their
  7B value (32B: 2e-4); this task's policies are far smaller, so the 7B value is ours to keep.
  verl's actor.yaml sets `ppo_kl_coef: 0.1`."""
  surrogates.check_hparam("kl_cov", "kl_cov_coef", kl_cov_coef, lambda v: v >= 0, ">= 0")
  surrogate = t.policy_loss(
    selective_surrogates.kl_cov, kl_cov_ratio=kl_cov_ratio, kl_coef=kl_cov_coef
  )
  objective = parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  # The covariance selection ranks the micro-batch's tokens.
  return objective._replace(micro_batch_statistics=True)


def oapl(
  *,
  beta1: float = 1.0,
  beta2: float = 1e-3,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """OAPL (arXiv 2602.19362): target r − V̂*(x) with β1 = 1.0, (β2 S_i − target)² with
  β2 = 1e-3 against the sampler's (lagged) log-probs, mean_i L_i."""
  return parts.objective(
    t.group_advantages(adv_lib.oapl_advantages, beta1=beta1),
    [t.policy_loss(regression_losses.oapl_loss, behaviour="sampler_logprobs", beta2=beta2)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def _raw_rewards(rewards_pg, valid_pg=None):
  """The rewards themselves as the log-reward (0 on invalid samples)."""
  rewards = jnp.asarray(rewards_pg, jnp.float32)
  return rewards if valid_pg is None else jnp.where(valid_pg, rewards, 0.0)


def flowrl(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  beta: float = 15.0,
  is_weight_clip: float = INF,
  is_weight_max: float = INF,
  log_reward: str = "advantage",
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """FlowRL (arXiv 2509.15207): trajectory balance with β = 15 against a learned log Z (the
  log-Z head), the GRPO advantage as the log-reward, the unclipped IS weight (the code; the paper
  clips: `is_weight_clip`; a verl port caps it at 10: `is_weight_max=10`), mean_i L_i. The
  reference policy enters the residual.

  `log_reward="reward"` puts the raw reward in the residual instead of the group z-score. Then
  the least-squares fit of log Z to a prompt's rollouts is β·(mean reward) minus the mean
  length-normalised log-ratio to the reference, so log Z / β estimates the prompt's online
  accuracy, the signal PACED-RL (arXiv 2602.12642) selects prompts by; with the z-score every
  prompt's mean log-reward is 0 and log Z carries no accuracy."""
  if log_reward not in ("advantage", "reward"):
    raise ValueError(f"log_reward must be 'advantage' or 'reward', got {log_reward!r}.")
  surrogate = t.policy_loss(
    regression_losses.flowrl_loss,
    extras=("log_z", "ref_logprobs"),
    beta=beta,
    is_weight_clip=parts.none_if_inf(is_weight_clip),
    is_weight_max=parts.none_if_inf(is_weight_max),
  )
  advantage = (
    parts.zscore(eps, ddof) if log_reward == "advantage" else t.group_advantages(_raw_rewards)
  )
  return parts.objective(
    advantage,
    [surrogate],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
