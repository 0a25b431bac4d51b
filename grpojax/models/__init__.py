"""Decoder-only policies (Qwen2, Qwen3, Llama 3.x), Hugging Face checkpoints, tokenizers."""

from grpojax.models.config import ModelConfig, load_config
from grpojax.models.hf_checkpoint import from_pretrained, save_pretrained
from grpojax.models.transformer import REMAT_POLICIES, Decoder, DecoderOutput, init_cache

__all__ = [
  "Decoder",
  "REMAT_POLICIES",
  "DecoderOutput",
  "ModelConfig",
  "from_pretrained",
  "init_cache",
  "load_config",
  "save_pretrained",
]
