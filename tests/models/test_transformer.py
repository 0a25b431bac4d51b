"""Logit parity with Hugging Face `transformers` in both directions, for every family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax import models
from grpojax.models import transformer
from tests import hf_reference


def _padded_batch(seed=0, vocab=97):
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, vocab, (3, 11))
  mask = np.ones((3, 11), np.int64)
  mask[1, :4] = 0  # left padding
  mask[2, 8:] = 0  # right padding
  return ids, mask


@nnx.jit
def _forward(model, ids, mask):
  return model(
    ids,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
  )


def _our_logits(model, ids, mask):
  out = _forward(model, jnp.asarray(ids), jnp.asarray(mask))
  return np.asarray(out.logits), out


@pytest.mark.parametrize("family", hf_reference.FAMILIES)
def test_logits_match_transformers(hf_checkpoint, family):
  hf_model, path = hf_checkpoint(family)
  ids, mask = _padded_batch()
  ours, out = _our_logits(models.from_pretrained(path), ids, mask)
  ref = hf_reference.hf_logits(hf_model, ids, mask)
  err = np.abs(ours - ref)[mask.astype(bool)].max()
  print(f"{family}: max |logit error| = {err:.2e} (logit scale {np.abs(ref).max():.1f})")
  assert err < 1e-4
  # The hidden states are the unembedding's input: logits = hidden @ unembedding.
  rebuilt = np.einsum(
    "btd,dv->btv", np.asarray(out.hidden), np.asarray(models.from_pretrained(path).unembedding())
  )
  np.testing.assert_allclose(rebuilt, ours, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama3"])
def test_saved_checkpoint_loads_in_transformers(hf_checkpoint, family, tmp_path):
  transformers = pytest.importorskip("transformers", reason="needs the `reference` extra")
  hf_model, path = hf_checkpoint(family)
  model = models.from_pretrained(path)
  out_dir = tmp_path / "saved"
  models.save_pretrained(model, str(out_dir))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir)).eval()
  assert type(reloaded) is type(hf_model)
  ids, mask = _padded_batch(seed=1)
  ours, _ = _our_logits(model, ids, mask)
  ref = hf_reference.hf_logits(reloaded, ids, mask)
  err = np.abs(ours - ref)[mask.astype(bool)].max()
  print(f"{family}: grpojax-saved checkpoint in transformers, max |logit error| = {err:.2e}")
  assert err < 1e-4


def test_sharded_save_round_trips(hf_checkpoint, tmp_path):
  _, path = hf_checkpoint("qwen2_untied")
  model = models.from_pretrained(path)
  out_dir = tmp_path / "sharded"
  models.save_pretrained(model, str(out_dir), max_shard_bytes=20_000)
  files = sorted(p.name for p in out_dir.iterdir())
  assert "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 2
  ids, mask = _padded_batch(seed=2)
  a, _ = _our_logits(model, ids, mask)
  b, _ = _our_logits(models.from_pretrained(str(out_dir)), ids, mask)
  np.testing.assert_array_equal(a, b)


def test_save_refuses_to_clobber_and_overwrites_atomically(hf_checkpoint, tmp_path):
  _, path = hf_checkpoint("qwen2")
  model = models.from_pretrained(path)
  out_dir = tmp_path / "ckpt"
  models.save_pretrained(model, str(out_dir))
  with pytest.raises(FileExistsError, match="overwrite"):
    models.save_pretrained(model, str(out_dir))
  models.save_pretrained(model, str(out_dir), overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind


def test_bf16_parameters_load_and_cast(hf_checkpoint):
  _, path = hf_checkpoint("qwen2")
  model = models.from_pretrained(path, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  assert model.embed_tokens.embedding[...].dtype == jnp.bfloat16
  ids, mask = _padded_batch()
  low, _ = _our_logits(model, ids, mask)
  high, _ = _our_logits(models.from_pretrained(path), ids, mask)
  # bf16 keeps ~3 significant digits: close to, but not equal to, float32.
  assert 0 < np.abs(low - high)[mask.astype(bool)].max() < 0.1 * np.abs(high).max()


def test_remat_policies_give_the_same_loss_and_gradients_with_less_saved_memory():
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=61,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    attention_bias=True,
  )
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 61, (4, 16)))

  def loss_and_grads(remat):
    model = models.Decoder(cfg, rngs=nnx.Rngs(0), remat=remat)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
      logits = nnx.merge(graphdef, p)(ids).logits
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[..., None], -1))

    fn = jax.jit(jax.value_and_grad(loss))
    temp = fn.lower(params).compile().memory_analysis().temp_size_in_bytes
    return fn(params), temp

  (ref_loss, ref_grads), ref_temp = loss_and_grads("none")
  for policy in ("full", "dots", "dots_all"):
    (loss, g), temp = loss_and_grads(policy)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, ref_grads)
    if policy == "full":
      assert temp < ref_temp, (temp, ref_temp)
  with pytest.raises(ValueError, match="remat='everything'"):
    models.Decoder(cfg, rngs=nnx.Rngs(0), remat="everything")


def _masked_attention_f64(q_bkmh, k_bkhs, v_bksh, mask_bts):
  """Float64 NumPy softmax attention over the attendable keys only."""
  b, k, m, h = q_bkmh.shape
  g = m // mask_bts.shape[1]
  scores = np.einsum("bkmh,bkhs->bkms", q_bkmh, k_bkhs) / np.sqrt(h)
  mask = np.repeat(mask_bts, g, axis=1)[:, None]
  scores = np.where(mask, scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bkms,bksh->bkmh", probs, v_bksh)


@pytest.mark.parametrize("num_filled", [10, 13])
def test_blockwise_attention_reads_only_the_filled_blocks(num_filled):
  # B=2 rows, K=2 kv heads, T=3 queries x G=2 heads, H=4, S=13 slots in blocks of C=4: 13 is
  # not a multiple of 4, so with 13 filled slots the 4th block is shifted back to slot 9.
  b, k, t, g, h, s, c = 2, 2, 3, 2, 4, 13, 4
  rs = np.random.RandomState(num_filled)
  q = rs.randn(b, k, t * g, h).astype(np.float32)
  keys = rs.randn(b, k, h, s).astype(np.float32)
  values = rs.randn(b, k, s, h).astype(np.float32)
  mask = (rs.rand(b, t, s) < 0.6) & (np.arange(s) < num_filled)
  mask[:, :, 0] = True  # every query attends at least one key
  read = -(-num_filled // c) * c  # slots the filled blocks cover
  keys[..., read:] = np.nan  # slots no block may read
  values[:, :, read:] = np.nan
  got = transformer.blockwise_attention(
    jnp.asarray(q),
    jnp.asarray(keys),
    jnp.asarray(values),
    jnp.asarray(mask),
    num_filled=jnp.asarray(num_filled),
    block=c,
  )
  want = _masked_attention_f64(
    q.astype(np.float64), keys[..., :read], values[:, :, :read], mask[..., :read]
  )
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  dense = transformer.dense_attention(
    jnp.asarray(q), jnp.asarray(keys), jnp.asarray(values), jnp.asarray(mask)
  )
  assert np.isnan(np.asarray(dense)).any() == (read < s)  # the whole-cache read sees the NaNs


def test_cache_block_must_be_positive():
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=11,
    hidden_size=8,
    intermediate_size=8,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=4,
  )
  with pytest.raises(ValueError, match="cache_block"):
    transformer.Decoder(cfg, rngs=nnx.Rngs(0), cache_block=0)
