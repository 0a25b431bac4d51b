"""Loss aggregation as `(loss_sum, denominator)` pairs that stay exact across micro-batches.

A per-token loss `loss_bt` [B, T] with a 0/1 mask `mask_bt` [B, T] is reduced to two scalars.
Summing the pairs of any split of the batch into micro-batches (or hosts) and dividing once,
`finalize(Σ_k sum_k, Σ_k denom_k)`, gives exactly the full-batch value. That is why no mode ever
divides inside a micro-batch by a quantity that depends on the other micro-batches (the bug class
behind per-micro-batch token means).

Aggregations (names follow verl's `loss_agg_mode` with `_` for `-`); a recipe passes the
function itself as `Objective.aggregate`:

| mode                      | loss_sum                         | denominator          |
|---------------------------|----------------------------------|----------------------|
| `token_mean`              | Σ_b Σ_t m·ℓ                      | Σ_b Σ_t m            |
| `seq_mean_token_mean`     | Σ_b (Σ_t m·ℓ / Σ_t m)            | #valid sequences     |
| `seq_mean_token_sum`      | Σ_b Σ_t m·ℓ                      | #valid sequences     |
| `seq_mean_token_sum_norm` | Σ_b Σ_t m·ℓ                      | #valid seqs · L_max  |

- `token_mean`: DAPO's token-level loss (arXiv 2503.14476), verl's default.
- `seq_mean_token_mean`: the original GRPO 1/G Σ_i 1/|o_i| Σ_t (arXiv 2402.03300).
- `seq_mean_token_sum_norm`: Dr. GRPO's constant normaliser (arXiv 2503.20783):
  L = (1/N) Σ_i Σ_t ℓ_{i,t} / L_max with L_max a constant (Dr. GRPO uses the generation
  budget `generate_max_length`). This is the TRL `dr_grpo` / SkyRL `seq_mean_token_sum_norm`
  reading, Σ / (N · L_max). verl's mode of the same name divides a micro-batch Σ by L_max only,
  i.e. it is N times larger; tunix's `sequence-mean-token-sum-norm` divides by the batch size.
  We follow TRL/SkyRL/tunix-`sequence-mean-token-scale`, which is the one that makes
  the gradient scale independent of the batch size.

A "valid" sequence is a row with at least one set mask entry. All-padding rows (added to fill a
micro-batch or a shard) therefore contribute 0 to both the sum and the denominator in every mode,
so padding rows never change the result.

Arrays may carry extra leading axes; the token axis is always the last one.
"""

import numbers

import jax.numpy as jnp

from grpojax.objectives import masked


def _num_valid_sequences(mask_bt, dtype):
  return jnp.sum(jnp.any(mask_bt > 0, axis=-1).astype(dtype))


def token_mean(loss_bt, mask_bt):
  """Σ_{b,t} m·ℓ over Σ_{b,t} m (DAPO token-level loss, arXiv 2503.14476).

  Args:
    loss_bt: unreduced per-token loss [..., T].
    mask_bt: 0/1 loss mask, same shape.

  Returns:
    `(loss_sum, denominator)` scalars.
  """
  loss_sum = masked.masked_sum(loss_bt, mask_bt)
  denominator = jnp.sum((mask_bt > 0).astype(loss_sum.dtype))
  return loss_sum, denominator


def seq_mean_token_mean(loss_bt, mask_bt):
  """Σ_b (Σ_t m·ℓ / Σ_t m) over the number of valid sequences (GRPO, arXiv 2402.03300).

  Args:
    loss_bt: unreduced per-token loss [..., T].
    mask_bt: 0/1 loss mask, same shape.

  Returns:
    `(loss_sum, denominator)` scalars; `loss_sum` is the sum of per-sequence token means.
  """
  per_seq_b = masked.masked_mean(loss_bt, mask_bt, axis=-1)  # 0 for all-padding rows.
  loss_sum = jnp.sum(per_seq_b)
  return loss_sum, _num_valid_sequences(mask_bt, loss_sum.dtype)


def seq_mean_token_sum(loss_bt, mask_bt):
  """Σ_b Σ_t m·ℓ over the number of valid sequences (verl `seq-mean-token-sum`).

  Args:
    loss_bt: unreduced per-token loss [..., T].
    mask_bt: 0/1 loss mask, same shape.

  Returns:
    `(loss_sum, denominator)` scalars.
  """
  loss_sum = masked.masked_sum(loss_bt, mask_bt)
  return loss_sum, _num_valid_sequences(mask_bt, loss_sum.dtype)


def seq_mean_token_sum_norm(loss_bt, mask_bt, *, max_len=None):
  """Σ_b Σ_t m·ℓ over (#valid sequences · L_max): Dr. GRPO's constant normaliser.

  L = (1/N) Σ_i Σ_t ℓ_{i,t} / L_max (arXiv 2503.20783), as TRL `dr_grpo` and SkyRL
  `seq_mean_token_sum_norm` compute it (see the module docstring for verl's variant).

  Args:
    loss_bt: unreduced per-token loss [..., T].
    mask_bt: 0/1 loss mask, same shape.
    max_len: the constant L_max (Dr. GRPO: the generation budget), a positive number; None
      (default) takes the padded response length T, which is the generation budget when the
      batch holds rollouts of `max_new_tokens` tokens.

  Returns:
    `(loss_sum, denominator)` scalars.
  """
  if max_len is None:
    max_len = loss_bt.shape[-1]
  _check_max_len(max_len)
  loss_sum = masked.masked_sum(loss_bt, mask_bt)
  return loss_sum, _num_valid_sequences(mask_bt, loss_sum.dtype) * max_len


def _check_max_len(max_len):
  if not (isinstance(max_len, numbers.Real) and not isinstance(max_len, bool) and max_len > 0):
    raise ValueError(f"max_len must be a positive number, got {max_len!r}.")


def finalize(loss_sum, denominator):
  """`loss_sum / denominator`, and 0 (with a zero, finite gradient) where `denominator` is 0.

  Args:
    loss_sum: summed numerators (over micro-batches / hosts).
    denominator: summed denominators, same shape.

  Returns:
    The aggregated loss.
  """
  nonzero = denominator > 0
  # Double `where` so that the untaken 0/0 branch cannot leak NaN into the gradient.
  safe_denominator = jnp.where(nonzero, denominator, 1.0)
  return jnp.where(nonzero, loss_sum / safe_denominator, 0.0)
