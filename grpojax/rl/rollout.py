"""Rollouts: prompts -> G samples each -> rewards, with DAPO's dynamic sampling; SFT rows; eval.

All prompts are left-padded to the fixed `rollout.max_prompt_len`, so the sampler and the trainer
see one shape per run and compile once.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import sampling
from grpojax.tasks import shaping
from grpojax.rl import evaluation, sequences


class Rollout(NamedTuple):
  """One RL batch of P groups of G rows (prompt-major).

  Attributes:
    seqs: trainer rows; `completion_mask` is zero on groups kept only to fill the batch.
    sampler_logprobs: [B, N] log-probs under the sampling distribution.
    rewards: [B] rewards.
    informative: [P] True for groups whose rewards are not all equal.
    metrics: generation-side metrics (reward, accuracy, lengths, refill counts).
  """

  seqs: sequences.Sequences
  sampler_logprobs: jax.Array
  rewards: np.ndarray
  informative: np.ndarray
  metrics: dict


def encode_prompts(run, examples, max_prompt_len: int, pad_id: int) -> tuple[np.ndarray, ...]:
  """Left-padded prompt ids [P, max_prompt_len] and mask; a too-long prompt is an error."""
  ids = [run.encode_prompt(ex) for ex in examples]
  for ex, p in zip(examples, ids):
    if len(p) > max_prompt_len:
      raise ValueError(f"prompt {ex.prompt[:60]!r} has {len(p)} tokens, more than "
                       f"config.rollout.max_prompt_len={max_prompt_len}")
  return sampling.pad_prompts(ids, pad_id=pad_id, bucket=max_prompt_len)


def decode_completions(tokenizer, completions) -> list[str]:
  tokens, mask = np.asarray(completions.tokens), np.asarray(completions.mask)
  return [tokenizer.decode(row[: int(m.sum())].tolist()) for row, m in zip(tokens, mask)]


def _generate(run, graphdef, params, config, examples, key, *, num_samples, temperature):
  ro = config.rollout
  tok = run.tokenizer
  prompt_ids, prompt_mask = encode_prompts(run, examples, ro.max_prompt_len, tok.pad_id)
  params_ = sampling.SamplingParams(temperature=temperature, top_k=ro.top_k or None,
                                    top_p=ro.top_p, min_p=ro.min_p)
  return sampling.generate_padded(
    graphdef, params, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), key,
    max_new_tokens=ro.max_new_tokens, num_samples=num_samples, params=params_,
    stop_ids=tuple(sorted(tok.eos_ids)), pad_id=tok.pad_id)


def sample_groups(run, graphdef, params, config, data_position: int, key) -> tuple[Rollout, int]:
  """Samples P groups of G, refilling from new prompts while groups are uninformative.

  With `objective.dynamic_sampling.enabled` (DAPO, arXiv 2503.14476) groups whose rewards are
  all equal carry no GRPO signal and are replaced by groups from further generation batches, up
  to `objective.dynamic_sampling.max_num_gen_batches`; if still short, the batch is filled with
  uninformative groups whose loss mask is zero, so shapes never change. With
  `objective.overlong.enabled`, DAPO's overlong penalty (in tokens) is added to the rewards.

  Returns:
    (the rollout, the new data position).
  """
  ro = config.rollout
  dynamic = config.objective.dynamic_sampling
  overlong = config.objective.overlong
  p, g = ro.prompts_per_step, ro.samples_per_prompt
  kept, spare, first_rewards, first_correct, lengths = [], [], None, None, []
  batches = 0
  for b in range(dynamic.max_num_gen_batches if dynamic.enabled else 1):
    examples = [run.task.train(data_position + i) for i in range(p)]
    data_position += p
    comp = _generate(run, graphdef, params, config, examples, jax.random.fold_in(key, b),
                     num_samples=g, temperature=ro.temperature)
    batches += 1
    texts = decode_completions(run.tokenizer, comp)
    rep = [ex for ex in examples for _ in range(g)]
    rewards = np.asarray([run.task.reward_fn(t, ex) for t, ex in zip(texts, rep)], np.float32)
    if overlong.enabled:
      lengths_b = np.asarray(comp.mask).sum(axis=1)
      rewards = rewards + overlong.penalty_factor * shaping.overlong_penalty(
        lengths_b, max_length=overlong.max_len, cache_length=overlong.cache).astype(np.float32)
    if first_rewards is None:
      first_rewards = rewards
      first_correct = evaluation.correctness(texts, rep, run.task.reward_fn)
      lengths = np.asarray(comp.mask).sum(axis=1)
    rewards_pg = rewards.reshape(p, g)
    for i in range(p):
      group = (comp, i, rewards_pg[i])
      informative = rewards_pg[i].max() > rewards_pg[i].min()
      (kept if informative or not dynamic.enabled else spare).append(group)
    if not dynamic.enabled or len(kept) >= p:
      break
  chosen = kept[:p]
  flags_ = [True] * len(chosen)
  if len(chosen) < p:
    fill = spare[: p - len(chosen)]
    chosen += fill
    flags_ += [False] * len(fill)
  rows = lambda x, i: x[i * g:(i + 1) * g]
  cat = lambda f: jnp.concatenate([rows(f(c), i) for c, i, _ in chosen], axis=0)
  completion_mask = cat(lambda c: c.mask)
  keep_rows = jnp.repeat(jnp.asarray(flags_), g)[:, None]
  seqs = sequences.Sequences(
    tokens=jnp.concatenate([cat(lambda c: c.prompt_tokens), cat(lambda c: c.tokens)], axis=1),
    attn_mask=jnp.concatenate([cat(lambda c: c.prompt_mask), completion_mask], axis=1),
    completion_mask=completion_mask * keep_rows)
  informative = np.asarray([r.max() > r.min() for _, _, r in chosen])
  metrics = {
    "reward/mean": float(first_rewards.mean()),
    "reward/accuracy": float(first_correct.mean()),
    "reward/pass@G": float(first_correct.reshape(p, g).max(axis=1).mean()),
    "response/length": float(lengths.mean()),
    "response/clipped_frac": float(np.mean(lengths >= ro.max_new_tokens)),
    "rollout/generation_batches": float(batches),
    "rollout/informative_groups": float(informative.sum()),
  }
  return Rollout(seqs=seqs, sampler_logprobs=cat(lambda c: c.sampling_logprobs),
                 rewards=np.concatenate([r for _, _, r in chosen]), informative=informative,
                 metrics=metrics), data_position


def sft_sequences(run, config, data_position: int, batch_size: int) -> sequences.Sequences:
  """Supervised rows: prompt, then the reference solution and EOS as the completion."""
  ro = config.rollout
  tok = run.tokenizer
  examples = [run.task.train(data_position + i) for i in range(batch_size)]
  prompt_ids, prompt_mask = encode_prompts(run, examples, ro.max_prompt_len, tok.pad_id)
  n = ro.max_new_tokens
  comp = np.full((batch_size, n), tok.pad_id, np.int32)
  comp_mask = np.zeros((batch_size, n), np.int32)
  for i, ex in enumerate(examples):
    ids = [*tok.encode(ex.solution), tok.eos_ids[0]]
    if len(ids) > n:
      raise ValueError(f"the reference solution {ex.solution[:60]!r} has {len(ids)} tokens with "
                       f"EOS, more than config.rollout.max_new_tokens={n}")
    comp[i, : len(ids)] = ids
    comp_mask[i, : len(ids)] = 1
  return sequences.Sequences(
    tokens=jnp.asarray(np.concatenate([prompt_ids, comp], axis=1)),
    attn_mask=jnp.asarray(np.concatenate([prompt_mask, comp_mask], axis=1)),
    completion_mask=jnp.asarray(comp_mask))


def evaluate(run, graphdef, params, config, key) -> dict[str, float]:
  """Held-out greedy accuracy and unbiased pass@k at the rollout temperature."""
  ev = config.eval
  heldout = list(run.task.heldout)[: ev.num_prompts]
  chunk = ev.batch_prompts
  greedy, sampled = [], []
  for start in range(0, len(heldout), chunk):
    part = heldout[start:start + chunk]
    padded = part + [part[-1]] * (chunk - len(part))  # fixed shape: one compilation
    out = _generate(run, graphdef, params, config, padded, key, num_samples=1, temperature=0.0)
    greedy.append(evaluation.correctness(decode_completions(run.tokenizer, out), padded,
                                         run.task.reward_fn)[: len(part)])
    out = _generate(run, graphdef, params, config, padded, jax.random.fold_in(key, start),
                    num_samples=ev.samples, temperature=config.rollout.temperature)
    rep = [ex for ex in padded for _ in range(ev.samples)]
    c = evaluation.correctness(decode_completions(run.tokenizer, out), rep, run.task.reward_fn)
    sampled.append(c.reshape(chunk, ev.samples)[: len(part)])
  correct_pg = np.concatenate(sampled)
  return {
    "greedy_accuracy": float(np.concatenate(greedy).mean()),
    "sample_accuracy": float(correct_pg.mean()),
    f"pass@{ev.pass_k}": evaluation.mean_pass_at_k(correct_pg, ev.pass_k),
  }
