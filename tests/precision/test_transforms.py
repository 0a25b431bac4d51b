"""Tests for grpojax/precision/transforms.py: the quantised base, LoRA adapters and the merged
export as parameter-tree transforms, and training adapters over a frozen quantised base."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import models, precision, types
from grpojax.precision import formats
from tests.precision import decode

LORA = precision.PrecisionPolicy(base_format="nvfp4", lora_rank=4, lora_alpha=8.0)


def _flat(state):
  return {types.path_to_str(p): v for p, v in nnx.to_flat_state(state)}


def _plain_state(seed=0):
  return nnx.state(models.Decoder(decode.CFG, rngs=nnx.Rngs(seed)))


def _ids():
  return jnp.asarray(np.random.RandomState(2).randint(3, 61, (2, 9)))


@nnx.jit
def _logits(model, ids):
  return model(ids).logits


@pytest.mark.parametrize("fmt", ["nvfp4", "int4", "fp8"])
def test_quantize_base_stores_the_formats_codes(fmt):
  plain = _plain_state()
  out = precision.quantize_base(plain, precision.PrecisionPolicy(base_format=fmt, lora_rank=1))
  before, after = _flat(plain), _flat(out)
  kernels = [p for p in before if p.startswith("layers/") and p.endswith("/kernel")]
  assert len(kernels) == 14  # 7 projections x 2 layers
  for path in kernels:
    owner = path[: -len("/kernel")]
    assert path not in after
    want = formats.quantize_weight(before[path].get_value(), fmt)
    got = [
      after[f"{owner}/{n}"] for n in precision.transforms.QUANT_LEAVES if f"{owner}/{n}" in after
    ]
    assert all(isinstance(v, precision.Frozen) for v in got)
    for g, w in zip(got, want, strict=True):
      assert g.get_value().dtype == w.dtype
      np.testing.assert_array_equal(np.asarray(g.get_value()), np.asarray(w))
  for path, var in before.items():  # embeddings, norms, biases, the LM head: the same objects
    if path not in kernels:
      assert after[path] is var, path
  with pytest.raises(ValueError, match="already quantised"):
    precision.quantize_base(out, precision.PrecisionPolicy(base_format=fmt))


def test_targets_select_the_quantised_and_adapted_projections():
  policy = precision.PrecisionPolicy(base_format="int4", lora_rank=2, lora_targets=r"(q|v)_proj")
  out = _flat(
    precision.init_lora(precision.quantize_base(_plain_state(), policy), policy, jax.random.key(0))
  )
  quantised = {p.rsplit("/", 2)[1] for p in out if p.endswith("quant_values")}
  adapted = {p.rsplit("/", 2)[1] for p in out if p.endswith("lora_a")}
  assert quantised == adapted == {"q_proj", "v_proj"}
  assert sum(p.endswith("quant_values") for p in out) == 4
  with pytest.raises(ValueError, match="lora_targets='nope_proj' matches no decoder projection"):
    precision.init_lora(
      _plain_state(),
      precision.PrecisionPolicy(lora_rank=2, lora_targets="nope_proj"),
      jax.random.key(0),
    )


def test_init_lora_draws_a_uniform_and_b_zero_in_path_order():
  key = jax.random.key(3)
  out = _flat(precision.init_lora(_plain_state(), LORA, key))
  adapted = sorted({p.rsplit("/", 1)[0] for p in out if p.endswith("/lora_a")})
  assert len(adapted) == 14
  # The first projection in path order is layers/0/mlp/down_proj: A [64, 4] from fold_in(key, 0).
  assert adapted[0] == "layers/0/mlp/down_proj"
  bound = 1.0 / np.sqrt(64)
  want = jax.random.uniform(jax.random.fold_in(key, 0), (64, 4), jnp.float32, -bound, bound)
  np.testing.assert_array_equal(np.asarray(out["layers/0/mlp/down_proj/lora_a"].get_value()), want)
  for owner in adapted:
    a, b = out[f"{owner}/lora_a"], out[f"{owner}/lora_b"]
    fan_in, fan_out = out[f"{owner}/kernel"].get_value().shape
    assert isinstance(a, nnx.LoRAParam) and isinstance(b, nnx.LoRAParam)
    assert a.get_value().shape == (fan_in, 4) and b.get_value().shape == (4, fan_out)
    assert np.abs(np.asarray(a.get_value())).max() <= 1.0 / np.sqrt(fan_in)
    assert not np.asarray(b.get_value()).any()
  plain = _plain_state()
  assert precision.init_lora(plain, precision.PrecisionPolicy(), key) is plain  # rank 0
  with pytest.raises(ValueError, match="already has LoRA adapters"):
    precision.init_lora(precision.init_lora(_plain_state(), LORA, key), LORA, key)


def test_merge_lora_matches_a_float64_reference():
  state = precision.init_lora(
    precision.quantize_base(_plain_state(), LORA), LORA, jax.random.key(1)
  )
  flat = [
    (
      p,
      v.replace(0.05 * jax.random.normal(jax.random.key(5), v.get_value().shape))
      if p[-1] == "lora_b"
      else v,
    )
    for p, v in nnx.to_flat_state(state)
  ]
  state = nnx.from_flat_state(flat)
  merged, src = _flat(precision.merge_lora(state, LORA)), _flat(state)
  assert not any(p.rsplit("/", 1)[1] in ("lora_a", "lora_b", "quant_values") for p in merged)
  owner = "layers/1/self_attn/o_proj"
  # dequant(NVFP4) = codes · block_scale · tensor_scale; merged = that + (8 / 4) · A · B.
  codes = np.asarray(src[f"{owner}/quant_values"].get_value(), np.float64)
  block = np.asarray(src[f"{owner}/quant_scales"].get_value(), np.float64)
  tensor = float(src[f"{owner}/quant_tensor_scale"].get_value())
  base = codes * np.repeat(block, 16, axis=0) * tensor
  a = np.asarray(src[f"{owner}/lora_a"].get_value(), np.float64)
  b = np.asarray(src[f"{owner}/lora_b"].get_value(), np.float64)
  got = merged[f"{owner}/kernel"]
  assert isinstance(got, nnx.Param) and got.get_value().dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got.get_value()), base + 2.0 * a @ b, rtol=1e-6, atol=1e-7)
  assert merged["embed_tokens/embedding"] is src["embed_tokens/embedding"]


@pytest.mark.parametrize("fmt", ["nvfp4", "int4"])
def test_lora_training_leaves_the_quantised_base_bitwise_unchanged(fmt):
  policy = precision.PrecisionPolicy(base_format=fmt, lora_rank=4, lora_alpha=8.0)
  model = models.init_policy(decode.CFG, seed=0, precision=policy)
  graphdef, trainable, frozen = nnx.split(model, nnx.LoRAParam, ...)
  assert {p[-1] for p, _ in nnx.to_flat_state(trainable)} == {"lora_a", "lora_b"}
  prompt, mask = decode.prompts()
  completion = jnp.asarray(np.random.RandomState(3).randint(3, 61, (decode.ROWS, decode.N)))
  seqs = decode.sequences(prompt, mask, completion)
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(trainable, opt_state):
    def nll(trainable):
      params = nnx.merge_state(trainable, frozen)
      out = models.split_and_score(graphdef, params, seqs, compute_entropy=False, seq_chunk=64)
      return -jnp.mean(out.logprobs)

    grads = jax.grad(nll)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state

  before = jax.tree.map(np.array, nnx.state(model))
  opt_state = optimizer.init(trainable)
  for _ in range(3):
    trainable, opt_state = step(trainable, opt_state)
  after = nnx.merge_state(trainable, frozen)
  changed = {}
  for (path, old), (_, new) in zip(
    nnx.to_flat_state(before), nnx.to_flat_state(after), strict=True
  ):
    assert np.all(np.isfinite(np.asarray(new.get_value(), np.float32)))
    changed[path] = np.asarray(old.get_value()).tobytes() != np.asarray(new.get_value()).tobytes()
  for path, moved in changed.items():
    if path[-1] in ("lora_a", "lora_b"):
      assert moved, path
    else:
      assert not moved, path  # base codes, scales, embeddings, norms, biases
  assert sum(p[-1] == "quant_values" for p in changed) == 14


def test_merged_export_has_the_adapted_models_logits(tmp_path):
  model = models.init_policy(decode.CFG, seed=0, precision=LORA)
  graphdef, state = nnx.split(model)
  flat = [  # a trained-looking, non-zero adapter
    (
      p,
      v.replace(0.05 * jax.random.normal(jax.random.key(5), v.get_value().shape))
      if p[-1] == "lora_b"
      else v,
    )
    for p, v in nnx.to_flat_state(state)
  ]
  model = nnx.merge(graphdef, nnx.from_flat_state(flat))
  adapted = np.asarray(_logits(model, _ids()))
  models.save_pretrained(model, str(tmp_path / "merged"))
  reloaded = models.from_pretrained(str(tmp_path / "merged"))
  layer_leaves = [p for p in _flat(nnx.state(reloaded)) if p.startswith("layers/")]
  assert sum(p.endswith("_proj/kernel") for p in layer_leaves) == 14
  assert not any("lora" in p or "quant" in p for p in layer_leaves)
  exported = np.asarray(_logits(reloaded, _ids()))
  np.testing.assert_allclose(exported, adapted, atol=2e-5)
  # Without the adapter the logits differ: the merge really carries the update.
  base = models.init_policy(decode.CFG, seed=0, precision=LORA)
  assert np.abs(np.asarray(_logits(base, _ids())) - adapted).max() > 1e-3
