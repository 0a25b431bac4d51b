"""Tiny random Hugging Face checkpoints, made with `transformers` for parity tests.

Every parameter (biases and norm scales included) is drawn at random, so that a weight mapped to
the wrong place, or not at all, changes the logits.
"""

import numpy as np
import pytest

FAMILIES = ("qwen2", "qwen2_untied", "qwen3", "llama3")


def hf_config(family: str):
  """A tiny transformers config of the named family."""
  transformers = pytest.importorskip(
    "transformers", reason="parity tests need the `reference` extra (torch + transformers)"
  )
  common = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
  )
  if family == "qwen2":
    return transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1000.0)
  if family == "qwen2_untied":
    return transformers.Qwen2Config(**common, tie_word_embeddings=False, rms_norm_eps=1e-5)
  if family == "qwen3":
    # head_dim independent of hidden_size / num_heads.
    return transformers.Qwen3Config(**common, head_dim=12, tie_word_embeddings=False)
  if family == "llama3":
    return transformers.LlamaConfig(
      **common,
      tie_word_embeddings=False,
      attention_bias=True,
      mlp_bias=True,
      rope_scaling=dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=16,
      ),
    )
  raise ValueError(family)


def make_hf_model(family: str, seed: int = 0, std: float = 0.15):
  """A transformers causal LM of the family with every parameter random, in eval mode."""
  torch = pytest.importorskip("torch", reason="parity tests need the `reference` extra")
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(hf_config(family)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "layernorm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      else:
        p.normal_(0.0, std)
  return model


def hf_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """transformers' float32 logits for a left- or right-padded batch."""
  import torch

  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  with torch.no_grad():
    return (
      model(
        torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
      )
      .logits.float()
      .numpy()
    )
