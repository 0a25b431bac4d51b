"""A policy's numerics as one value: FP8 matmuls, an FP32 LM head, a frozen quantised base with
LoRA adapters (QeRL), and the sampler's pre-quantised FP8 copy.

A `PrecisionPolicy` is given to the model at construction and becomes part of its graph
definition, so a sampler and a trainer built with the same policy run the identical graph
(Jet-RL's "unified precision flow", arXiv 2601.14243), while the same parameters under another
policy give a deliberately different rollout graph (the "naive" FP8-rollout baseline,
`sampler_policy(policy, matmul=...)`).

Only the decoder layers' projections (paths `layers/<i>/self_attn/(q|k|v|o)_proj` and
`layers/<i>/mlp/(gate|up|down)_proj`) are affected: embeddings and the LM head stay in the
compute dtype (or float32 with `lm_head_f32`), as in Jet-RL and QeRL (arXiv 2510.11696).
`PrecisionPolicy.projection(path)` gives each projection its own settings.
"""

import dataclasses
import math
import re

import jax.numpy as jnp

from grpojax.precision import formats

MATMULS = ("default", "fp8", "fp8_block")
BASE_FORMATS = ("none", *formats.WEIGHT_FORMATS)
DEFAULT_LORA_TARGETS = r"(q|k|v|o|gate|up|down)_proj"
# How a projection stores its weight: a trainable kernel, a frozen quantised base in one of
# `formats.WEIGHT_FORMATS`, or (the sampler's copy) e4m3 codes for `fp8_matmul_prequantized`.
STORAGES = ("kernel", *formats.WEIGHT_FORMATS, "rollout_fp8")
# Decoder-layer projections: the only paths a policy changes.
_LAYER_PROJECTION = re.compile(r"^layers/\d+/(self_attn|mlp)/\w+_proj$")


@dataclasses.dataclass(frozen=True)
class ProjectionPrecision:
  """How one projection stores its weight and multiplies.

  Attributes:
    matmul: "default" (the compute dtype), "fp8" (e4m3 forward with a per-tensor weight scale
      and per-token activation scales, e5m2 gradients) or "fp8_block" (128x128 weight blocks,
      1x128 activation groups; Jet-RL's granularity).
    storage: one of `STORAGES`: "kernel" (a trainable `nnx.Param`); "fp8", "nvfp4" or "int4"
      (frozen codes and scales of `formats.quantize_weight`, dequantised in the forward); or
      "rollout_fp8" (the e4m3 codes and scale that `fp8_matmul` would compute from the kernel
      in the compute dtype, multiplied directly; forward only).
    lora_rank: r of the LoRA adapters A [in, r], B [r, out]; 0 for none.
    lora_scale: alpha / r, the factor of x A B.
  """

  matmul: str = "default"
  storage: str = "kernel"
  lora_rank: int = 0
  lora_scale: float = 0.0

  @property
  def w_block(self) -> tuple[int, int] | None:
    """The FP8 weight block: (128, 128) for "fp8_block", else None (one per-tensor scale)."""
    return formats.FP8_WEIGHT_BLOCK if self.matmul == "fp8_block" else None


@dataclasses.dataclass(frozen=True)
class PrecisionPolicy:
  """The numerics of a policy, read by the sampler and the trainer alike.

  Attributes:
    matmul: "default", "fp8" or "fp8_block" for every decoder-layer projection (see
      `ProjectionPrecision.matmul`).
    lm_head_f32: compute the LM head (and so every log-prob) in float32 whatever the compute
      dtype (MiniMax-M1, arXiv 2506.13585).
    base_format: "none", or "nvfp4", "int4" or "fp8": the projections matching `lora_targets`
      keep a frozen base in that format (QeRL, arXiv 2510.11696).
    lora_rank: r >= 0 of LoRA adapters (arXiv 2106.09685) on the projections matching
      `lora_targets`; 0 for none.
    lora_alpha: alpha > 0; the adapters' update is scaled by alpha / r.
    lora_targets: regex matched against the last component(s) of a projection's path (e.g.
      `q_proj`, `self_attn/q_proj`); selects the adapted and the quantised projections.
    rollout_fp8: the sampler's copy of an FP8 policy: every projection that multiplies in FP8
      and keeps a plain kernel without adapters stores the e4m3 codes that `fp8_matmul` would
      compute from that kernel instead ("rollout_fp8" storage): bit-identical logits, one byte
      per weight, no per-call weight quantisation. Forward only (no gradient to the codes).

  Raises:
    ValueError: naming the field, for an unknown choice or an invalid number.
  """

  matmul: str = "default"
  lm_head_f32: bool = False
  base_format: str = "none"
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: str = DEFAULT_LORA_TARGETS
  rollout_fp8: bool = False

  def __post_init__(self):
    if self.matmul not in MATMULS:
      raise ValueError(f"PrecisionPolicy.matmul={self.matmul!r}; expected one of {MATMULS}")
    if not isinstance(self.lm_head_f32, bool):
      raise ValueError(f"PrecisionPolicy.lm_head_f32 must be a bool, got {self.lm_head_f32!r}")
    if self.base_format not in BASE_FORMATS:
      raise ValueError(
        f"PrecisionPolicy.base_format={self.base_format!r}; expected one of {BASE_FORMATS}"
      )
    if (
      not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool) or self.lora_rank < 0
    ):
      raise ValueError(f"PrecisionPolicy.lora_rank must be an int >= 0, got {self.lora_rank!r}")
    alpha = self.lora_alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
      raise ValueError(f"PrecisionPolicy.lora_alpha must be a finite number, got {alpha!r}")
    if alpha <= 0:
      raise ValueError(f"PrecisionPolicy.lora_alpha must be > 0, got {alpha!r}")
    try:
      re.compile(self.lora_targets)
    except (re.error, TypeError) as e:
      raise ValueError(
        f"PrecisionPolicy.lora_targets={self.lora_targets!r} is not a regex ({e})"
      ) from None
    if self.rollout_fp8 and self.matmul == "default":
      raise ValueError(
        "PrecisionPolicy.rollout_fp8 pre-quantises FP8 projections: it needs matmul 'fp8' or "
        "'fp8_block', got 'default'"
      )

  @property
  def lora_scale(self) -> float:
    """alpha / r, or 0 without adapters."""
    return float(self.lora_alpha) / self.lora_rank if self.lora_rank else 0.0

  def targets(self, path: str) -> bool:
    """Whether `path` is a decoder-layer projection that `lora_targets` selects.

    Args:
      path: a module path as `types.path_to_str` writes it, e.g. `layers/0/self_attn/q_proj`.

    Returns:
      True for a matching projection of a decoder layer.
    """
    return is_layer_projection(path) and bool(re.search(rf"(^|/)(?:{self.lora_targets})$", path))

  def projection(self, path: str) -> ProjectionPrecision:
    """The settings of the projection at `path`.

    Args:
      path: a module path, e.g. `layers/0/self_attn/q_proj` or `lm_head`.

    Returns:
      The decoder-layer projections' `ProjectionPrecision`; the plain default for any other
      path (the LM head, a head's layers).
    """
    if not is_layer_projection(path):
      return ProjectionPrecision()
    targeted = self.targets(path)
    storage = self.base_format if targeted and self.base_format != "none" else "kernel"
    rank = self.lora_rank if targeted else 0
    if self.rollout_fp8 and storage == "kernel" and rank == 0:
      storage = "rollout_fp8"
    return ProjectionPrecision(
      matmul=self.matmul,
      storage=storage,
      lora_rank=rank,
      lora_scale=self.lora_scale if rank else 0.0,
    )


def is_layer_projection(path: str) -> bool:
  """Whether `path` names a decoder layer's projection (`layers/<i>/(self_attn|mlp)/*_proj`)."""
  return bool(_LAYER_PROJECTION.match(path))


def sampler_policy(policy: PrecisionPolicy, *, matmul: str = "same") -> PrecisionPolicy:
  """The precision policy of the sampler's copy of a policy trained under `policy`.

  Args:
    policy: the trainer's policy.
    matmul: "same" (the unified precision flow: the sampler computes the trainer's function), or
      one of `MATMULS` for the sampler's projections: the "naive" baseline where rollouts use
      another precision than the trainer (e.g. FP8 rollouts of a bf16 trainer).

  Returns:
    `policy` with the sampler's matmul and, when that is FP8, `rollout_fp8` set: FP8 kernels
    are quantised once per weight sync instead of in every decode step, with bit-identical
    results. The policy itself when nothing changes.

  Raises:
    ValueError: an unknown `matmul`.
  """
  if matmul != "same" and matmul not in MATMULS:
    raise ValueError(f"sampler_policy: matmul={matmul!r}; expected 'same' or one of {MATMULS}")
  matmul = policy.matmul if matmul == "same" else matmul
  return dataclasses.replace(policy, matmul=matmul, rollout_fp8=matmul != "default")


def sampler_copy_dtype(policy: PrecisionPolicy, compute_dtype):
  """The dtype the sampler's copy of the parameters can be stored in without changing one
  number of the rollout, or None to keep the parameters' own.

  Every decoder parameter is cast to the compute dtype right before use (kernels, biases, norm
  scales, embeddings, LoRA factors), so a copy stored already cast computes bit-identically, at
  half the memory of float32 parameters under bf16 compute. A float32 LM head needs the full
  precision, so `lm_head_f32` keeps the copy as it is.

  Args:
    policy: the sampler's (or the trainer's: they share `lm_head_f32`) precision policy.
    compute_dtype: the model's compute dtype.

  Returns:
    `jnp.dtype(compute_dtype)` when narrower than 4 bytes and the LM head is not float32, else
    None.
  """
  dtype = jnp.dtype(compute_dtype)
  if policy.lm_head_f32 or dtype.itemsize >= 4:
    return None
  return dtype
