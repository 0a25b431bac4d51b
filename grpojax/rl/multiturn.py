"""Multi-turn rollouts: the policy and host-side environments take turns in one sampler state.

  prefill once -> [decode until each live row's turn ends -> environments (host, time-limited)
  -> tokenised observations appended with `sampling.extend`] x max_turns

Token in, token out: the tokens the policy sampled are never decoded and re-encoded into the
trainer row; the row is the prompt followed by exactly the sampler state's completion buffer
(sampled and appended tokens in order), so the trainer scores the sequence that was sampled.
Only sampled tokens are in the loss mask and have sampler log-probs; appended observation tokens
have neither. `step.Batch.turns` gives each completion token its turn (a policy turn and the
environment's reply to it share one number). One token budget, `rollout.max_new_tokens`, covers
the whole episode; an episode whose next observation does not fit ends there.

The episode's reward is the sum of the per-turn rewards its environment returned (see
`tasks.environments`). An environment that raises, or whose call runs past `env.timeout_s`
(each call runs in a daemon thread, so a hung one is abandoned, never waited for), ends its
episode with reward 0; it is counted (`env/errors`, `env/timeouts`) and logged once, and the
rest of the batch goes on. `sample_groups`, `sft_sequences` and `evaluate` have the signatures
of their single-turn counterparts in `rollout`.

Runs in one process: every environment is played on the host that holds the whole batch.
"""

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from grpojax import sampling, types
from grpojax.parallel import host_data
from grpojax.rl import group_edits, rollout, step
from grpojax.tasks import environments, plugins

# What `_call_all` reports for each call.
OK, ERROR, TIMEOUT = "ok", "error", "timeout"


def check_config(config) -> None:
  """Checks `config.env` and the settings a multi-turn run cannot combine with.

  Raises:
    ValueError: the message starts with the offending `config.<field>`.
  """
  env = config.env
  if not env.name:
    if env.kwargs:
      raise ValueError("config.env.kwargs: keyword arguments need an environment in env.name")
    return
  if not (plugins.is_import_path(env.name) or env.name in environments.BUILTIN_ENVS):
    raise ValueError(
      f"config.env.name: unknown environment {env.name!r}; built-in ones are "
      f"{environments.BUILTIN_ENVS}, or a factory by import path 'module.path:function'"
    )
  if plugins.is_import_path(env.name):
    plugins.resolve(env.name, "env.name")
  checks = [
    (env.max_turns >= 1, "env.max_turns", "must be >= 1"),
    (env.timeout_s > 0, "env.timeout_s", "must be > 0"),
    (env.max_obs_tokens >= 1, "env.max_obs_tokens", "must be >= 1"),
    (not config.rollout.refill.enabled, "rollout.refill.enabled", "is single-turn only"),
    (not config.rollout.rephrase.enabled, "rollout.rephrase.enabled", "is single-turn only"),
    (not config.rollout.branch.enabled, "rollout.branch.enabled", "is single-turn only"),
    (
      not config.rollout.temperature_policy.enabled,
      "rollout.temperature_policy.enabled",
      "is single-turn only",
    ),
    (not config.reward.fns, "reward.fns", "an environment's episodes carry their own reward"),
    (not config.reward.model.path, "reward.model.path", "is single-turn only"),
    (not config.reward.judge.path, "reward.judge.path", "is single-turn only"),
    (not config.task.data_path, "task.data_path", "an environment brings its own examples"),
    (jax.process_count() == 1, "env.name", "multi-turn rollouts run in one process"),
  ]
  for ok, field, message in checks:
    if not ok:
      raise ValueError(f"config.{field}: {message} (with env.name={env.name!r})")


def make_task(config) -> environments.MultiTurnTask:
  """The run's multi-turn task: a built-in one (`env.kwargs` its keyword arguments, the seed and
  held-out size from `config.task`) or the factory at `env.name`; `env.max_turns` is its turn
  limit.

  Raises:
    ValueError: the message starts with the offending `config.<field>`.
  """
  env = config.env
  kwargs = env.kwargs.to_dict()
  try:
    if plugins.is_import_path(env.name):
      task = plugins.resolve(env.name, "env.name")(**kwargs)
    else:
      task = environments.make_env_task(
        env.name,
        max_turns=env.max_turns,
        seed=config.task.seed,
        heldout_size=config.task.heldout_size,
        **kwargs,
      )
  except plugins.PluginError:
    raise
  except Exception as error:  # noqa: BLE001 (a user's factory may fail in any way)
    raise ValueError(f"config.env.kwargs: {env.name}: {type(error).__name__}: {error}") from None
  if not isinstance(task, environments.MultiTurnTask):
    raise ValueError(
      f"config.env.name: {env.name} returned {type(task).__name__}, not a "
      "grpojax.tasks.environments.MultiTurnTask"
    )
  return dataclasses.replace(task, max_turns=env.max_turns)


def turn_end_id(tokenizer) -> int:
  """The token id of `environments.TURN_END`; it must be one token."""
  ids = tokenizer.encode(environments.TURN_END)
  if len(ids) != 1:
    raise ValueError(
      f"the turn-end marker {environments.TURN_END!r} is {len(ids)} tokens for this tokenizer; "
      "multi-turn rollouts need it to be one"
    )
  return ids[0]


def _call_all(calls: list[Callable[[], Any]], timeout_s: float) -> list[tuple[str, Any]]:
  """Runs the calls concurrently, each in a daemon thread; `(OK, value)`, `(ERROR, exception)`
  or `(TIMEOUT, None)` per call, after at most `timeout_s` (a hung call is left behind)."""
  results: list[tuple[str, Any]] = [(TIMEOUT, None)] * len(calls)

  def run(i, fn):
    try:
      results[i] = (OK, fn())
    except Exception as error:  # noqa: BLE001 (an environment may fail in any way)
      results[i] = (ERROR, error)

  threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(calls)]
  for t in threads:
    t.start()
  deadline = time.monotonic() + timeout_s
  for t in threads:
    t.join(max(0.0, deadline - time.monotonic()))
  return [(TIMEOUT, None) if t.is_alive() else results[i] for i, t in enumerate(threads)]


class Episodes(NamedTuple):
  """A batch of played episodes (rows prompt-major, G per example).

  Attributes:
    state: the final sampler state (its completion buffers are the trainer rows' completions).
    rewards: [B] float32 episode rewards (sum of the turns' rewards; 0 after a failure).
    turns: [B, N] int32 turn of each completion token, 0 on padding.
    num_turns: [B] policy turns played.
    handoffs: [B] policy turns that ended with the turn-end marker (tool calls, moves).
    errors: episodes ended by an environment that raised.
    timeouts: episodes ended by an environment call past `env.timeout_s`.
  """

  state: Any
  rewards: np.ndarray
  turns: np.ndarray
  num_turns: np.ndarray
  handoffs: np.ndarray
  errors: int
  timeouts: int


def play(run, layout, sampler, params, config, examples, key, *, num_samples, greedy) -> Episodes:
  """Plays `num_samples` episodes of each example against fresh environments.

  Args:
    run, layout, sampler, params, config: the run's pieces (as `rollout.sample_groups`).
    examples: P examples.
    key: the sampling key.
    num_samples: G episodes per example.
    greedy: greedy decoding.

  Returns:
    The `Episodes`.
  """
  tok, task, env_cfg = run.tokenizer, run.task, config.env
  p, g, n = len(examples), num_samples, config.rollout.max_new_tokens
  b = p * g
  stop_eos, marker = set(tok.eos_ids), turn_end_id(tok)
  row_examples = [examples[r // g] for r in range(b)]
  ended = np.zeros(b, bool)
  failures = {ERROR: 0, TIMEOUT: 0}

  def fail(r, kind, error):
    ended[r] = True
    failures[kind] += 1
    if kind == TIMEOUT:
      what = f"took longer than config.env.timeout_s={env_cfg.timeout_s}s"
    else:
      what = f"raised {type(error).__name__}: {error}"
    logging.warning(
      "environment %r on example %r %s; the episode ends with reward 0",
      task.name,
      row_examples[r].prompt,
      what,
    )

  made = _call_all([task.make_env for _ in range(b)], env_cfg.timeout_s)
  envs = [value if kind == OK else None for kind, value in made]
  for r, (kind, value) in enumerate(made):
    if kind != OK:
      fail(r, kind, value)
  resets = _call_all(
    [(lambda e=envs[r], ex=row_examples[r]: e.reset(ex)) for r in range(b)], env_cfg.timeout_s
  )
  first_obs = [""] * p
  for r, (kind, value) in enumerate(resets):
    if ended[r]:
      continue
    if kind != OK:
      fail(r, kind, value)
    elif r % g == 0:  # the reset observation depends on the example only: the prompt's suffix
      first_obs[r // g] = str(value)
  prompted = [
    dataclasses.replace(ex, prompt=ex.prompt + obs)
    for ex, obs in zip(examples, first_obs, strict=True)
  ]
  prompt_ids, prompt_mask = rollout.encode_prompts(
    run, prompted, config.rollout.max_prompt_len, tok.pad_id
  )
  prompt_sharding = layout.rows(p)
  put = lambda x: host_data.from_rows(prompt_sharding, np.arange(p), x, p)
  prefill, decode = sampler.jitted(g, greedy)
  state = prefill(params, put(prompt_ids), put(prompt_mask), key)

  rewards = np.zeros(b, np.float32)
  turns = np.zeros((b, n), np.int32)
  num_turns = np.zeros(b, np.int32)
  handoffs = np.zeros(b, np.int32)
  start = np.zeros(b, np.int64)  # where each row's current turn starts in its buffer
  e = env_cfg.max_obs_tokens
  for turn in range(1, config.env.max_turns + 1):
    live = ~ended
    # Ended rows sample nothing more, whatever stopped them.
    state = decode(params, dataclasses.replace(state, done=state.done | jnp.asarray(ended)))
    length = host_data.to_numpy(state.length)
    tokens = host_data.to_numpy(state.tokens)
    done = host_data.to_numpy(state.done)
    texts, kinds = {}, {}
    for r in np.flatnonzero(live):
      turns[r, start[r] : length[r]] = turn
      num_turns[r] = turn
      last = int(tokens[r, length[r] - 1]) if length[r] > start[r] else None
      stopped = bool(done[r]) and last is not None
      kinds[r] = "marker" if stopped and last == marker else "eos" if stopped else "cut"
      handoffs[r] += kinds[r] == "marker"
      end = length[r] - 1 if stopped and last in (marker, *stop_eos) else length[r]
      texts[r] = tok.decode(tokens[r, start[r] : end].tolist())
    rows = sorted(texts)
    steps = _call_all(
      [(lambda e_=envs[r], t=texts[r]: e_.step(t)) for r in rows], env_cfg.timeout_s
    )
    add_ids = np.full((b, e), tok.pad_id, np.int32)
    add_mask = np.zeros((b, e), np.int32)
    for r, (kind, value) in zip(rows, steps, strict=True):
      if kind != OK:
        rewards[r] = 0.0
        fail(r, kind, value)
        continue
      try:
        obs, reward, env_done = value
        rewards[r] += float(reward)
        obs_ids = tok.encode(str(obs)) if obs else []
      except Exception as error:  # noqa: BLE001 (a malformed reply is the environment's error)
        rewards[r] = 0.0
        fail(r, ERROR, error)
        continue
      if len(obs_ids) > e:
        rewards[r] = 0.0
        fail(r, ERROR, ValueError(f"observation of {len(obs_ids)} tokens > env.max_obs_tokens"))
        continue
      over = kinds[r] != "marker" or env_done or turn == config.env.max_turns
      # An empty reply, or one that leaves no room to answer, ends the episode here.
      if over or not obs_ids or length[r] + len(obs_ids) >= n:
        ended[r] = True
        continue
      add_ids[r, : len(obs_ids)] = obs_ids
      add_mask[r, : len(obs_ids)] = 1
      turns[r, length[r] : length[r] + len(obs_ids)] = turn
    start = length + add_mask.sum(axis=1)
    if not add_mask.any():
      ended[:] = True
      break
    state = sampler.extend(params, state, jnp.asarray(add_ids), jnp.asarray(add_mask))
  return Episodes(state, rewards, turns, num_turns, handoffs, failures[ERROR], failures[TIMEOUT])


def _episode_metrics(ep: Episodes, mask: np.ndarray, g: int, max_new_tokens: int) -> dict:
  correct = (ep.rewards >= 1.0).astype(np.float32)
  sampled = mask.sum(axis=1)
  used = np.count_nonzero(ep.turns, axis=1)
  return {
    "reward/mean": float(ep.rewards.mean()),
    "reward/accuracy": float(correct.mean()),
    "reward/pass@G": float(correct.reshape(-1, g).max(axis=1).mean()),
    "response/length": float(sampled.mean()),
    "response/clipped_frac": float(np.mean(used >= max_new_tokens)),
    "env/turns": float(ep.num_turns.mean()),
    "env/tool_calls": float(ep.handoffs.mean()),
    "env/errors": float(ep.errors),
    "env/timeouts": float(ep.timeouts),
  }


def sample_groups(run, layout, sampler, params, config, source, data, key, edit) -> rollout.Rollout:
  """`rollout.sample_groups` for multi-turn episodes: P prompts from the source, G episodes each.

  `edit` must be `group_edits.keep_all()` (refill is single-turn only; `check_config`).

  Returns:
    The `rollout.Rollout`; its batch carries `turns`.
  """
  del edit  # every group is kept as played
  ro = config.rollout
  p, g = ro.prompts_per_step, ro.samples_per_prompt
  ids, source_state = source.next(data.source, p)
  ids = host_data.to_numpy(ids)
  examples = [run.task.train(int(i)) for i in ids]
  ep = play(run, layout, sampler, params, config, examples, key, num_samples=g, greedy=False)
  b = p * g
  row_sharding = layout.rows(b)
  comp = jax.tree.map(lambda x: jax.device_put(x, row_sharding), sampling.completions(ep.state))
  seqs = types.Sequences(
    tokens=jnp.concatenate([comp.prompt_tokens, comp.tokens], axis=1),
    attn_mask=jnp.concatenate([comp.prompt_mask, comp.token_mask], axis=1),
    completion_mask=comp.mask,
  )
  rewards = ep.rewards
  source_state = source.observe(source_state, ids, rewards.reshape(p, g))
  informative = np.asarray([group_edits.is_informative(r) for r in rewards.reshape(p, g)])
  mask = host_data.to_numpy(comp.mask)  # the policy's tokens
  metrics = _episode_metrics(ep, mask, g, ro.max_new_tokens)
  metrics["rollout/generation_batches"] = 1.0
  metrics["rollout/generated_tokens"] = float(mask.sum())
  metrics["rollout/informative_groups"] = float(informative.sum())
  batch = step.Batch(
    seqs=seqs,
    sampler_logprobs=comp.sampling_logprobs,
    rewards=layout.put_rows(rewards.astype(np.float32)),
    turns=layout.put_rows(ep.turns),
  )
  return rollout.Rollout(
    batch=batch,
    informative=informative,
    data=data._replace(source=jax.tree.map(layout.put_replicated, source_state)),
    metrics=metrics,
    example_ids=ids.astype(np.int64),
    correct=(rewards >= 1.0).astype(np.float32),
    trained=np.ones(p, bool),
    sampler_state=None,
  )


def transcript_tokens(tokenizer, task, example) -> tuple[list[int], list[int]]:
  """The completion tokens of an example's reference episode and their loss mask (1 on the
  policy's tokens and stop tokens, 0 on the environment's replies)."""
  marker = turn_end_id(tokenizer)
  turns = task.transcript(example)
  ids, mask = [], []
  for k, (text, obs) in enumerate(turns):
    last = k == len(turns) - 1
    if text.endswith(environments.TURN_END):
      policy = [*tokenizer.encode(text[: -len(environments.TURN_END)]), marker]
    else:
      if not last:
        raise ValueError(
          f"task {task.name!r}: reference turn {k} of {example.prompt!r} does not end with the "
          f"turn-end marker {environments.TURN_END!r}, but is not the last"
        )
      policy = [*tokenizer.encode(text), tokenizer.eos_ids[0]]
    ids += policy
    mask += [1] * len(policy)
    if not last:
      reply = tokenizer.encode(obs)
      ids += reply
      mask += [0] * len(reply)
  return ids, mask


def sft_sequences(run, layout, config, ids: np.ndarray) -> types.Sequences:
  """`rollout.sft_sequences` for multi-turn tasks: prompt, then the reference episode (policy
  turns and environment replies), the loss only on the policy's tokens."""
  tok, n = run.tokenizer, config.rollout.max_new_tokens
  examples = [run.task.train(int(i)) for i in ids]
  prompt_ids, prompt_mask = rollout.encode_prompts(
    run, examples, config.rollout.max_prompt_len, tok.pad_id
  )
  comp = np.full((len(examples), n), tok.pad_id, np.int32)
  loss = np.zeros((len(examples), n), np.int32)
  attn = np.zeros((len(examples), n), np.int32)
  for i, ex in enumerate(examples):
    row, mask = transcript_tokens(tok, run.task, ex)
    if len(row) > n:
      raise ValueError(
        f"the reference episode of {ex.prompt!r} has {len(row)} tokens, more than "
        f"config.rollout.max_new_tokens={n}"
      )
    comp[i, : len(row)], loss[i, : len(row)], attn[i, : len(row)] = row, mask, 1
  sharding = layout.rows(len(examples))
  put = lambda x: host_data.from_rows(sharding, np.arange(len(examples)), x, len(examples))
  return types.Sequences(
    tokens=put(np.concatenate([prompt_ids, comp], axis=1)),
    attn_mask=put(np.concatenate([prompt_mask, attn], axis=1)),
    completion_mask=put(loss),
  )


def evaluate(run, layout, sampler, params, config, key, examples=None) -> rollout.Evaluation:
  """`rollout.evaluate` for multi-turn tasks: greedy and `eval.samples` sampled episodes per
  held-out example, scored by their episode rewards (`evaluation.summarize`)."""
  ev = config.eval
  if examples is None:
    examples = list(run.task.heldout)[: ev.num_prompts]
  chunk, n = ev.batch_prompts, ev.samples
  tok = run.tokenizer
  parts = {True: [], False: []}
  for start in range(0, len(examples), chunk):
    part = list(examples[start : start + chunk])
    padded = part + [part[-1]] * (chunk - len(part))  # one compilation for every chunk
    for greedy, samples, k in ((True, 1, key), (False, n, jax.random.fold_in(key, start))):
      ep = play(run, layout, sampler, params, config, padded, k, num_samples=samples, greedy=greedy)
      comp = sampling.completions(ep.state)
      tokens, token_mask = host_data.to_numpy(comp.tokens), host_data.to_numpy(comp.token_mask)
      kept = len(part) * samples
      texts = rollout.decode_completions(tok, tokens[:kept], token_mask[:kept])
      lengths = host_data.to_numpy(comp.mask).sum(axis=1)[:kept]
      parts[greedy].append((texts, ep.rewards[:kept], lengths))
  join = lambda greedy, i: [x for part in parts[greedy] for x in part[i]]
  greedy_texts, greedy_rewards = join(True, 0), np.asarray(join(True, 1))
  greedy_lengths = np.asarray(join(True, 2))
  flat = join(False, 0)
  texts_pn = [flat[i * n : (i + 1) * n] for i in range(len(examples))]
  rewards_pn = np.asarray(join(False, 1)).reshape(-1, n)
  lengths_pn = np.asarray(join(False, 2)).reshape(-1, n)
  return rollout.scored_evaluation(
    examples,
    greedy_texts=greedy_texts,
    greedy_rewards=greedy_rewards,
    greedy_lengths=greedy_lengths,
    texts_pn=texts_pn,
    rewards_pn=rewards_pn,
    lengths_pn=lengths_pn,
    k=ev.pass_k,
  )
