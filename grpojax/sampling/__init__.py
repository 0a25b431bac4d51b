"""Jitted KV-cache sampling: `generate` and the sampling methods it uses."""

from grpojax.sampling.methods import SamplingParams, processed_logits, sample_token
from grpojax.sampling.sampler import Completions, generate, generate_padded, pad_prompts

__all__ = [
  "Completions",
  "SamplingParams",
  "generate",
  "generate_padded",
  "pad_prompts",
  "processed_logits",
  "sample_token",
]
