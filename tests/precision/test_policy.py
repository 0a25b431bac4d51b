"""Tests for grpojax/precision/policy.py: the precision policy as a value, per-projection settings,
the sampler's policy and the sampler copy's dtype."""

import dataclasses

import jax.numpy as jnp
import pytest

from grpojax import precision
from grpojax.precision import policy

PROJECTIONS = [
  f"layers/{i}/{block}/{name}_proj"
  for i in (0, 11)
  for block, names in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
  for name in names
]


def test_default_is_plain_and_hashable():
  p = precision.PrecisionPolicy()
  assert (p.matmul, p.lm_head_f32, p.base_format, p.lora_rank) == ("default", False, "none", 0)
  assert p.lora_targets == policy.DEFAULT_LORA_TARGETS
  assert hash(p) == hash(precision.PrecisionPolicy())
  assert p == precision.PrecisionPolicy() != precision.PrecisionPolicy(matmul="fp8")
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.matmul = "fp8"  # a value: configured at construction only
  for path in PROJECTIONS + ["lm_head", "embed_tokens", "heads/value"]:
    assert p.projection(path) == policy.ProjectionPrecision()


@pytest.mark.parametrize(
  "kwargs, field",
  [
    (dict(matmul="fp16"), "matmul"),
    (dict(lm_head_f32=1), "lm_head_f32"),
    (dict(base_format="nf4"), "base_format"),
    (dict(lora_rank=-1), "lora_rank"),
    (dict(lora_rank=2.0), "lora_rank"),
    (dict(lora_alpha=0.0), "lora_alpha"),
    (dict(lora_alpha=float("inf")), "lora_alpha"),
    (dict(lora_targets="(q|"), "lora_targets"),
    (dict(rollout_fp8=True), "rollout_fp8"),
  ],
)
def test_invalid_fields_are_named(kwargs, field):
  with pytest.raises(ValueError, match=f"PrecisionPolicy.{field}"):
    precision.PrecisionPolicy(**kwargs)


def test_projection_settings_follow_the_targets():
  p = precision.PrecisionPolicy(
    matmul="fp8_block", base_format="nvfp4", lora_rank=4, lora_alpha=8.0, lora_targets=r"(q|v)_proj"
  )
  for path in PROJECTIONS:
    got = p.projection(path)
    targeted = path.endswith(("q_proj", "v_proj"))
    assert got.matmul == "fp8_block" and got.w_block == (128, 128)
    assert got.storage == ("nvfp4" if targeted else "kernel"), path
    assert (got.lora_rank, got.lora_scale) == ((4, 2.0) if targeted else (0, 0.0)), path
  # Only decoder-layer projections are affected; a name alone is not a projection.
  for path in ("lm_head", "q_proj", "heads/temperature/fc1", "layers/0/self_attn/q_norm"):
    assert p.projection(path) == policy.ProjectionPrecision(), path
  assert precision.PrecisionPolicy(matmul="fp8").projection(PROJECTIONS[0]).w_block is None


def test_the_sampler_copy_prequantises_only_plain_fp8_kernels():
  p = precision.PrecisionPolicy(
    matmul="fp8", base_format="int4", lora_rank=2, lora_targets="q_proj"
  )
  sampler = precision.sampler_policy(p)
  assert sampler == dataclasses.replace(p, rollout_fp8=True)
  storages = {path.rsplit("/", 1)[1]: sampler.projection(path).storage for path in PROJECTIONS}
  # The adapted, int4-based q_proj keeps its storage; every other FP8 projection is pre-quantised.
  assert storages.pop("q_proj") == "int4"
  assert set(storages.values()) == {"rollout_fp8"}
  lora_only = precision.PrecisionPolicy(matmul="fp8", lora_rank=2)
  assert precision.sampler_policy(lora_only).projection(PROJECTIONS[0]).storage == "kernel"


def test_sampler_policy_unified_and_naive():
  plain = precision.PrecisionPolicy(lm_head_f32=True)
  assert precision.sampler_policy(plain) == plain  # nothing to change: the same graph
  assert precision.sampler_policy(plain, matmul="default") == plain
  naive = precision.sampler_policy(plain, matmul="fp8")  # FP8 rollouts, a bf16/f32 trainer
  assert naive == dataclasses.replace(plain, matmul="fp8", rollout_fp8=True)
  fp8 = precision.PrecisionPolicy(matmul="fp8")
  assert precision.sampler_policy(fp8, matmul="default") == precision.PrecisionPolicy()
  with pytest.raises(ValueError, match="matmul='fp4'"):
    precision.sampler_policy(plain, matmul="fp4")


def test_sampler_copy_dtype():
  p = precision.PrecisionPolicy()
  assert precision.sampler_copy_dtype(p, jnp.bfloat16) == jnp.bfloat16
  assert precision.sampler_copy_dtype(p, jnp.float32) is None  # nothing narrower to store
  # A float32 LM head needs the full-precision copy.
  assert (
    precision.sampler_copy_dtype(dataclasses.replace(p, lm_head_f32=True), jnp.bfloat16) is None
  )
