"""Rollouts: prompts -> G samples each -> rewards, with DAPO's dynamic sampling; SFT rows; eval.

All prompts are left-padded to the fixed `rollout.max_prompt_len`, so the sampler and the trainer
see one shape per run and compile once.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import sampling
from grpojax.parallel import host_data
from grpojax.rl import evaluation, sequences
from grpojax.tasks import shaping


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
  for ex, p in zip(examples, ids, strict=True):
    if len(p) > max_prompt_len:
      raise ValueError(
        f"prompt {ex.prompt[:60]!r} has {len(p)} tokens, more than "
        f"config.rollout.max_prompt_len={max_prompt_len}"
      )
  return sampling.pad_prompts(ids, pad_id=pad_id, bucket=max_prompt_len)


def decode_completions(tokenizer, tokens, mask) -> list[str]:
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  return [
    tokenizer.decode(row[: int(m.sum())].tolist()) for row, m in zip(tokens, mask, strict=True)
  ]


class Generated(NamedTuple):
  """Completions of a prompt batch, and this process's share of them.

  Attributes:
    completions: global arrays, rows (prompt-major, G per prompt) split over the batch axes.
    rows: the global row ids this process holds.
    texts: the decoded completions of `rows`.
    examples: the example of each of `rows`.
  """

  completions: Any
  rows: np.ndarray
  texts: list[str]
  examples: list[Any]


def _generate(
  run, layout, graphdef, params, config, example_at, num_prompts, key, *, num_samples, temperature
) -> Generated:
  """Samples `num_samples` completions for prompts `example_at(0..num_prompts-1)`.

  This process reads, encodes and decodes only the prompts and completions its devices hold.
  """
  ro = config.rollout
  tok = run.tokenizer
  prompt_sharding = layout.rows(num_prompts)
  prompt_rows = host_data.owned_rows(prompt_sharding, num_prompts)
  examples = {int(i): example_at(int(i)) for i in prompt_rows}
  prompt_ids, prompt_mask = encode_prompts(
    run, [examples[int(i)] for i in prompt_rows], ro.max_prompt_len, tok.pad_id
  )
  sampling_params = sampling.SamplingParams(
    temperature=temperature, top_k=ro.top_k or None, top_p=ro.top_p, min_p=ro.min_p
  )
  comp = sampling.generate_padded(
    graphdef,
    params,
    host_data.from_rows(prompt_sharding, prompt_rows, prompt_ids, num_prompts),
    host_data.from_rows(prompt_sharding, prompt_rows, prompt_mask, num_prompts),
    key,
    max_new_tokens=ro.max_new_tokens,
    num_samples=num_samples,
    params=sampling_params,
    stop_ids=tuple(sorted(tok.eos_ids)),
    pad_id=tok.pad_id,
  )
  b = num_prompts * num_samples
  row_sharding = layout.rows(b)
  comp = jax.tree.map(lambda x: jax.device_put(x, row_sharding), comp)
  rows = host_data.owned_rows(row_sharding, b)
  texts = decode_completions(
    tok, host_data.local_rows(comp.tokens, rows), host_data.local_rows(comp.mask, rows)
  )
  return Generated(comp, rows, texts, [examples[int(r) // num_samples] for r in rows])


def _gather_rows(layout, gen: Generated, values: np.ndarray) -> np.ndarray:
  """Every row's value on every process, from each process's values for its own rows."""
  b = gen.completions.tokens.shape[0]
  return host_data.to_numpy(host_data.from_rows(layout.rows(b), gen.rows, values, b))


def sample_groups(
  run, layout, graphdef, params, config, data_position: int, key
) -> tuple[Rollout, int]:
  """Samples P groups of G, refilling from new prompts while groups are uninformative.

  With `objective.dynamic_sampling.enabled` (DAPO, arXiv 2503.14476) groups whose rewards are
  all equal carry no GRPO signal and are replaced by groups from further generation batches, up
  to `objective.dynamic_sampling.max_num_gen_batches`; if still short, the batch is filled with
  uninformative groups whose loss mask is zero, so shapes never change. With
  `objective.overlong.enabled`, DAPO's overlong penalty (in tokens) is added to the rewards.

  Each process verifies its own rows; the rewards are then shared, so every process makes the
  same refill decisions.

  Returns:
    (the rollout, the new data position).
  """
  ro = config.rollout
  dynamic = config.objective.dynamic_sampling
  overlong = config.objective.overlong
  p, g = ro.prompts_per_step, ro.samples_per_prompt
  kept, spare, first_rewards, first_correct, lengths = [], [], None, None, []
  comps = []
  for b in range(dynamic.max_num_gen_batches if dynamic.enabled else 1):
    start = data_position
    gen = _generate(
      run,
      layout,
      graphdef,
      params,
      config,
      lambda i, start=start: run.task.train(start + i),
      p,
      jax.random.fold_in(key, b),
      num_samples=g,
      temperature=ro.temperature,
    )
    data_position += p
    comp = gen.completions
    comps.append(comp)
    local = np.asarray(
      [run.task.reward_fn(t, ex) for t, ex in zip(gen.texts, gen.examples, strict=True)], np.float32
    )
    rewards = _gather_rows(layout, gen, local)
    lengths_b = host_data.to_numpy(jnp.sum(comp.mask, axis=1))
    if overlong.enabled:
      rewards = rewards + overlong.penalty_factor * shaping.overlong_penalty(
        lengths_b, max_length=overlong.max_len, cache_length=overlong.cache
      ).astype(np.float32)
    if first_rewards is None:
      first_rewards = rewards
      first_correct = _gather_rows(
        layout,
        gen,
        evaluation.correctness(gen.texts, gen.examples, run.task.reward_fn).astype(np.float32),
      )
      lengths = lengths_b
    rewards_pg = rewards.reshape(p, g)
    for i in range(p):
      group = (b, i, rewards_pg[i])
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
  row_sharding = layout.rows(p * g)
  order = np.concatenate([(b * p + i) * g + np.arange(g) for b, i, _ in chosen])
  if len(comps) == 1 and np.array_equal(order, np.arange(p * g)):
    pick = lambda x: x  # the common case: the first batch's groups, in order
  else:
    index = layout.put_replicated(order.astype(np.int32))
    pick = lambda x: jax.device_put(jnp.take(jnp.concatenate(x), index, axis=0), row_sharding)
  field = lambda name: pick(
    [getattr(c, name) for c in comps] if len(comps) > 1 else getattr(comps[0], name)
  )
  completion_mask = field("mask")
  keep_rows = layout.put_rows(np.repeat(np.asarray(flags_, np.int32), g)[:, None])
  seqs = sequences.Sequences(
    tokens=jnp.concatenate([field("prompt_tokens"), field("tokens")], axis=1),
    attn_mask=jnp.concatenate([field("prompt_mask"), completion_mask], axis=1),
    completion_mask=completion_mask * keep_rows,
  )
  informative = np.asarray([r.max() > r.min() for _, _, r in chosen])
  metrics = {
    "reward/mean": float(first_rewards.mean()),
    "reward/accuracy": float(first_correct.mean()),
    "reward/pass@G": float(first_correct.reshape(p, g).max(axis=1).mean()),
    "response/length": float(lengths.mean()),
    "response/clipped_frac": float(np.mean(lengths >= ro.max_new_tokens)),
    "rollout/generation_batches": float(len(comps)),
    "rollout/informative_groups": float(informative.sum()),
  }
  return Rollout(
    seqs=seqs,
    sampler_logprobs=field("sampling_logprobs"),
    rewards=np.concatenate([r for _, _, r in chosen]),
    informative=informative,
    metrics=metrics,
  ), data_position


def sft_sequences(run, layout, config, data_position: int, batch_size: int) -> sequences.Sequences:
  """Supervised rows: prompt, then the reference solution and EOS as the completion.

  This process reads and encodes only the rows its devices hold.
  """
  ro = config.rollout
  tok = run.tokenizer
  sharding = layout.rows(batch_size)
  rows = host_data.owned_rows(sharding, batch_size)
  examples = [run.task.train(data_position + int(i)) for i in rows]
  prompt_ids, prompt_mask = encode_prompts(run, examples, ro.max_prompt_len, tok.pad_id)
  n = ro.max_new_tokens
  comp = np.full((len(rows), n), tok.pad_id, np.int32)
  comp_mask = np.zeros((len(rows), n), np.int32)
  for i, ex in enumerate(examples):
    ids = [*tok.encode(ex.solution), tok.eos_ids[0]]
    if len(ids) > n:
      raise ValueError(
        f"the reference solution {ex.solution[:60]!r} has {len(ids)} tokens with "
        f"EOS, more than config.rollout.max_new_tokens={n}"
      )
    comp[i, : len(ids)] = ids
    comp_mask[i, : len(ids)] = 1
  put = lambda x: host_data.from_rows(sharding, rows, x, batch_size)
  return sequences.Sequences(
    tokens=put(np.concatenate([prompt_ids, comp], axis=1)),
    attn_mask=put(np.concatenate([prompt_mask, comp_mask], axis=1)),
    completion_mask=put(comp_mask),
  )


def evaluate(run, layout, graphdef, params, config, key) -> dict[str, float]:
  """Held-out greedy accuracy and unbiased pass@k at the rollout temperature."""
  ev = config.eval
  heldout = list(run.task.heldout)[: ev.num_prompts]
  chunk = ev.batch_prompts
  greedy, sampled = [], []
  for start in range(0, len(heldout), chunk):
    part = heldout[start : start + chunk]
    # A fixed shape (the last chunk padded with its last problem): one compilation.
    example_at = lambda i, part=part: part[min(i, len(part) - 1)]
    gen = _generate(
      run, layout, graphdef, params, config, example_at, chunk, key, num_samples=1, temperature=0.0
    )
    correct = evaluation.correctness(gen.texts, gen.examples, run.task.reward_fn)
    greedy.append(_gather_rows(layout, gen, correct.astype(np.float32))[: len(part)])
    gen = _generate(
      run,
      layout,
      graphdef,
      params,
      config,
      example_at,
      chunk,
      jax.random.fold_in(key, start),
      num_samples=ev.samples,
      temperature=config.rollout.temperature,
    )
    correct = evaluation.correctness(gen.texts, gen.examples, run.task.reward_fn)
    c = _gather_rows(layout, gen, correct.astype(np.float32))
    sampled.append(c.reshape(chunk, ev.samples)[: len(part)])
  correct_pg = np.concatenate(sampled)
  return {
    "greedy_accuracy": float(np.concatenate(greedy).mean()),
    "sample_accuracy": float(correct_pg.mean()),
    f"pass@{ev.pass_k}": evaluation.mean_pass_at_k(correct_pg, ev.pass_k),
  }
