"""Decoder configuration, read from and written to Hugging Face `config.json`.

One frozen dataclass covers the Qwen2, Qwen3 and Llama 3.x families; the differences between them
are fields (q/k/v bias, q/k RMSNorm, RoPE scaling), not code paths. Both forms of RoPE settings
that real checkpoints carry are understood: transformers 4.x (`rope_theta` plus `rope_scaling`)
and 5.x (`rope_parameters`).
"""

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

# model_type -> (architecture class name, q/k/v bias, q/k norm)
_FAMILIES = {
  "qwen2": ("Qwen2ForCausalLM", True, False),
  "qwen3": ("Qwen3ForCausalLM", False, True),
  "llama": ("LlamaForCausalLM", False, False),
}
_ARCHITECTURES = {arch: model_type for model_type, (arch, _, _) in _FAMILIES.items()}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3.x frequency-dependent RoPE scaling (`rope_type: llama3`)."""

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a decoder-only transformer.

  Attributes:
    model_type: "qwen2", "qwen3" or "llama".
    vocab_size: V.
    hidden_size: D.
    intermediate_size: width of the SwiGLU MLP.
    num_layers: L.
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (grouped-query attention when K < N).
    head_dim: H; independent of D for Qwen3.
    rope_theta: RoPE base.
    rope_scaling: Llama 3.x scaling, or None for plain RoPE.
    rms_norm_eps: RMSNorm epsilon.
    tie_word_embeddings: the unembedding is the transposed embedding.
    attention_bias: q/k/v projections have a bias (Qwen2; Llama's `attention_bias`).
    attention_out_bias: o projection has a bias (Llama's `attention_bias` only).
    mlp_bias: MLP projections have biases (Llama's `mlp_bias`).
    qk_norm: RMSNorm over the head dimension of q and k (Qwen3).
    max_position_embeddings: the context length the checkpoint advertises.
    bos_token_id, eos_token_id: as in `config.json`, written back on save.
  """

  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  attention_out_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 32768
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None

  def __post_init__(self):
    if self.model_type not in _FAMILIES:
      raise ValueError(f"model_type {self.model_type!r} is not one of {sorted(_FAMILIES)}")
    for name in (
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_layers",
      "num_heads",
      "num_kv_heads",
      "head_dim",
    ):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
      )
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")

  @property
  def group_size(self) -> int:
    """Query heads per key/value head."""
    return self.num_heads // self.num_kv_heads

  def rope_inv_freq(self) -> np.ndarray:
    """RoPE inverse frequencies [H/2] in float32, with Llama 3.x scaling when configured."""
    exponent = np.arange(0, self.head_dim, 2, dtype=np.int64).astype(np.float32) / self.head_dim
    inv_freq = (1.0 / (np.float32(self.rope_theta) ** exponent)).astype(np.float32)
    s = self.rope_scaling
    if s is None:
      return inv_freq
    # Llama 3.1 (arXiv 2407.21783): long wavelengths are divided by `factor`, short ones kept, and
    # the band between is interpolated smoothly.
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)

  # --- Hugging Face config.json -------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "ModelConfig":
    """Reads a Hugging Face `config.json` dictionary (transformers 4.x or 5.x form)."""
    model_type = d.get("model_type")
    if model_type is None:
      archs = d.get("architectures") or []
      model_type = next((_ARCHITECTURES[a] for a in archs if a in _ARCHITECTURES), None)
    if model_type not in _FAMILIES:
      raise ValueError(
        f"{source}: unsupported architecture (model_type={d.get('model_type')!r}, "
        f"architectures={d.get('architectures')!r}); supported: {sorted(_FAMILIES)}"
      )
    _, qkv_bias, qk_norm = _FAMILIES[model_type]

    def need(key):
      if key not in d:
        raise ValueError(f"{source}: missing required field {key!r}")
      return d[key]

    if d.get("use_sliding_window"):
      raise ValueError(f"{source}: use_sliding_window=true is not supported")
    if d.get("hidden_act", "silu") != "silu":
      raise ValueError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (only 'silu')")
    rope_theta, rope_scaling = _read_rope(d, source)
    num_heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    attention_bias = bool(d.get("attention_bias", False))
    eos = d.get("eos_token_id")
    return cls(
      model_type=model_type,
      vocab_size=int(need("vocab_size")),
      hidden_size=hidden,
      intermediate_size=int(need("intermediate_size")),
      num_layers=int(need("num_hidden_layers")),
      num_heads=num_heads,
      num_kv_heads=int(d.get("num_key_value_heads") or num_heads),
      head_dim=int(d.get("head_dim") or hidden // num_heads),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
      attention_bias=qkv_bias or attention_bias,
      attention_out_bias=model_type == "llama" and attention_bias,
      mlp_bias=model_type == "llama" and bool(d.get("mlp_bias", False)),
      qk_norm=qk_norm,
      max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
      bos_token_id=d.get("bos_token_id"),
      eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
    )

  @classmethod
  def from_json_file(cls, path: str) -> "ModelConfig":
    """Reads `config.json` at `path`, naming the file in every error."""
    try:
      with open(path) as f:
        d = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"checkpoint config not found: {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: unreadable config ({e})") from e
    if not isinstance(d, dict):
      raise ValueError(f"{path}: expected a JSON object")
    return cls.from_hf_dict(d, source=path)

  def to_hf_dict(self) -> dict[str, Any]:
    """The `config.json` dictionary that transformers (4.x and 5.x) reads back to this model."""
    arch, _, _ = _FAMILIES[self.model_type]
    d = {
      "architectures": [arch],
      "model_type": self.model_type,
      "vocab_size": self.vocab_size,
      "hidden_size": self.hidden_size,
      "intermediate_size": self.intermediate_size,
      "num_hidden_layers": self.num_layers,
      "num_attention_heads": self.num_heads,
      "num_key_value_heads": self.num_kv_heads,
      "head_dim": self.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": self.rms_norm_eps,
      "rope_theta": self.rope_theta,
      "tie_word_embeddings": self.tie_word_embeddings,
      "max_position_embeddings": self.max_position_embeddings,
      "torch_dtype": "float32",
    }
    if self.rope_scaling is not None:
      d["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
    if self.model_type == "llama":
      d["attention_bias"] = self.attention_out_bias
      d["mlp_bias"] = self.mlp_bias
    if self.model_type == "qwen2":
      d["use_sliding_window"] = False
    if self.bos_token_id is not None:
      d["bos_token_id"] = self.bos_token_id
    if self.eos_token_id is not None:
      eos = self.eos_token_id
      d["eos_token_id"] = list(eos) if isinstance(eos, tuple) else eos
    return d


def _read_rope(d: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
  """RoPE base and scaling from either `rope_parameters` (5.x) or `rope_theta`/`rope_scaling`."""
  params = d.get("rope_parameters")
  if isinstance(params, dict) and "rope_theta" in params:
    theta = params["rope_theta"]
    scaling = params
  else:
    theta = d.get("rope_theta", 10000.0)
    scaling = d.get("rope_scaling")
  if not scaling:
    return float(theta), None
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "default":
    return float(theta), None
  if rope_type != "llama3":
    raise ValueError(f"{source}: rope type {rope_type!r} is not supported (default or llama3)")
  try:
    return float(theta), RopeScaling(
      factor=float(scaling["factor"]),
      low_freq_factor=float(scaling["low_freq_factor"]),
      high_freq_factor=float(scaling["high_freq_factor"]),
      original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )
  except KeyError as e:
    raise ValueError(f"{source}: llama3 rope scaling lacks {e.args[0]!r}") from None


def load_config(checkpoint_dir: str) -> ModelConfig:
  """Reads `<checkpoint_dir>/config.json`."""
  return ModelConfig.from_json_file(os.path.join(checkpoint_dir, "config.json"))
