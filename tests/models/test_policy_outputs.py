"""Tests for grpojax/models/policy_outputs.py: log-probs, entropy and head outputs from one
forward, at the positions that predict the completion tokens, against the full-logits forward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import models, types
from grpojax.models import transformer

CFG = models.ModelConfig(
  model_type="llama",
  vocab_size=37,
  hidden_size=16,
  intermediate_size=32,
  num_layers=2,
  num_heads=2,
  num_kv_heads=1,
  head_dim=8,
)
HEADS = models.HeadsConfig(value=True, log_z=True, temperature=True)
B, TP, N = 3, 4, 5
TOL = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def _model():
  return models.init_policy(CFG, seed=0, heads=HEADS)


def _seqs(pad_id=0, temperature=None):
  rng = np.random.RandomState(0)
  tokens = rng.randint(3, 37, (B, TP + N))
  attn = np.ones((B, TP + N), np.int32)
  attn[0, :2] = 0  # a left-padded prompt
  attn[1, -2:] = 0  # a completion that ended early (right padding)
  tokens = np.where(attn > 0, tokens, pad_id)
  return types.Sequences(
    tokens=jnp.asarray(tokens, jnp.int32),
    attn_mask=jnp.asarray(attn),
    completion_mask=jnp.asarray(attn[:, TP:]),
    temperature=temperature,
  )


# The scalar temperature applies to rows without their own.
TEMPERATURE = 0.7


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef, params, seqs):
  return models.split_and_score(
    graphdef, params, seqs, temperature=TEMPERATURE, seq_chunk=4, vocab_chunk=16
  )


@jax.jit
def _full_forward(model_state, seqs):
  model = nnx.merge(nnx.split(_model())[0], model_state)
  mask = seqs.attn_mask
  return model(
    seqs.tokens,
    positions_bt=transformer.positions_from_mask(mask),
    attn_mask_bts=transformer.causal_padding_mask(mask),
  )


def _reference(seqs, temperature_bn):
  """float64 log-probs and entropy of the completion tokens from the full [B, L, V] logits."""
  out = _full_forward(nnx.state(_model()), seqs)
  z = np.asarray(out.logits, np.float64)[:, TP - 1 : -1] / temperature_bn[..., None]
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  targets = np.asarray(seqs.tokens)[:, TP:]
  return (
    np.take_along_axis(logp, targets[..., None], -1)[..., 0],
    -(np.exp(logp) * logp).sum(-1),
    out.hidden,
  )


def test_outputs_match_the_full_forward_at_the_completion_positions():
  model = _model()
  seqs = _seqs()
  got = _score(*nnx.split(model), seqs)
  want_lp, want_ent, hidden = _reference(seqs, np.full((B, N), TEMPERATURE))
  np.testing.assert_allclose(got.logprobs, want_lp, **TOL)
  np.testing.assert_allclose(got.entropy, want_ent, **TOL)
  # V(s_t) and the temperature head read the hidden states that predict completion token t.
  np.testing.assert_allclose(got.values, model.heads.value(hidden[:, TP - 1 : -1]), **TOL)
  np.testing.assert_allclose(
    got.temperature, model.heads.temperature(hidden[:, TP - 1 : -1]), **TOL
  )
  # log Z pools the real prompt tokens.
  want_log_z = model.heads.log_z(hidden[:, :TP], seqs.attn_mask[:, :TP])
  np.testing.assert_allclose(got.log_z, want_log_z, **TOL)
  assert got.values.shape == got.temperature.shape == (B, N) and got.log_z.shape == (B,)


def test_per_token_temperature_scores_each_token_at_its_own():
  temperature = np.random.RandomState(1).uniform(0.5, 1.5, (B, N)).astype(np.float32)
  temperature[1, -2:] = 0.0  # padding carries no temperature: read as 1, and masked anyway
  seqs = _seqs(temperature=jnp.asarray(temperature))
  got = _score(*nnx.split(_model()), seqs)
  want_lp, want_ent, _ = _reference(seqs, np.where(temperature > 0, temperature, 1.0))
  np.testing.assert_allclose(got.logprobs, want_lp, **TOL)
  np.testing.assert_allclose(got.entropy, want_ent, **TOL)  # the scalar TEMPERATURE is ignored


def test_log_z_ignores_prompt_padding():
  a = _score(*nnx.split(_model()), _seqs(pad_id=0))
  b = _score(*nnx.split(_model()), _seqs(pad_id=5))  # other ids at the masked positions
  np.testing.assert_allclose(a.log_z, b.log_z, rtol=1e-6, atol=1e-6)
  mask = np.asarray(_seqs().completion_mask) > 0
  np.testing.assert_allclose(np.asarray(a.logprobs)[mask], np.asarray(b.logprobs)[mask], **TOL)


FIELDS = ("values", "log_z", "temperature", "logprobs")


def test_head_gradients_flow_into_the_decoder_and_not_into_the_logprobs():
  graphdef, params = nnx.split(_model())
  seqs = _seqs()

  @jax.jit
  def grad(params, weights):  # one compilation: the output to differentiate is picked by weights
    def loss(params):
      out = models.split_and_score(graphdef, params, seqs)
      return sum(w * jnp.sum(getattr(out, f)) for w, f in zip(weights, FIELDS, strict=True))

    return jax.grad(loss)(params)

  def grads(field):
    g = grad(params, jnp.asarray([f == field for f in FIELDS], jnp.float32))
    return {p: np.abs(np.asarray(v.get_value())).max() for p, v in nnx.to_flat_state(g)}

  for field, head in (("values", "value"), ("log_z", "log_z"), ("temperature", "temperature")):
    g = grads(field)
    assert g[("layers", 0, "self_attn", "q_proj", "kernel")] > 0, field  # into the backbone
    assert all(v == 0 for p, v in g.items() if p[0] == "heads" and p[1] != head), field
    assert any(v > 0 for p, v in g.items() if p[:2] == ("heads", head)), field
  g = grads("logprobs")
  assert all(v == 0 for p, v in g.items() if p[0] == "heads")


def test_a_model_without_heads_returns_none_for_them():
  model = models.init_policy(CFG, seed=0)
  out = models.policy_outputs(model, _seqs(), compute_entropy=False, seq_chunk=8)
  assert out.entropy is None and out.values is None and out.log_z is None
  assert out.temperature is None and out.logprobs.shape == (B, N)
