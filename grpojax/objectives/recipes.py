"""Named recipes (GRPO, DAPO, GSPO, ...) as plain functions returning an `Objective`.

A recipe's keyword signature is the only place its defaults are written: `default_config(name)`
reads them (`objectives.config`), a config overrides them field by field, and the recipe is
called with the result. Defaults are the papers'; where a source is uncertain the choice is ours,
marked [ours] here and explained in README.md. A new variant is a new function of the same shape
(in any module: `objective.recipe = "my_pkg.recipes:my_variant"`), usually a few lines chaining
existing transforms with one new one.

Every recipe takes the same three regulariser knobs: `kl_coef` (β of a KL penalty to the
reference policy; 0 = no reference model), `kl_kind` (k1 | k2 | k3) and `entropy_coef` (an
entropy bonus). Corrections for the sampler–trainer mismatch (`tis`, `mis`, `opsm`, below) are
chosen apart, in `objective.correction`, and chained in front of any recipe.
"""

from grpojax.objectives import advantages as adv_lib
from grpojax.objectives import (
  aggregation,
  base,
  branch_recipes,
  distribution_losses,
  soft_surrogates,
  surrogates,
)
from grpojax.objectives import introllm as introllm_lib
from grpojax.objectives import recipe_parts as parts
from grpojax.objectives import seeupo as seeupo_lib
from grpojax.objectives import selective_recipes as selective
from grpojax.objectives import transforms as t
from grpojax.objectives import vapo as vapo_lib
from grpojax.objectives import vcpo as vcpo_lib

INF = parts.INF


# ---------------------------------------------------------------------------------------------
# Recipes.
# ---------------------------------------------------------------------------------------------


def grpo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  dual_clip_c: float = INF,
  kl_coef: float = 0.04,
  kl_kind: str = "k3",
  kl_target: float = 0.0,
  entropy_coef: float = 0.0,
) -> base.Objective:
  """GRPO, DeepSeekMath (arXiv 2402.03300): group z-score advantages (verl: ddof 1, eps 1e-6),
  PPO clip 0.2 [community default], k3 KL β = 0.04 in the loss, (1/G) Σ_i (1/|o_i|) Σ_t.

  `kl_target` > 0 moves β with Ziegler et al.'s proportional controller (arXiv 1909.08593)
  towards that token-mean KL, starting from `kl_coef`.
  """
  return parts.objective(
    parts.zscore(eps, ddof),
    [parts.ppo_clip(epsilon_low, epsilon_high, dual_clip_c)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    kl_target=kl_target,
    entropy_coef=entropy_coef,
  )


def dr_grpo(
  *,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  dual_clip_c: float = INF,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """Dr. GRPO (arXiv 2503.20783): no std normalisation, token sums over the constant L_max (the
  generation budget: the padded completion length), β = 0."""
  return parts.objective(
    t.group_advantages(adv_lib.dr_grpo_advantages),
    [parts.ppo_clip(epsilon_low, epsilon_high, dual_clip_c)],
    aggregation.seq_mean_token_sum_norm,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def dapo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.28,
  dual_clip_c: float = 10.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """DAPO (arXiv 2503.14476): clip-higher 0.2/0.28, token-mean, no KL; the verl recipe's dual
  clip c = 10. Dynamic sampling and overlong shaping act on the data, not the loss: configs set
  `rollout.refill` and `reward.overlong` (see configs/dapo.py)."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [parts.ppo_clip(epsilon_low, epsilon_high, dual_clip_c)],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def gspo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 3e-4,
  epsilon_high: float = 4e-4,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """GSPO (arXiv 2507.18071): the sequence ratio clipped at 3e-4 / 4e-4, (1/G) Σ_i, no KL."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [t.policy_loss(surrogates.gspo, epsilon_low=epsilon_low, epsilon_high=epsilon_high)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def gspo_token(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 3e-4,
  epsilon_high: float = 4e-4,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """GSPO-token (arXiv 2507.18071 §4.3, the verl/tunix form)."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [t.policy_loss(surrogates.gspo_token, epsilon_low=epsilon_low, epsilon_high=epsilon_high)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def sapo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  tau_pos: float = 1.0,
  tau_neg: float = 1.05,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """SAPO (arXiv 2511.20347): soft gate τ_pos = 1.0, τ_neg = 1.05, (1/G) Σ_i (1/|y_i|) Σ_t."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [t.policy_loss(soft_surrogates.sapo, tau_pos=tau_pos, tau_neg=tau_neg)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def cispo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = INF,
  epsilon_high: float = 0.2,
  bound: str = "relative",
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """CISPO (MiniMax-M1, arXiv 2506.13585): detached clipped IS weight with no lower bound,
  ε_high = 0.2 [verl example; M1's own value unconfirmed], token-mean, no KL."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [
      t.policy_loss(
        soft_surrogates.cispo,
        epsilon_low=parts.none_if_inf(epsilon_low),
        epsilon_high=epsilon_high,
        bound=bound,
      )
    ],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def maspo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  sigma_base: float = 1.0,
  alpha: float = 0.3,
  sigma_high: float = 10.0,
  adv_low: float = 0.1,
  adv_high: float = 10.0,
  beta_pos: float = 0.03,
  beta_neg: float = 0.03,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """MASPO (arXiv 2602.17550): the official code's defaults, token-mean, no KL."""
  surrogate = t.policy_loss(
    soft_surrogates.maspo,
    sigma_base=sigma_base,
    alpha=alpha,
    sigma_high=sigma_high,
    adv_low=adv_low,
    adv_high=adv_high,
    beta_pos=beta_pos,
    beta_neg=beta_neg,
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def vespo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  k_pos: float = 2.0,
  lambda_pos: float = 3.0,
  k_neg: float = 3.0,
  lambda_neg: float = 2.0,
  include_sampler_ratio: bool = False,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """VESPO (arXiv 2602.10693): the kernel (k, λ) = (2, 3) / (3, 2), token-mean, no KL.
  `include_sampler_ratio` folds π_old/π_samp into the sequence weight (its official option)."""
  surrogate = t.policy_loss(
    soft_surrogates.vespo,
    extras={"rollout_logprobs": "sampler_logprobs"} if include_sampler_ratio else (),
    k_pos=k_pos,
    lambda_pos=lambda_pos,
    k_neg=k_neg,
    lambda_neg=lambda_neg,
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def gmpo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.4,
  epsilon_high: float = 0.4,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """GMPO (arXiv 2507.20673, verl `geo_mean`): log-space clip 0.4, mean_i L_i."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [t.policy_loss(surrogates.gmpo, epsilon_low=epsilon_low, epsilon_high=epsilon_high)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def reinforce(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """REINFORCE (Williams 1992; the GPG loss, arXiv 2504.02546) [ours: GRPO's group z-score as
  the baseline, token-mean], no trust region."""
  return parts.objective(
    parts.zscore(eps, ddof),
    [t.policy_loss(surrogates.reinforce)],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def rloo(*, kl_coef: float = 0.0, kl_kind: str = "k3", entropy_coef: float = 0.0) -> base.Objective:
  """RLOO (arXiv 2402.14740): leave-one-out baseline, REINFORCE on the whole sequence (token
  sum, mean over sequences) [RECALL]."""
  return parts.objective(
    t.group_advantages(adv_lib.rloo_advantages),
    [t.policy_loss(surrogates.reinforce)],
    aggregation.seq_mean_token_sum,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def reinforce_pp(
  *,
  baseline: bool = False,
  eps: float = 1e-6,
  ddof: int = 1,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """REINFORCE++ (arXiv 2501.03262): rewards whitened over the whole batch (with `baseline`,
  after subtracting the group mean: REINFORCE++-baseline), PPO clip, token-mean [ours: the
  paper's per-token KL reward penalty is not applied; `kl_coef` adds a KL loss instead]."""
  estimator = (
    adv_lib.reinforce_pp_baseline_advantages if baseline else adv_lib.reinforce_pp_advantages
  )
  return parts.objective(
    t.group_advantages(estimator, eps=eps, ddof=ddof),
    [parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def pass_at_k(
  *,
  k: int = 4,
  eps: float = 1e-6,
  correct_threshold: float = 0.5,
  epsilon_low: float = 0.2,
  epsilon_high: float = 0.2,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """Pass@k training (arXiv 2508.10751): the analytical pass@k advantage, PPO clip,
  (1/G) Σ_i (1/|o_i|) Σ_t [ours: clip and aggregation as GRPO's]. k must not exceed the group
  size G (checked when the advantages are computed)."""
  advantage = t.group_advantages(
    adv_lib.pass_at_k_advantages, k=k, eps=eps, correct_threshold=correct_threshold
  )
  return parts.objective(
    advantage,
    [parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def lad(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  eta: float = 0.25,
  divergence: str = "js",
  log_clip: float = 20.0,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """LAD (arXiv 2602.20132), experimental: the practical f-divergence objective of Lemma 3.2 /
  Eq. 8, exp(A/η)·f((π_θ/π_old)/exp(A/η)), Jensen–Shannon f, 1/η = 4 [2ND: the authors' code as
  ported], group z-score advantages, no clip, no KL [ours: per-token ratio, token-mean; see
  `distribution_losses`]."""
  surrogate = t.policy_loss(
    distribution_losses.lad, eta=eta, divergence=divergence, log_clip=log_clip
  )
  return parts.objective(
    parts.zscore(eps, ddof),
    [surrogate],
    aggregation.token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )


def vcpo(
  *,
  eps: float = 1e-6,
  ddof: int = 1,
  is_threshold: float = 8.0,
  base_ess_ratio: float = 1.0,
  ess_scaling_rule: str = "sqrt",
  optimal_baseline: bool = False,
  norm_by_std: bool = True,
  epsilon_low: float = 1.0,
  epsilon_high: float = 1e9,
  kl_coef: float = 0.0,
  kl_kind: str = "k3",
  entropy_coef: float = 0.0,
) -> base.Objective:
  """VCPO (arXiv 2602.17616; mit-han-lab/vcpo `vcpo_k=10.sh`): sequence-level rollout IS
  min(π_old/π_samp, 8) on the policy term, the PPO clip effectively off (1.0 / 1e9),
  seq-mean-token-mean, no KL, and each optimiser step's update scaled by
  sqrt(min(1, ρ_ess/ρ_base)), ρ_base = 1 (see `objectives.vcpo`). `optimal_baseline` replaces
  the group z-score by the off-policy optimal baseline (per-row gradient norms: about one extra
  backward pass per row; off by default [ours])."""
  if optimal_baseline:
    advantage = vcpo_lib.optimal_baseline_transform(
      is_threshold=is_threshold, norm_by_std=norm_by_std, eps=eps, ddof=ddof
    )
  else:
    advantage = parts.zscore(eps, ddof)
  correction = t.mismatch_correction(
    mode="truncate", high=is_threshold, level="sequence", seq_ratio="product"
  )
  objective = parts.objective(
    advantage,
    [correction, parts.ppo_clip(epsilon_low, epsilon_high, INF)],
    aggregation.seq_mean_token_mean,
    kl_coef=kl_coef,
    kl_kind=kl_kind,
    entropy_coef=entropy_coef,
  )
  scaling = vcpo_lib.ess_lr_scaling(base_ess_ratio=base_ess_ratio, rule=ess_scaling_rule)
  return objective._replace(lr_scaling=scaling)


RECIPES = {
  fn.__name__: fn
  for fn in (
    grpo,
    dr_grpo,
    dapo,
    gspo,
    gspo_token,
    sapo,
    cispo,
    maspo,
    selective.stapo,
    selective.progrpo,
    vespo,
    gmpo,
    selective.clip_cov,
    selective.kl_cov,
    selective.oapl,
    selective.flowrl,
    reinforce,
    rloo,
    reinforce_pp,
    pass_at_k,
    lad,
    vcpo,
    branch_recipes.deep_grpo,
    vapo_lib.vapo,
    introllm_lib.introllm,
    seeupo_lib.seeupo,
  )
}


# ---------------------------------------------------------------------------------------------
# Corrections for the sampler–trainer mismatch, chained in front of any recipe.
# ---------------------------------------------------------------------------------------------


def tis(
  *,
  high: float = 2.0,
  low: float = 0.0,
  level: str = "token",
  seq_ratio: str = "product",
  log_ratio_clip: float = 20.0,
) -> base.LossTransform:
  """Truncated importance sampling (Yao et al. 2025; verl/tunix cap C = 2.0):
  w = min(π_old/π_samp, high), or clip(·, low, high) with `low` > 0."""
  return t.mismatch_correction(
    mode="truncate",
    high=high,
    low=None if low == 0 else low,
    level=level,
    seq_ratio=seq_ratio,
    log_ratio_clip=log_ratio_clip,
  )


def mis(
  *,
  high: float = 5.0,
  low: float = 0.5,
  level: str = "token",
  seq_ratio: str = "product",
  log_ratio_clip: float = 20.0,
) -> base.LossTransform:
  """Masked importance sampling / IcePop (arXiv 2510.18855): tokens whose ratio leaves
  [0.5, 5] (IcePop / OpenRLHF band) are dropped, the rest weighted by the ratio."""
  return t.mismatch_correction(
    mode="mask",
    high=high,
    low=None if low == 0 else low,
    level=level,
    seq_ratio=seq_ratio,
    log_ratio_clip=log_ratio_clip,
  )


def opsm(*, delta: float = 0.03) -> base.LossTransform:
  """DeepSeek-V3.2's off-policy sequence mask (arXiv 2512.02556) [ours: δ = 0.03 nats per token;
  no source gives their δ]."""
  return t.off_policy_sequence_mask(delta=delta)


CORRECTIONS = {fn.__name__: fn for fn in (tis, mis, opsm)}
