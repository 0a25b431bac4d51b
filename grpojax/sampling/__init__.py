"""KV-cache sampling over an explicit state: prefill, decode, fork, extend, and the methods."""

from grpojax.sampling.branching import extend, fork
from grpojax.sampling.head_temperature import HeadTemperature
from grpojax.sampling.methods import Greedy, Method, Sample, processed_logits, sample_token
from grpojax.sampling.sampler import decode, generate, pad_prompts, prefill, sample
from grpojax.sampling.state import Completions, SamplerState, completions

__all__ = [
  "Completions",
  "Greedy",
  "HeadTemperature",
  "Method",
  "Sample",
  "SamplerState",
  "completions",
  "decode",
  "extend",
  "fork",
  "generate",
  "pad_prompts",
  "prefill",
  "processed_logits",
  "sample",
  "sample_token",
]
