"""The fused on-policy gradient equals scoring first and then taking the gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import models, objectives
from grpojax.rl import sequences, steps


def test_grad_on_policy_equals_score_then_grad():
  cfg = models.ModelConfig(
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
  graphdef, params = nnx.split(models.Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  objective = objectives.make(objectives.default_config("dapo"))
  fns = steps.build(
    graphdef,
    objective,
    optax.adamw(1e-3),
    temperature=0.8,
    compute_entropy=True,
    seq_chunk=16,
    vocab_chunk=None,
  )
  rs = np.random.RandomState(0)
  b, tp, n = 8, 4, 6
  comp_mask = (np.arange(n)[None] < rs.randint(1, n + 1, (b, 1))).astype(np.int32)
  seqs = sequences.Sequences(
    tokens=jnp.asarray(rs.randint(3, 37, (b, tp + n)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([np.ones((b, tp), np.int32), comp_mask], 1)),
    completion_mask=jnp.asarray(comp_mask),
  )
  old, entropy = fns.score(params, seqs)
  adv = jnp.asarray(rs.randn(b, 1).repeat(n, 1), jnp.float32)
  common = dict(
    sampler_logprobs=old - 0.01,
    advantages=adv,
    mask=seqs.completion_mask,
    rewards=jnp.asarray(rs.rand(b), jnp.float32),
    max_len=n,
  )
  key = jax.random.key(0)
  state = objective.init()
  g1, l1, d1, m1, _ = fns.grad(
    params, seqs, objectives.LossBatch(old_logprobs=old, **common), state, key
  )
  placeholder = objectives.LossBatch(old_logprobs=jnp.zeros_like(old), **common)
  g2, l2, d2, m2, _, old2, ent2 = fns.grad_on_policy(params, seqs, placeholder, state, key)
  np.testing.assert_allclose(old2, old, atol=1e-6)
  np.testing.assert_allclose(ent2, entropy, atol=1e-6)
  np.testing.assert_allclose(l2, l1, rtol=1e-6, atol=1e-7)
  assert float(d1) == float(d2)
  for k in m1:
    np.testing.assert_allclose(m2[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-7)
