"""Recipes that select tokens, reshape advantages or regress instead of clipping a ratio:
STAPO, ProGRPO, Clip-Cov, KL-Cov, OAPL, FlowRL. Plain functions like those of `recipes`, whose
keyword signatures are their configs' only defaults."""

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
  return parts.objective(
    parts.zscore(eps, ddof),
    [filter_, parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def progrpo(
  *,
  alpha: float = 0.1,
  low_prob_fraction: float = 0.2,
  correct_threshold: float = 0.5,
  correct_only: bool = False,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """ProGRPO (arXiv 2602.05281): the ARM advantage over T_low (20%) [ours: α = 0.1; c(q) = the
  group's mean answer confidence], then GRPO's clip [ours: no KL]."""
  advantage = t.progrpo_advantages(
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
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  clip_cov_ratio: float = 2e-4,
  clip_cov_lb: float = 1.0,
  clip_cov_ub: float = 5.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """Clip-Cov (arXiv 2505.22617, verl defaults): ratio 2e-4, band (1, 5), clip 0.2."""
  surrogate = t.policy_loss(
    selective_surrogates.clip_cov,
    extras=("key",),
    epsilon_low=epsilon_low,
    epsilon_high=epsilon_high,
    clip_cov_ratio=clip_cov_ratio,
    clip_cov_lb=clip_cov_lb,
    clip_cov_ub=clip_cov_ub,
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def kl_cov(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  kl_cov_ratio: float = 2e-4,
  kl_cov_coef: float = 1.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """KL-Cov (arXiv 2505.22617): the top 2e-4 tokens by covariance get |Δ| with coefficient 1.0
  (verl's code fallback; its actor.yaml says 0.1), no ratio clip."""
  surrogates.check_hparam("kl_cov", "kl_cov_coef", kl_cov_coef, lambda v: v >= 0, ">= 0")
  surrogate = t.policy_loss(
    selective_surrogates.kl_cov, kl_cov_ratio=kl_cov_ratio, kl_coef=kl_cov_coef
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


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


def flowrl(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  beta: float = 15.0,
  is_weight_clip: float = INF,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """FlowRL (arXiv 2509.15207): trajectory balance with β = 15 against a learned log Z (the
  log-Z head), the GRPO advantage as the log-reward, the unclipped IS weight (the code; the paper
  clips: `is_weight_clip`), mean_i L_i. The reference policy enters the residual."""
  surrogate = t.policy_loss(
    regression_losses.flowrl_loss,
    extras=("log_z", "ref_logprobs"),
    beta=beta,
    is_weight_clip=parts.none_if_inf(is_weight_clip),
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
