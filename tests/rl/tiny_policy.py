"""The tiny random Qwen2 shape the update tests share (fast to compile, every code path)."""

from grpojax import models

CFG = models.ModelConfig(
  model_type="qwen2",
  vocab_size=37,
  hidden_size=16,
  intermediate_size=32,
  num_layers=1,
  num_heads=2,
  num_kv_heads=1,
  head_dim=8,
  attention_bias=True,
  tie_word_embeddings=True,
)
