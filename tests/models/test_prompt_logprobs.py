"""Prompt-token log-probs from the trainer's forward pass (ProGRPO's c(q), arXiv 2602.05281)
against a full-logits forward in float64 NumPy, and the ARM advantage reading them."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grpojax import models, objectives
from tests.models import test_policy_outputs as po


def _log_softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_prompt_logprobs_equal_a_full_logits_forward():
  model = po._model()
  graphdef, state = nnx.split(model)
  seqs = po._seqs()
  out = jax.jit(
    lambda s, q: models.split_and_score(
      graphdef, s, q, temperature=po.TEMPERATURE, compute_prompt_logprobs=True
    ),
  )(state, seqs)
  logits = np.asarray(po._full_forward(state, seqs).logits, np.float64) / po.TEMPERATURE
  logp = _log_softmax64(logits)
  tokens, attn = np.asarray(seqs.tokens), np.asarray(seqs.attn_mask)
  want = np.zeros((po.B, po.TP))
  mask = np.zeros((po.B, po.TP), np.int32)
  for b in range(po.B):
    for p in range(1, po.TP):
      if attn[b, p] and attn[b, p - 1]:  # a real token with a real token before it
        want[b, p] = logp[b, p - 1, tokens[b, p]]
        mask[b, p] = 1
  np.testing.assert_array_equal(np.asarray(models.prompt_token_mask(seqs.attn_mask, po.TP)), mask)
  np.testing.assert_allclose(np.asarray(out.prompt_logprobs), want, rtol=1e-5, atol=1e-5)
  assert mask[0, :3].sum() == 0 and mask[0, 3] == 1  # row 0's prompt starts at position 2


def _t_low_mean(lp, mask, frac=0.2):
  vals = np.sort(lp[mask > 0])
  k = max(int(np.ceil(frac * len(vals) - 1e-6)), 1)
  return vals[:k].mean()


def test_progrpo_reads_the_prompt_confidence():
  """Ã_i = A_i + α (c(q) − c(o_i|q)) in a group with a correct answer, with c the mean log-prob
  over the lowest 20% of tokens, c(q) from the prompt's tokens (float64 NumPy)."""
  rng = np.random.RandomState(1)
  p, g, t, s = 2, 4, 5, 6
  rewards = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
  logp = -rng.uniform(0.05, 4.0, (p * g, t))
  mask = np.ones((p * g, t))
  mask[1, 3:] = 0
  prompt_ps = -rng.uniform(0.05, 6.0, (p, s))
  prompt_mask_ps = np.ones((p, s))
  prompt_mask_ps[:, 0] = 0  # the first prompt token is never scored
  objective = objectives.make(objectives.default_config("progrpo"))
  inputs = objectives.GroupInputs(
    mask=jnp.asarray(mask),
    old_logprobs=jnp.asarray(logp, jnp.float32),
    prompt_logprobs=jnp.asarray(np.repeat(prompt_ps, g, axis=0), jnp.float32),
    prompt_mask=jnp.asarray(np.repeat(prompt_mask_ps, g, axis=0)),
  )
  adv, _ = objective.advantages(jnp.asarray(rewards, jnp.float32), objective.init(), inputs)
  alpha = objectives.default_config("progrpo").alpha
  want = np.zeros((p, g))
  for i in range(p):
    r = rewards[i]
    a = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    if r.max() > 0.5:
      c_q = _t_low_mean(prompt_ps[i], prompt_mask_ps[i])
      c_o = np.array([_t_low_mean(logp[i * g + j], mask[i * g + j]) for j in range(g)])
      a = a + alpha * (c_q - c_o)
    want[i] = a
  np.testing.assert_allclose(np.asarray(adv)[:, 0].reshape(p, g), want, rtol=1e-5, atol=1e-6)
  # The prompt's confidence matters: without it c(q) is the group's mean answer confidence.
  config = objectives.default_config("progrpo")
  config.prompt_confidence = False
  other = objectives.make(config)
  adv2, _ = other.advantages(jnp.asarray(rewards, jnp.float32), other.init(), inputs)
  assert not np.allclose(np.asarray(adv2)[:g, 0], np.asarray(adv)[:g, 0])
