"""The precision policy on real models: sampler vs trainer log-probs under unified and naive
FP8, LoRA over a frozen quantised base, the merged export, and AQN on the rollout copy only."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import models, objectives, sampling, train
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import mesh as mesh_lib
from grpojax.precision import policy
from grpojax.rl import sequences, steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = models.ModelConfig(
  model_type="qwen2",
  vocab_size=61,
  hidden_size=32,
  intermediate_size=64,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  attention_bias=True,
  tie_word_embeddings=False,
)
P, G, TP, N = 2, 3, 5, 6
ONE_DEVICE = layout_lib.Layout(mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1]))


def _model(matmul="default", seed=0):
  model = models.Decoder(CFG, rngs=nnx.Rngs(seed))
  policy.set_matmul(model, matmul)
  return model


def _sample(model, key=0):
  """Samples P x G completions and returns them with the sampler's policy log-probs."""
  graphdef, state = nnx.split(model)
  rs = np.random.RandomState(1)
  prompts = jnp.asarray(rs.randint(3, 61, (P, TP)), jnp.int32)
  mask = jnp.ones_like(prompts).at[0, :2].set(0)  # a left-padded prompt too
  comp = sampling.generate_padded(
    graphdef,
    state,
    prompts,
    mask,
    jax.random.key(key),
    max_new_tokens=N,
    num_samples=G,
    params=sampling.SamplingParams(temperature=1.0),
    stop_ids=(),
    pad_id=0,
  )
  return sequences.from_completions(comp), comp.policy_logprobs


def _trainer_logprobs(model, seqs):
  graphdef, state = nnx.split(model)
  out = jax.jit(
    lambda s, q: sequences.split_and_score(
      graphdef, s, q, compute_entropy=False, seq_chunk=64, vocab_chunk=None
    )
  )(state, seqs)
  return out.logprobs


@pytest.mark.parametrize("matmul", ["fp8", "fp8_block"])
def test_unified_fp8_sampler_and_trainer_agree_naive_does_not(matmul):
  unified = _model(matmul)
  seqs, sampler_lp = _sample(unified)
  trainer_lp = _trainer_logprobs(unified, seqs)
  mask = np.asarray(seqs.completion_mask, bool)
  unified_gap = np.abs(np.asarray(trainer_lp - sampler_lp))[mask].max()
  assert unified_gap < 1e-5, unified_gap  # the same graph: only float32 reassociation
  # Naive: FP8 rollout, higher-precision trainer, same weights and tokens.
  naive_gap = np.abs(np.asarray(_trainer_logprobs(_model("default"), seqs) - sampler_lp))[mask]
  assert naive_gap.mean() > 1e-4, naive_gap.mean()
  assert naive_gap.mean() > 100 * unified_gap


def _lora_model(fmt):
  model = _model()
  assert policy.quantize_base(model, fmt) == 14  # 7 projections x 2 layers
  assert policy.add_lora(model, rank=4, alpha=8.0, key=jax.random.key(3)) == 14
  return model


@pytest.mark.parametrize("fmt", ["nvfp4", "int4"])
def test_lora_training_leaves_the_quantised_base_bitwise_unchanged(fmt):
  model = _lora_model(fmt)
  graphdef, params = nnx.split(model)
  obj_config = objectives.default_config("grpo")
  obj_config.kl.coef = 0.0
  optimizer = optax.adam(1e-2)
  fns = steps.build(
    graphdef,
    objectives.make(obj_config),
    optimizer,
    temperature=1.0,
    compute_entropy=False,
    seq_chunk=64,
    vocab_chunk=None,
    trainable=nnx.LoRAParam,
  )
  seqs, _ = _sample(model)
  trainable, frozen = steps.split_trainable(params, nnx.LoRAParam)
  assert {p[-1] for p, _ in nnx.to_flat_state(trainable)} == {"lora_a", "lora_b"}
  opt_state = optimizer.init(trainable)
  before = jax.tree.map(np.array, params)
  for _ in range(3):
    g, loss_sum, count = fns.sft_grad(params, seqs)
    params, opt_state, _, finite = fns.update(params, opt_state, g, count)
    assert bool(finite)
  changed = {}
  for (path, old), (_, new) in zip(
    nnx.to_flat_state(before), nnx.to_flat_state(params), strict=True
  ):
    same = np.asarray(old.get_value()).tobytes() == np.asarray(new.get_value()).tobytes()
    changed[path] = not same
  for path, moved in changed.items():
    if path[-1] in ("lora_a", "lora_b"):
      assert moved, path
    else:
      assert not moved, path  # base codes, scales, embeddings, norms, biases
  assert any(p[-1] == "quant_values" for p in changed)


def test_merged_export_has_the_adapted_models_logits(tmp_path):
  model = _lora_model("nvfp4")
  for _, dense in policy.layer_projections(model):  # a trained-looking, non-zero adapter
    shape = dense.lora_b.get_value().shape
    dense.lora_b.set_value(0.05 * jax.random.normal(jax.random.key(5), shape))
  ids = jnp.asarray(np.random.RandomState(2).randint(3, 61, (2, 9)))
  adapted = np.asarray(nnx.jit(lambda m, x: m(x).logits)(model, ids))
  models.save_pretrained(policy.merged_model(model), str(tmp_path / "merged"))
  reloaded = models.from_pretrained(str(tmp_path / "merged"))
  assert all(
    d.kernel is not None and d.lora_a is None for _, d in policy.layer_projections(reloaded)
  )
  exported = np.asarray(nnx.jit(lambda m, x: m(x).logits)(reloaded, ids))
  np.testing.assert_allclose(exported, adapted, atol=2e-5)
  # Without the adapter the logits differ: the merge really carries the update.
  base = _lora_model("nvfp4")
  assert np.abs(np.asarray(nnx.jit(lambda m, x: m(x).logits)(base, ids)) - adapted).max() > 1e-3


def test_aqn_noise_goes_to_the_rollout_copy_only():
  sys.path.insert(0, REPO)
  from configs import common

  config = common.finish(common.base("grpo"), "local")
  with config.unlocked():
    config.precision.aqn.enabled = True
    config.train.steps = 10  # 10 stages of one step: step 0 clean, step 1 sigma_start
  graphdef, params = nnx.split(_model())
  state = train.TrainState(
    step=None,
    params=params,
    opt_state=None,
    objective_state=None,
    ref_params=None,
    data_position=None,
  )
  _, copier = train.rollout_copier(_model(), ONE_DEVICE)
  clean = train._rollout_params(config, state, copier, 0, jax.random.key(0))
  noisy = train._rollout_params(config, state, copier, 1, jax.random.key(0))
  for (path, p), (_, c), (_, n) in zip(
    nnx.to_flat_state(params), nnx.to_flat_state(clean), nnx.to_flat_state(noisy), strict=True
  ):
    # Stage 0 is clean.
    np.testing.assert_array_equal(np.asarray(c.get_value()), np.asarray(p.get_value()))
    diff = np.asarray(n.get_value()) - np.asarray(p.get_value())
    if path[-2].endswith("norm"):
      assert 0.3e-2 < diff.std() < 3e-2, (path, diff.std())  # sigma_start = 1e-2
    else:
      assert not diff.any(), path
  # The trainer's own copy stays clean.
  assert np.all(np.asarray(params["norm"]["scale"].get_value()) == 1.0)


def test_mismatch_metrics_against_numpy():
  rs = np.random.RandomState(0)
  trainer, sampler = rs.randn(4, 5) * 0.3, rs.randn(4, 5) * 0.3
  mask = (rs.rand(4, 5) > 0.3).astype(np.float32)
  got = train.mismatch_metrics(
    jnp.asarray(trainer, jnp.float32),
    jnp.asarray(sampler, jnp.float32),
    jnp.asarray(mask),
    tis_cap=1.5,
  )
  d = (trainer - sampler)[mask > 0]
  np.testing.assert_allclose(got["mismatch/abs_logprob"], np.abs(d).mean(), rtol=1e-5)
  np.testing.assert_allclose(got["mismatch/k3_kl"], (np.exp(d) - 1 - d).mean(), rtol=1e-4)
  np.testing.assert_allclose(got["mismatch/beyond_tis_frac"], (np.abs(d) > np.log(1.5)).mean())


def test_bf16_rollout_copy_samples_bit_identically_at_half_the_memory():
  model = models.Decoder(CFG, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  graphdef, params = nnx.split(model)
  sample_graphdef, copier = train.rollout_copier(model, ONE_DEVICE)
  copy = copier(params)
  nbytes = lambda t: sum(x.nbytes for x in jax.tree.leaves(t))
  assert nbytes(copy) * 2 == nbytes(params)
  key = jax.random.key(4)
  rs = np.random.RandomState(1)
  prompts = jnp.asarray(rs.randint(3, 61, (P, TP)), jnp.int32)
  kw = dict(
    max_new_tokens=N,
    num_samples=G,
    params=sampling.SamplingParams(temperature=1.0),
    stop_ids=(),
    pad_id=0,
  )
  a = sampling.generate_padded(graphdef, params, prompts, jnp.ones_like(prompts), key, **kw)
  b = sampling.generate_padded(sample_graphdef, copy, prompts, jnp.ones_like(prompts), key, **kw)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.sampling_logprobs), np.asarray(b.sampling_logprobs))
  policy.set_lm_head_f32(model, True)  # a float32 head needs the full-precision copy
  assert policy.rollout_copy_dtype(model) is None


@pytest.mark.parametrize("matmul", ["fp8", "fp8_block"])
def test_prequantised_fp8_rollout_copy_samples_bit_identically(matmul):
  """The sampler's copy stores FP8 kernels quantised once (one byte per weight) and samples
  exactly what the trainer's parameters sample, in bf16 compute."""
  model = models.Decoder(CFG, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  policy.set_matmul(model, matmul)
  graphdef, params = nnx.split(model)
  sample_graphdef, copier = train.rollout_copier(model, ONE_DEVICE)
  copy = copier(params)
  kinds = {str(x.dtype) for x in jax.tree.leaves(copy)}
  assert "float8_e4m3fn" in kinds and "float32" in kinds  # codes; scales
  rs = np.random.RandomState(1)
  prompts = jnp.asarray(rs.randint(3, 61, (P, TP)), jnp.int32)
  kw = dict(
    max_new_tokens=N,
    num_samples=G,
    params=sampling.SamplingParams(temperature=1.0),
    stop_ids=(),
    pad_id=0,
  )
  a = sampling.generate_padded(
    graphdef, params, prompts, jnp.ones_like(prompts), jax.random.key(2), **kw
  )
  b = sampling.generate_padded(
    sample_graphdef, copy, prompts, jnp.ones_like(prompts), jax.random.key(2), **kw
  )
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.sampling_logprobs), np.asarray(b.sampling_logprobs))
