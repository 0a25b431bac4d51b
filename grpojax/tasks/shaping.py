"""Reward shaping by completion length.

DAPO's overlong reward shaping (Yu et al., 2025, arXiv:2503.14476, eq. 13) adds a soft penalty to
completions that approach the generation limit, measured in tokens:

  R_length(y) = 0                                  if |y| <= L_max - L_cache
              = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
              = -1                                 if L_max < |y|

The penalty falls linearly from 0 to -1 across the last `L_cache` tokens of the budget; it is
added to the task reward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt


def overlong_penalty(
  lengths: npt.ArrayLike | jax.Array, *, max_length: int, cache_length: int
) -> np.ndarray | jax.Array:
  """DAPO's overlong penalty for each completion length.

  Args:
    lengths: completion lengths in tokens (e.g. the completion mask summed over time), any
      shape, as a NumPy array, a JAX array (traced under `jit` too) or a Python sequence.
    max_length: L_max, the token budget, a positive int.
    cache_length: L_cache, the length of the soft-penalty window, an int in [1, max_length].

  Returns:
    The penalties in [-1, 0], of `lengths`' shape: a JAX array for JAX input, else a float64
    NumPy array.

  Raises:
    ValueError: `max_length` or `cache_length` is out of range.
  """
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
    raise ValueError(f"max_length must be an int, got {max_length!r}")
  if isinstance(cache_length, bool) or not isinstance(cache_length, (int, np.integer)):
    raise ValueError(f"cache_length must be an int, got {cache_length!r}")
  if max_length < 1:
    raise ValueError(f"max_length must be positive, got {max_length}")
  if not 1 <= cache_length <= max_length:
    raise ValueError(f"cache_length must be in [1, max_length={max_length}], got {cache_length}")
  xp = jnp if isinstance(lengths, jax.Array) else np
  lengths = xp.asarray(lengths)
  soft_start = max_length - cache_length
  ramp = (soft_start - lengths) / cache_length
  return xp.where(lengths <= soft_start, 0.0, xp.where(lengths <= max_length, ramp, -1.0))
