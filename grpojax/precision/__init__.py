"""Low-precision numerics: FP8 / NVFP4 / int4 formats, an FP8 GEMM, and QeRL's quantisation noise.

`formats` quantises and dequantises with explicit scales, `matmul` is the FP8 GEMM (e4m3
forward, e5m2 gradients) with a custom VJP, and `noise` is QeRL's adaptive noise on RMSNorm
scales (arXiv 2510.11696). Everything is a pure, jittable function of arrays.
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

__all__ = [
  "FP8_E4M3",
  "FP8_E5M2",
  "NORM_SCALE_PATTERN",
  "NVFP4",
  "WEIGHT_FORMATS",
  "Quantized",
  "add_norm_noise",
  "aqn_schedule",
  "aqn_sigma",
  "aqn_sigma_array",
  "dequantize",
  "dequantize_int4",
  "dequantize_nvfp4",
  "dequantize_weight",
  "fake_quantize_fp8",
  "fp8_matmul",
  "quantize_fp8",
  "quantize_int4",
  "quantize_nvfp4",
  "quantize_weight",
]
