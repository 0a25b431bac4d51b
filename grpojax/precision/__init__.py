"""Low-precision numerics: a precision policy value, FP8 / NVFP4 / int4 formats, an FP8 GEMM, the
policy's parameter-tree transforms, and QeRL's quantisation noise.

`policy` holds `PrecisionPolicy`, the value a model is built with (and the sampler's variant of
it); `transforms` turns parameter trees into the policy's storage (quantised bases, LoRA
adapters, the merged export, the sampler's copy); `formats` quantises and dequantises with
explicit scales; `matmul` is the FP8 GEMM (e4m3 forward, e5m2 gradients) with a custom VJP; and
`noise` is QeRL's adaptive noise on RMSNorm scales (arXiv 2510.11696). Everything is a pure,
jittable function of arrays or a frozen, hashable value. This package imports nothing of grpojax
but `grpojax.types`.
"""

from grpojax.precision.formats import (
  FP8_E4M3,
  FP8_E5M2,
  NVFP4,
  WEIGHT_FORMATS,
  Quantized,
  dequantize,
  dequantize_int4,
  dequantize_nvfp4,
  dequantize_weight,
  fake_quantize_fp8,
  quantize_fp8,
  quantize_int4,
  quantize_nvfp4,
  quantize_weight,
)
from grpojax.precision.matmul import fp8_matmul
from grpojax.precision.noise import (
  NORM_SCALE_PATTERN,
  add_norm_noise,
  aqn_schedule,
  aqn_sigma,
  aqn_sigma_array,
)
from grpojax.precision.policy import (
  BASE_FORMATS,
  DEFAULT_LORA_TARGETS,
  MATMULS,
  PrecisionPolicy,
  ProjectionPrecision,
  sampler_copy_dtype,
  sampler_policy,
)
from grpojax.precision.transforms import (
  Frozen,
  cast_floating_params,
  init_lora,
  merge_lora,
  quantize_base,
  sampler_params,
)

__all__ = [
  "BASE_FORMATS",
  "DEFAULT_LORA_TARGETS",
  "FP8_E4M3",
  "FP8_E5M2",
  "Frozen",
  "MATMULS",
  "NORM_SCALE_PATTERN",
  "NVFP4",
  "PrecisionPolicy",
  "ProjectionPrecision",
  "WEIGHT_FORMATS",
  "Quantized",
  "add_norm_noise",
  "aqn_schedule",
  "aqn_sigma",
  "aqn_sigma_array",
  "cast_floating_params",
  "dequantize",
  "dequantize_int4",
  "dequantize_nvfp4",
  "dequantize_weight",
  "fake_quantize_fp8",
  "fp8_matmul",
  "init_lora",
  "merge_lora",
  "quantize_base",
  "quantize_fp8",
  "quantize_int4",
  "quantize_nvfp4",
  "quantize_weight",
  "sampler_copy_dtype",
  "sampler_params",
  "sampler_policy",
]
