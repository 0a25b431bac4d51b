"""Length bucketing of the learn phase: the forward/backward of a micro-batch runs on its rows cut
to a static length near their longest completion, so a batch pays for its real tokens.

With early stops, completions of one batch range from a few tokens to `max_new_tokens` N. The
update groups the rows of each minibatch by completion length (a stable sort, after the
advantages were computed on the batch in its group order), so each micro-batch holds rows of
similar length, and picks with `lax.switch` one of a few static lengths
`bucket_lengths(N, num_buckets)`: the shortest that holds the micro-batch's longest row. Each
branch is the whole value-and-gradient of the micro-batch on a static slice of the rows
(`cut`); the per-token policy outputs are padded back to N (`pad_back`) before the objective
sees them, so every aggregation and surrogate reads the same [R, N] arrays as without bucketing
(Dr. GRPO's constant normaliser, sequence-level ratios, per-token advantages).

Why bucketing and not sequence packing: a switch over a few static slices keeps the model's
training forward (positions from the mask, a causal padding mask) and every head as it is; the
cut only drops trailing positions that every row of the micro-batch has as padding, which no
real token attends to (causal attention), so the outputs on real tokens are those of the full
row. Packing would need segment ids in the attention and per-segment pooling of the log-Z head,
and its greedy placement a data-dependent bound on the number of packs. The switch sits outside
the differentiation (each branch differentiates itself): under `grad`, a `switch` would store
the residuals of every branch, zero-filled, for each micro-batch.

Only the grouping of rows into micro-batches changes. Loss sums, denominators and the
objective's state are sums over rows, so their values do not depend on the grouping; the metrics
(row means such as `reward_mean`, weighted per micro-batch) and any transform reading the
micro-batch key do. The update therefore re-runs the objective, without gradients and on the
policy outputs the bucketed pass returned (put back in row order), on the micro-batches of the
plain path with their keys: loss, state and metrics are those of the plain update, the gradient
that of the bucketed pass. An objective whose loss reads statistics over a micro-batch's tokens
(`Objective.micro_batch_statistics`: STAPO's entropy quantile, Clip-Cov, KL-Cov) would get
another gradient, as it does under another `microbatch_rows`, so bucketing is off for it.

Shapes: B rows, R rows per micro-batch, Tp padded prompt length, N completion length.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import types


def check_num_buckets(num_buckets, max_new_tokens: int, *, field: str = "train.length_buckets"):
  """Raises ValueError naming `field` unless `num_buckets` is an int in [0, max_new_tokens]."""
  ok = isinstance(num_buckets, numbers.Integral) and not isinstance(num_buckets, bool)
  if not ok or not 0 <= num_buckets <= max_new_tokens:
    raise ValueError(
      f"{field} must be an int in [0, {max_new_tokens}] (0: off; at most the completion length "
      f"{max_new_tokens}), got {num_buckets!r}."
    )


def bucket_lengths(max_new_tokens: int, num_buckets: int) -> tuple[int, ...]:
  """The static completion lengths a micro-batch may be cut to: ⌈N·i/n⌉ for i = 1 .. n, the
  last one N (evenly spaced: the cost of a micro-batch is about linear in its length)."""
  check_num_buckets(num_buckets, max_new_tokens, field="num_buckets")
  lengths = [-(-max_new_tokens * i // num_buckets) for i in range(1, num_buckets + 1)]
  return tuple(sorted(set(lengths)))


def completion_lengths(seqs: types.Sequences) -> jax.Array:
  """[B] int32: 1 + the last completion position any row token occupies (attended to, e.g. an
  environment reply, or carrying loss); 0 for a row without completion tokens."""
  n = seqs.completion_mask.shape[1]
  used_bn = (seqs.attn_mask[:, -n:] > 0) | (seqs.completion_mask > 0)
  positions_n = jnp.arange(1, n + 1, dtype=jnp.int32)
  return jnp.max(jnp.where(used_bn, positions_n, 0), axis=-1)


def bucket_index(lengths_r: jax.Array, buckets: tuple[int, ...]) -> jax.Array:
  """int32 index of the shortest bucket length that holds every row of `lengths_r`."""
  longest = jnp.max(lengths_r)
  return jnp.sum(jnp.asarray(buckets, jnp.int32) < longest).astype(jnp.int32)


def sort_within(lengths_b: jax.Array, groups: int) -> jax.Array:
  """[B] int32 permutation that sorts the rows of each of `groups` contiguous equal slices (the
  minibatches) by length, stably, and leaves every row in its slice."""
  rows = lengths_b.shape[0]
  per = rows // groups
  order_gr = jnp.argsort(lengths_b.reshape(groups, per), axis=-1, stable=True)
  offsets_g1 = (jnp.arange(groups, dtype=order_gr.dtype) * per)[:, None]
  return (order_gr + offsets_g1).reshape(rows).astype(jnp.int32)


def inverse_permutation(perm_b: jax.Array) -> jax.Array:
  """[B] int32 `inv` with `x[perm][inv] == x`."""
  return jnp.zeros_like(perm_b).at[perm_b].set(jnp.arange(perm_b.shape[0], dtype=perm_b.dtype))


def cut(seqs: types.Sequences, keep: int) -> types.Sequences:
  """`seqs` with the completion cut to its first `keep` positions (a static slice)."""
  n = seqs.completion_mask.shape[1]
  drop = n - keep
  if drop == 0:
    return seqs
  return types.Sequences(
    tokens=seqs.tokens[:, :-drop],
    attn_mask=seqs.attn_mask[:, :-drop],
    completion_mask=seqs.completion_mask[:, :keep],
    temperature=None if seqs.temperature is None else seqs.temperature[:, :keep],
  )


def pad_back(x_bk, n: int):
  """[B, keep] per-token outputs zero-padded to [B, n] (None stays None)."""
  if x_bk is None or x_bk.shape[-1] == n:
    return x_bk
  return jnp.pad(x_bk, ((0, 0), (0, n - x_bk.shape[-1])))


def learn_cost_fraction(lengths_b: np.ndarray, microbatch_rows: int, buckets) -> float:
  """(Σ over micro-batches of bucket length · rows) / (B · N) for lengths sorted into
  micro-batches as the update sorts them (one minibatch): the fraction of the unbucketed
  completion positions the bucketed update processes. A host-side estimate for benchmarks."""
  lengths = np.sort(np.asarray(lengths_b))
  buckets = np.asarray(buckets)
  total = 0
  for start in range(0, len(lengths), microbatch_rows):
    longest = lengths[start : start + microbatch_rows].max()
    total += buckets[np.searchsorted(buckets, longest)] * microbatch_rows
  return total / (len(lengths) * buckets[-1])
