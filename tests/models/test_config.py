"""Reading `config.json` in the transformers 4.x and 5.x forms."""

import math

import numpy as np
import pytest

from grpojax.models import config as config_lib

# A Llama 3.1-style config.json as real 4.x hub checkpoints write it.
LLAMA_4X = {
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 128256,
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "num_hidden_layers": 16,
  "num_attention_heads": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-5,
  "rope_theta": 500000.0,
  "tie_word_embeddings": True,
  "max_position_embeddings": 131072,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
  },
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
}


def test_4x_and_5x_rope_forms_agree():
  cfg4 = config_lib.ModelConfig.from_hf_dict(LLAMA_4X)
  as_5x = {k: v for k, v in LLAMA_4X.items() if k not in ("rope_theta", "rope_scaling")}
  as_5x["rope_parameters"] = {**LLAMA_4X["rope_scaling"], "rope_theta": 500000.0}
  cfg5 = config_lib.ModelConfig.from_hf_dict(as_5x)
  assert cfg4 == cfg5
  assert (
    cfg4.head_dim == 64 and cfg4.group_size == 4 and cfg4.eos_token_id == (128001, 128008, 128009)
  )
  assert cfg4.rope_scaling.factor == 32.0
  # Round trip through our own writer.
  assert config_lib.ModelConfig.from_hf_dict(cfg4.to_hf_dict()) == cfg4


def test_llama3_inverse_frequencies_hand_worked():
  cfg = config_lib.ModelConfig.from_hf_dict(LLAMA_4X)
  inv = cfg.rope_inv_freq()
  base = 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64)
  wavelen = 2 * math.pi / base
  # High frequencies (wavelength < 8192/4 = 2048 tokens) are untouched...
  hi = wavelen < 2048
  np.testing.assert_allclose(inv[hi], base[hi], rtol=1e-6)
  # ...low frequencies (wavelength > 8192 tokens) are divided by the factor 32...
  lo = wavelen > 8192
  np.testing.assert_allclose(inv[lo], base[lo] / 32, rtol=1e-6)
  # ...and the band between interpolates: s = (8192/λ - 1) / (4 - 1).
  mid = ~hi & ~lo
  assert mid.any()
  s = (8192 / wavelen[mid] - 1) / 3
  np.testing.assert_allclose(inv[mid], (1 - s) * base[mid] / 32 + s * base[mid], rtol=1e-5)


def test_llama3_inverse_frequencies_match_transformers():
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  from transformers import modeling_rope_utils

  hf_cfg = transformers.LlamaConfig(
    **{k: v for k, v in LLAMA_4X.items() if k not in ("architectures", "model_type")}
  )
  ref, _ = modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
  ours = config_lib.ModelConfig.from_hf_dict(LLAMA_4X).rope_inv_freq()
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)


def test_qwen_families():
  qwen2 = config_lib.ModelConfig.from_hf_dict(
    {
      "model_type": "qwen2",
      "vocab_size": 151936,
      "hidden_size": 896,
      "intermediate_size": 4864,
      "num_hidden_layers": 24,
      "num_attention_heads": 14,
      "num_key_value_heads": 2,
      "rope_theta": 1000000.0,
      "tie_word_embeddings": True,
      "use_sliding_window": False,
    }
  )
  assert qwen2.attention_bias and not qwen2.qk_norm and qwen2.head_dim == 64
  qwen3 = config_lib.ModelConfig.from_hf_dict(
    {
      "architectures": ["Qwen3ForCausalLM"],
      "vocab_size": 151936,
      "hidden_size": 1024,
      "intermediate_size": 3072,
      "num_hidden_layers": 28,
      "num_attention_heads": 16,
      "num_key_value_heads": 8,
      "head_dim": 128,
      "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    }
  )
  assert qwen3.model_type == "qwen3" and qwen3.qk_norm and not qwen3.attention_bias
  assert qwen3.head_dim == 128 and qwen3.rope_theta == 1e6 and qwen3.rope_scaling is None


@pytest.mark.parametrize(
  "edit, culprit",
  [
    ({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}, "mamba"),
    ({"num_attention_heads": 6}, "num_kv_heads"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 4.0}}, "low_freq_factor"),
    ({"hidden_act": "gelu"}, "hidden_act"),
  ],
)
def test_bad_configs_name_the_culprit(edit, culprit):
  with pytest.raises(ValueError, match=culprit):
    config_lib.ModelConfig.from_hf_dict({**LLAMA_4X, **edit})


def test_missing_field_is_named():
  d = dict(LLAMA_4X)
  del d["hidden_size"]
  with pytest.raises(ValueError, match="hidden_size"):
    config_lib.ModelConfig.from_hf_dict(d)
