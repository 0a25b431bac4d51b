"""Rollouts: prompts from the source -> G samples each -> rewards -> the group edit; SFT rows; eval.

All prompts are left-padded to the fixed `rollout.max_prompt_len`, so the sampler and the trainer
see one shape per run and compile once. Each process reads, encodes, decodes and verifies only
the rows its devices hold; rewards are then shared so every process makes the same decisions.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax import models, sampling, types
from grpojax.parallel import host_data
from grpojax.rl import evaluation, group_edits, step
from grpojax.tasks import environments, shaping


class Rollout(NamedTuple):
  """One RL batch of P groups of G rows, and what the host learned making it.

  Attributes:
    batch: the update's input (`step.Batch`).
    informative: [P] True for groups whose rewards are not all equal.
    data: the data state after the prompts this rollout read.
    metrics: generation-side metrics (reward, accuracy, lengths, refill counts).
    example_ids: [P] the training-stream id of each group's example.
    correct: [B] 1.0 where a row's completion is correct (the verifier's full reward).
    trained: [P] False for groups kept only to fill the batch.
    sampler_state: the sampler state of the batch's rows when they are the first generation
      batch in order (what `rl.pivots` forks), else None.
  """

  batch: step.Batch
  informative: np.ndarray
  data: Any
  metrics: dict
  example_ids: np.ndarray | None = None
  correct: np.ndarray | None = None
  trained: np.ndarray | None = None
  sampler_state: Any = None


class Sampler(NamedTuple):
  """The run's sampler: jitted prefill and decode per (samples per prompt, greedy), in the
  sampling layout; decode donates its state.

  Attributes:
    jitted: (num_samples, greedy) -> (prefill, decode), compiled on first use.
    sample: (params, prompt_tokens, prompt_mask, key, *, num_samples, greedy=False) ->
      `sampling.Completions`.
    score: (params, seqs) -> [B, N] log-probs of `seqs`' completion tokens under the sampler's
      policy at the rollout temperature (a teacher-forced forward, jitted).
    sample_state: like `sample`, but the final `sampling.SamplerState` (caches included).
    branch: (params, state, rows, at, key) -> `sampling.Completions`: `sampling.fork` of `state`
      (its caches reused: no prefill), then decoding to the end (jitted).
    extend: (params, state, tokens_be, mask_be) -> state: `sampling.extend` (environment
      replies of multi-turn rollouts; jitted, donates the state).
  """

  jitted: Callable
  sample: Callable
  score: Callable
  sample_state: Callable | None = None
  branch: Callable | None = None
  extend: Callable | None = None


def sampling_method(config, *, greedy: bool = False) -> sampling.Method:
  """The rollout's sampling method from `config.rollout` (or greedy decoding)."""
  ro = config.rollout
  if greedy:
    return sampling.Greedy()
  head = temperature_policy(config)
  if head is not None:
    return head
  return sampling.Sample(
    temperature=ro.temperature, top_k=ro.top_k or None, top_p=ro.top_p, min_p=ro.min_p
  )


def temperature_policy(config) -> sampling.HeadTemperature | None:
  """IntroLLM's head-driven per-token temperature (`rollout.temperature_policy`), or None."""
  ro = config.rollout
  tp = ro.temperature_policy
  if not tp.enabled:
    return None
  return sampling.HeadTemperature(
    tau_min=tp.tau_min,
    tau_max=tp.tau_max,
    concentration=tp.concentration,
    top_k=ro.top_k or None,
    top_p=ro.top_p,
    min_p=ro.min_p,
  )


def make_sampler(graphdef, config, tokenizer, *, param_shardings=None, mesh=None):
  """The run's `Sampler` over the sampler's graph (`graphdef`) and parameter layout (prompts
  keep the sharding they arrive with)."""
  ro = config.rollout
  stop_ids = tuple(sorted(tokenizer.eos_ids))
  # Branching forks rows after their root decode: the cache keeps room for a second one.
  branch_cfg = ro.get("branch")
  branching = bool(branch_cfg and branch_cfg.enabled)
  cache_len = ro.max_prompt_len + 2 * ro.max_new_tokens if branching else None
  if config.env.name:  # multi-turn: turns also end at the marker; room for every turn's replies
    stop_ids = tuple(sorted({*stop_ids, *tokenizer.encode(environments.TURN_END)}))
    max_turns, obs = config.env.max_turns, config.env.max_obs_tokens
    cache_len = ro.max_prompt_len + max_turns * (ro.max_new_tokens + obs + 1)

  @functools.cache
  def jitted(num_samples: int, greedy: bool):
    prefill = functools.partial(
      sampling.prefill,
      graphdef,
      num_samples=num_samples,
      max_new_tokens=ro.max_new_tokens,
      cache_len=cache_len,
      pad_id=tokenizer.pad_id,
    )
    decode = functools.partial(
      sampling.decode,
      graphdef,
      method=sampling_method(config, greedy=greedy),
      stop_ids=stop_ids,
      pad_id=tokenizer.pad_id,
    )
    if param_shardings is None:
      return jax.jit(prefill), jax.jit(decode, donate_argnums=(1,))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    prefill = jax.jit(prefill, in_shardings=(param_shardings, None, None, rep))
    decode = jax.jit(decode, in_shardings=(param_shardings, None), donate_argnums=(1,))
    return prefill, decode

  def sample_state(params, prompt_tokens, prompt_mask, key, *, num_samples, greedy=False):
    prefill, decode = jitted(num_samples, greedy)
    return decode(params, prefill(params, prompt_tokens, prompt_mask, key))

  def sample(params, prompt_tokens, prompt_mask, key, *, num_samples, greedy=False):
    return sampling.completions(
      sample_state(params, prompt_tokens, prompt_mask, key, num_samples=num_samples, greedy=greedy)
    )

  def branch(params, state, rows, at, key):
    forked = sampling.fork(state, rows, at, key, pad_id=tokenizer.pad_id)
    method = sampling_method(config)
    out = sampling.decode(
      graphdef, params, forked, method=method, stop_ids=stop_ids, pad_id=tokenizer.pad_id
    )
    return sampling.completions(out)

  def score(params, seqs):
    out = models.split_and_score(
      graphdef,
      params,
      seqs,
      temperature=ro.temperature,
      compute_entropy=False,
      seq_chunk=config.train.logprob_chunk,
    )
    return out.logprobs

  def extend(params, state, tokens_be, mask_be):
    return sampling.extend(graphdef, params, state, tokens_be, mask_be)

  shardings = {} if param_shardings is None else {"in_shardings": (param_shardings, None)}
  return Sampler(
    jitted=jitted,
    sample=sample,
    score=jax.jit(score, **shardings),
    sample_state=sample_state,
    branch=jax.jit(branch),
    extend=jax.jit(extend, donate_argnums=(1,)),
  )


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
    state: the sampler state the completions were read from (caches included).
  """

  completions: Any
  rows: np.ndarray
  texts: list[str]
  examples: list[Any]
  state: Any = None


def _generate(
  run, layout, sampler, params, config, example_at, num_prompts, key, *, num_samples, greedy
) -> Generated:
  """Samples `num_samples` completions for prompts `example_at(0..num_prompts-1)`."""
  tok = run.tokenizer
  prompt_sharding = layout.rows(num_prompts)
  prompt_rows = host_data.owned_rows(prompt_sharding, num_prompts)
  examples = {int(i): example_at(int(i)) for i in prompt_rows}
  prompt_ids, prompt_mask = encode_prompts(
    run, [examples[int(i)] for i in prompt_rows], config.rollout.max_prompt_len, tok.pad_id
  )
  put = lambda x: host_data.from_rows(prompt_sharding, prompt_rows, x, num_prompts)
  state = sampler.sample_state(
    params, put(prompt_ids), put(prompt_mask), key, num_samples=num_samples, greedy=greedy
  )
  comp = sampling.completions(state)
  b = num_prompts * num_samples
  row_sharding = layout.rows(b)
  comp = jax.tree.map(lambda x: jax.device_put(x, row_sharding), comp)
  rows = host_data.owned_rows(row_sharding, b)
  texts = decode_completions(
    tok, host_data.local_rows(comp.tokens, rows), host_data.local_rows(comp.mask, rows)
  )
  return Generated(comp, rows, texts, [examples[int(r) // num_samples] for r in rows], state)


def _gather_rows(layout, gen: Generated, values: np.ndarray) -> np.ndarray:
  """Every row's value on every process, from each process's values for its own rows."""
  b = gen.completions.tokens.shape[0]
  return host_data.to_numpy(host_data.from_rows(layout.rows(b), gen.rows, values, b))


class _Batch(NamedTuple):
  gen: Generated
  rewards: np.ndarray  # [B], shaped
  correct: np.ndarray  # [B]
  lengths: np.ndarray  # [B]
  ids: np.ndarray  # [P] training-stream ids


def reward_timeouts(reward_fn) -> int | None:
  """How many answers a time-limited reward function has timed out on so far, or None.

  A reward function that judges under a wall-clock limit (`tasks.math_verifier.MathVerifier`)
  counts the answers that ran out of time, scored 0, in a `timeouts` attribute.
  """
  return getattr(reward_fn, "timeouts", None)


def group_edit(config) -> group_edits.GroupEdit:
  """The configured group edit: DAPO's refill (`rollout.refill`) or every group as sampled."""
  refill = config.rollout.refill
  if refill.enabled:
    return group_edits.refill_informative(max_generation_batches=refill.max_generation_batches)
  return group_edits.keep_all()


def sample_groups(run, layout, sampler, params, config, source, data, key, edit) -> Rollout:
  """Samples P groups of G and forms the training batch with the group edit.

  Each generation batch reads the next P prompt ids from the prompt source; with
  `reward.overlong.enabled`, DAPO's overlong penalty (in tokens) is added to the rewards.

  Args:
    run: the run's static pieces (`setup.Run`).
    layout: the run's `Layout`.
    sampler: the run's `Sampler`.
    params: the sampler's copy of the policy.
    config: the run config.
    source: the `PromptSource`.
    data: the data state (`source.DataState`).
    key: this step's sampling key; generation batch b uses `fold_in(key, b)`.
    edit: the `GroupEdit`.

  Returns:
    The `Rollout`.
  """
  ro, overlong = config.rollout, config.reward.overlong
  p, g = ro.prompts_per_step, ro.samples_per_prompt
  source_state = data.source
  batches: list[_Batch] = []
  model_metrics: list[dict] = []  # per generation batch, from `run.reward_models`

  def generate_batch():
    nonlocal source_state
    b = len(batches)
    ids, source_state = source.next(source_state, p)
    ids = host_data.to_numpy(ids)
    gen = _generate(
      run,
      layout,
      sampler,
      params,
      config,
      lambda i: run.task.train(int(ids[i])),
      p,
      jax.random.fold_in(key, b),
      num_samples=g,
      greedy=False,
    )
    scores = np.asarray(
      [run.task.reward_fn(t, ex) for t, ex in zip(gen.texts, gen.examples, strict=True)]
    )
    local = scores.astype(np.float32)
    if run.reward_models is not None:  # a reward model or LLM judge, weighted (rl.model_rewards)
      extra, extra_metrics = run.reward_models(gen.texts, gen.examples)
      local = local + extra
      model_metrics.append(extra_metrics)
    # Correct = full reward (as evaluation.correctness), read off the scores: a verifier that
    # runs under a time limit is not asked twice.
    correct = _gather_rows(layout, gen, (scores >= 1.0).astype(np.float32))
    rewards = _gather_rows(layout, gen, local)
    lengths = host_data.to_numpy(jnp.sum(gen.completions.mask, axis=1))
    if overlong.enabled:
      penalty = shaping.overlong_penalty(
        lengths, max_length=overlong.max_len, cache_length=overlong.cache
      )
      rewards = rewards + overlong.penalty_factor * penalty.astype(np.float32)
    source_state = source.observe(source_state, ids, rewards.reshape(p, g))
    batches.append(_Batch(gen, rewards, correct, lengths, ids))
    return group_edits.refill_signal(rewards, correct, config.rollout.refill.metric).reshape(p, g)

  timeouts_before = reward_timeouts(run.task.reward_fn)
  # Configured reward functions (`reward.fns`) keep running totals of their components.
  components = getattr(run.task.reward_fn, "metrics_since", None)
  components_before = None if components is None else run.task.reward_fn.snapshot()
  picks = edit([generate_batch()], generate_batch)
  if len(picks) != p:
    raise ValueError(f"the group edit returned {len(picks)} groups for a batch of {p}")
  row_sharding = layout.rows(p * g)
  order = np.concatenate([(pk.batch * p + pk.group) * g + np.arange(g) for pk in picks])
  comps = [bt.gen.completions for bt in batches]
  in_order = len(comps) == 1 and np.array_equal(order, np.arange(p * g))
  if in_order:
    field = lambda name: getattr(comps[0], name)  # the common case: the first batch, in order
  else:
    index = layout.put_replicated(order.astype(np.int32))
    field = lambda name: jax.device_put(
      jnp.take(jnp.concatenate([getattr(c, name) for c in comps]), index, axis=0), row_sharding
    )
  trained = layout.put_rows(
    np.repeat(np.asarray([pk.trained for pk in picks], np.int32), g)[:, None]
  )
  completion_mask = field("mask")
  seqs = types.Sequences(
    tokens=jnp.concatenate([field("prompt_tokens"), field("tokens")], axis=1),
    attn_mask=jnp.concatenate([field("prompt_mask"), field("token_mask")], axis=1),
    completion_mask=completion_mask * trained,
  )
  head_driven = temperature_policy(config) is not None
  if head_driven:  # the trainer scores every token at the temperature it was drawn at
    seqs = seqs._replace(temperature=field("temperature"))
  all_rewards = np.concatenate([bt.rewards for bt in batches])
  rewards = all_rewards[order]
  informative = np.asarray([group_edits.is_informative(r) for r in rewards.reshape(p, g)])
  first = batches[0]
  metrics = {
    "reward/mean": float(first.rewards.mean()),
    "reward/accuracy": float(first.correct.mean()),
    "reward/pass@G": float(first.correct.reshape(p, g).max(axis=1).mean()),
    "response/length": float(first.lengths.mean()),
    "response/clipped_frac": float(np.mean(first.lengths >= ro.max_new_tokens)),
    "rollout/generation_batches": float(len(batches)),
    # Every token sampled this step, the groups a refill discarded included (its cost).
    "rollout/generated_tokens": float(sum(bt.lengths.sum() for bt in batches)),
    "rollout/informative_groups": float(informative.sum()),
  }
  if model_metrics:  # this process's rows of the first generation batch, as reward/mean
    metrics.update(model_metrics[0])
  if timeouts_before is not None:  # answers this process's verifier ran out of time on
    metrics["reward/timeouts"] = float(reward_timeouts(run.task.reward_fn) - timeouts_before)
  if components is not None:  # means over this process's rows of every generation batch
    metrics.update(components(components_before))
  batch = step.Batch(
    seqs=seqs,
    sampler_logprobs=field("sampling_logprobs"),
    rewards=layout.put_rows(rewards.astype(np.float32)),
  )
  if head_driven:
    batch = batch._replace(temperature_logprobs=field("temperature_logprobs"))
    tau = host_data.to_numpy(first.gen.completions.temperature)
    sampled = host_data.to_numpy(first.gen.completions.mask) > 0
    metrics["temperature/mean"] = float(tau[sampled].mean()) if sampled.any() else 0.0
  data = data._replace(source=jax.tree.map(layout.put_replicated, source_state))
  return Rollout(
    batch=batch,
    informative=informative,
    data=data,
    metrics=metrics,
    example_ids=np.asarray([batches[pk.batch].ids[pk.group] for pk in picks], np.int64),
    correct=np.concatenate([bt.correct for bt in batches])[order],
    trained=np.asarray([pk.trained for pk in picks], bool),
    sampler_state=batches[0].gen.state if in_order else None,
  )


def sft_sequences(run, layout, config, ids: np.ndarray) -> types.Sequences:
  """Supervised rows: prompt, then the reference solution and EOS as the completion.

  Args:
    ids: [batch] example ids of the task's training stream.

  This process reads and encodes only the rows its devices hold.
  """
  ro = config.rollout
  tok = run.tokenizer
  batch_size = len(ids)
  sharding = layout.rows(batch_size)
  rows = host_data.owned_rows(sharding, batch_size)
  examples = [run.task.train(int(ids[int(i)])) for i in rows]
  prompt_ids, prompt_mask = encode_prompts(run, examples, ro.max_prompt_len, tok.pad_id)
  n = ro.max_new_tokens
  comp = np.full((len(rows), n), tok.pad_id, np.int32)
  comp_mask = np.zeros((len(rows), n), np.int32)
  for i, ex in enumerate(examples):
    ids_i = [*tok.encode(ex.solution), tok.eos_ids[0]]
    if len(ids_i) > n:
      raise ValueError(
        f"the reference solution {ex.solution[:60]!r} has {len(ids_i)} tokens with "
        f"EOS, more than config.rollout.max_new_tokens={n}"
      )
    comp[i, : len(ids_i)] = ids_i
    comp_mask[i, : len(ids_i)] = 1
  put = lambda x: host_data.from_rows(sharding, rows, x, batch_size)
  return types.Sequences(
    tokens=put(np.concatenate([prompt_ids, comp], axis=1)),
    attn_mask=put(np.concatenate([prompt_mask, comp_mask], axis=1)),
    completion_mask=put(comp_mask),
  )


class Evaluation(NamedTuple):
  """A held-out evaluation, the same on every process.

  Attributes:
    metrics: `evaluation.summarize`'s metrics (greedy accuracy, avg@n, pass@k, maj@k, lengths).
    records: one JSON-ready record per example (`evaluation.example_records`).
  """

  metrics: dict[str, float]
  records: list[dict]


def _scored(run, layout, gen: Generated, num_rows: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """The first `num_rows` rows' texts, rewards and lengths, on every process.

  Each process verifies only the rows it holds (the rewards are then shared); every process
  decodes every row, as the majority vote needs all of a prompt's answers.
  """
  comp = gen.completions
  rewards = evaluation.rewards(gen.texts, gen.examples, run.task.reward_fn)
  mask = host_data.to_numpy(comp.mask)
  texts = decode_completions(
    run.tokenizer, host_data.to_numpy(comp.tokens)[:num_rows], mask[:num_rows]
  )
  lengths = mask.sum(axis=1)[:num_rows]
  return texts, _gather_rows(layout, gen, rewards)[:num_rows], lengths


def evaluate(run, layout, sampler, params, config, key, examples=None) -> Evaluation:
  """Greedy and sampled completions of held-out examples, scored (`grpojax.rl.evaluation`).

  The trainer's periodic evaluation and `python -m grpojax.evaluate` both call this. Prompts go
  in chunks of `eval.batch_prompts` (the last padded with its last problem: one compilation),
  each decoded greedily and sampled `eval.samples` times at the rollout temperature; k of pass@k
  and maj@k is `eval.pass_k`.

  Args:
    run, layout, sampler, params, config: the run's pieces, as for `sample_groups`.
    key: the sampling key (chunk c samples with `fold_in(key, c's first index)`).
    examples: the examples; None: the first `eval.num_prompts` of the task's held-out set.

  Returns:
    The `Evaluation`.
  """
  ev = config.eval
  if examples is None:
    examples = list(run.task.heldout)[: ev.num_prompts]
  chunk, n = ev.batch_prompts, ev.samples
  greedy, sampled = [], []
  for start in range(0, len(examples), chunk):
    part = examples[start : start + chunk]
    example_at = lambda i, part=part: part[min(i, len(part) - 1)]
    gen = _generate(
      run, layout, sampler, params, config, example_at, chunk, key, num_samples=1, greedy=True
    )
    greedy.append(_scored(run, layout, gen, len(part)))
    gen = _generate(
      run,
      layout,
      sampler,
      params,
      config,
      example_at,
      chunk,
      jax.random.fold_in(key, start),
      num_samples=n,
      greedy=False,
    )
    sampled.append(_scored(run, layout, gen, len(part) * n))
  greedy_texts = [t for texts, _, _ in greedy for t in texts]
  greedy_rewards = np.concatenate([r for _, r, _ in greedy])
  greedy_lengths = np.concatenate([length for _, _, length in greedy])
  flat_texts = [t for texts, _, _ in sampled for t in texts]
  texts_pn = [flat_texts[i * n : (i + 1) * n] for i in range(len(examples))]
  rewards_pn = np.concatenate([r for _, r, _ in sampled]).reshape(-1, n)
  lengths_pn = np.concatenate([length for _, _, length in sampled]).reshape(-1, n)
  return scored_evaluation(
    examples,
    greedy_texts=greedy_texts,
    greedy_rewards=greedy_rewards,
    greedy_lengths=greedy_lengths,
    texts_pn=texts_pn,
    rewards_pn=rewards_pn,
    lengths_pn=lengths_pn,
    k=ev.pass_k,
  )


def scored_evaluation(
  examples, *, greedy_texts, greedy_rewards, greedy_lengths, texts_pn, rewards_pn, lengths_pn, k
) -> Evaluation:
  """The `Evaluation` of scored completions: greedy ones [P] and n sampled ones [P, n] per
  example (a completion is correct when its reward is the full 1)."""
  metrics = evaluation.summarize(
    greedy_correct_p=greedy_rewards >= 1.0,
    greedy_lengths_p=greedy_lengths,
    correct_pn=rewards_pn >= 1.0,
    answers_pn=[[evaluation.extract_answer(t) for t in texts] for texts in texts_pn],
    lengths_pn=lengths_pn,
    k=k,
  )
  records = evaluation.example_records(
    examples,
    greedy_texts=greedy_texts,
    greedy_rewards=greedy_rewards,
    greedy_lengths=greedy_lengths,
    texts_pn=texts_pn,
    rewards_pn=rewards_pn,
    lengths_pn=lengths_pn,
    k=k,
  )
  return Evaluation(metrics, records)
