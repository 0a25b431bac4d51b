"""LAD: learning the advantage-induced distribution instead of maximising the advantage.

Li & Li, "LAD: Learning Advantage Distribution for Reasoning", arXiv 2602.20132. The paper's
Lemma 3.1 (Eq. 3) writes the optimum of the trust-region objective as a match of two
distributions over responses y of a prompt x,

  P_π(y | x) = (π_θ(y|x) / π_old(y|x)) / Z_π(x),      P_A(y | x) = exp(A(x, y) / η) / Z_A(x),

and Lemma 3.2 replaces the f-divergence D_f(P_π ‖ P_A), whose partition functions cannot be
computed over all responses, by a practical objective with the same minimiser and no partition
functions (Eq. 8 with f the Jensen–Shannon generator):

  L = E_{y ~ π_old} [ exp(A/η) · f( (π_θ/π_old) / exp(A/η) ) ].

Its gradient, r · f'(x) ∇logπ_θ with x = r·exp(−A/η), vanishes where the ratio has reached the
target exp(A/η) (f'(1) = 0): a high-advantage response stops being pushed once its probability
has grown enough, which is the paper's "suppressing over-confident probability growth".

What was read and what is guessed. The paper's body was not retrievable here; the statements
above come from two secondary sources: a paper note quoting Lemmas 3.1/3.2 and the practical
objective, and a public Stable-Baselines3 port of the authors' code that states the objective,
the Jensen–Shannon default, 1/η = 4 for the paper's math runs (the code's `kappa`), the
generators below and a ±20 clamp of the log-ratio and A/η before `exp`. Applying the objective
per token with the token ratio π_θ(y_t)/π_old(y_t) and the response's group advantage, and
averaging over tokens, is our reading of "no extra cost compared to GRPO" [GUESS]; the `lad`
recipe is therefore marked experimental.

Legend: B batch rows, T response length.
"""

import math

import jax.numpy as jnp

from grpojax.objectives import masked, surrogates

DIVERGENCES = ("js", "hellinger", "tv")
_LOG2 = math.log(2.0)


def f_divergence_generator(log_x, divergence: str):
  """f(x) of a divergence, from log x (finite): Jensen–Shannon, squared Hellinger or total
  variation, each with f(1) = 0.

    js:        f(x) = ½ [x log x − (x + 1) log((x + 1)/2)]
    hellinger: f(x) = ½ (√x − 1)²
    tv:        f(x) = |x − 1|
  """
  surrogates.check_choice("f_divergence_generator", "divergence", divergence, DIVERGENCES)
  x = jnp.exp(log_x)
  if divergence == "js":
    log_mid = jnp.logaddexp(log_x, 0.0) - _LOG2  # log((x + 1) / 2), stable for large x
    return 0.5 * (x * log_x - (x + 1.0) * log_mid)
  if divergence == "hellinger":
    return 0.5 * jnp.square(jnp.exp(0.5 * log_x) - 1.0)
  return jnp.abs(x - 1.0)


def lad(
  logprobs,
  old_logprobs,
  advantages,
  mask,
  *,
  eta: float = 0.25,
  divergence: str = "js",
  log_clip: float = 20.0,
):
  """LAD's practical per-token loss (arXiv 2602.20132, Lemma 3.2 / Eq. 8):

    u_t = clip(Â_t / η, ±c),  Δ_t = clip(logπ_θ(y_t) − logπ_old(y_t), ±c),
    ℓ_t = exp(u_t) · f(exp(Δ_t − u_t)).

  Args:
    logprobs: logπ_θ [B, T].
    old_logprobs: logπ_old [B, T], the policy that drew the rollout.
    advantages: Â [B, T] (the group z-score broadcast over the response).
    mask: 0/1 response mask [B, T].
    eta: η > 0, the temperature of the target exp(A/η) (1/η = 4 in the paper's math runs).
    divergence: the generator f: "js" (the paper's main choice), "hellinger" or "tv".
    log_clip: c > 0, clamp of Δ and A/η before `exp`, as in the authors' code.

  Returns:
    (loss_bt [B, T], metrics): the shared ratio metrics plus `target_ratio_mean` (exp(u)) and
    `matched_gap` (mean |Δ − u|, 0 when every ratio sits on its target).
  """
  where = "lad"
  surrogates.check_hparam(where, "eta", eta, lambda v: 0 < v < math.inf, "> 0 and finite")
  surrogates.check_hparam(where, "log_clip", log_clip, lambda v: 0 < v < math.inf, "> 0")
  surrogates.check_choice(where, "divergence", divergence, DIVERGENCES)
  x = surrogates.prepare(where, logprobs, old_logprobs, advantages, mask)
  log_ratio_bt = jnp.clip(x.logprobs - x.old_logprobs, -log_clip, log_clip)
  u_bt = jnp.clip(x.advantages / eta, -log_clip, log_clip)
  log_x_bt = log_ratio_bt - u_bt
  loss_bt = jnp.exp(u_bt) * f_divergence_generator(log_x_bt, divergence)
  metrics = surrogates.ratio_metrics(surrogates.log_ratio(x), x.valid)
  metrics["target_ratio_mean"] = masked.masked_mean(jnp.exp(u_bt), x.valid)
  metrics["matched_gap"] = masked.masked_mean(jnp.abs(log_x_bt), x.valid)
  return surrogates.finish(loss_bt, x.valid, metrics)
