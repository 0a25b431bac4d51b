"""Decoder-only policies (Qwen2, Qwen3, Llama 3.x) built once from their configuration and
precision policy, their heads, Hugging Face checkpoints, policy outputs and tokenizers."""

from grpojax.models.build import abstract_policy, init_policy, policy_graphdef
from grpojax.models.config import ModelConfig, load_config
from grpojax.models.heads import HeadsConfig
from grpojax.models.hf_checkpoint import (
  abstract_pretrained,
  export_params,
  from_pretrained,
  save_pretrained,
)
from grpojax.models.policy_outputs import policy_outputs, prompt_token_mask, split_and_score
from grpojax.models.transformer import REMAT_POLICIES, Decoder, DecoderOutput, init_cache

__all__ = [
  "Decoder",
  "DecoderOutput",
  "HeadsConfig",
  "ModelConfig",
  "REMAT_POLICIES",
  "abstract_policy",
  "abstract_pretrained",
  "export_params",
  "from_pretrained",
  "init_cache",
  "init_policy",
  "load_config",
  "policy_graphdef",
  "policy_outputs",
  "save_pretrained",
  "prompt_token_mask",
  "split_and_score",
]
