"""RePO's rephrase injection: hard groups get verified restatements of the reference solution.

Rephrasing Policy Optimization (RePO, arXiv 2602.10819). When a group's failure rate reaches ρ,
the policy itself is prompted with the task's reference solution and asked to restate it; a
restatement that the task's own verifier accepts replaces one of the group's worst rollouts, and
the group is trained by the usual on-policy objective:

  gate(group)   = (1/G) Σ_i [row i incorrect] >= ρ       (and the group is trained)
  candidates    = k samples of π_θ(· | template(prompt, solution, answer)), verified
  replacement   : the j-th verified candidate takes the j-th worst incorrect row
                  (lowest shaped reward first, ties by row order)

What the source gives and what is grpojax's reading. Only the abstract, the arXiv HTML's opening
(Figure 1: SFT, pure RL and a "naive hybrid" contrasted with rephrasing) and a third-party
summary were readable; they state that (1) the policy is prompted to comprehend off-policy
knowledge (an expert or reference solution) and rephrase it into a trajectory of its own style,
(2) a group-reward gate decides when low-reward rollouts are replaced by rephrased ones, and (3)
training stays on-policy. Not stated, so chosen here and exposed in `config.rollout.rephrase`:
the gate (`failure_rate` ρ: the share of incorrect rows, default 1.0 = every rollout failed, the
hard samples the paper targets), how many rows are replaced (`num_replaced`, default 1, each by
its own sampled restatement), the rephrase prompt (`template`, a `str.format` pattern over
`{prompt}`, `{solution}` and `{answer}`), and that a restatement is injected only when the task's
verifier accepts it and only in place of an incorrect row.

Whose log-probs. The injected row is trained as a completion of the ORIGINAL prompt (its prompt
tokens are the group's; only the completion changes). Its behaviour log-probs (the batch's
`sampler_logprobs`, read by mismatch corrections and the mismatch metrics) are recomputed by the
sampler's copy of the policy on (original prompt, restatement) at the rollout temperature, the
abstract's "its own log-probs": the row then looks on-policy, as RePO intends, and no importance
weight π(y | x) / π(y | x, hint) is applied. (With top-k / top-p / min-p truncation the
recomputed value is the untruncated one at that temperature.) The trainer's old log-probs are
its own forward on the same rows, as for every row.

Restatements are sampled for every group of the batch, gated or not, so the extra generation has
one shape ([P·k] rows) and compiles once; only gated groups use them. Host-side Python, like the
other group edits: it runs between the rollout and the update.
"""

import dataclasses
import string
from typing import Any

import jax
import numpy as np

from grpojax import sampling, types
from grpojax.parallel import host_data
from grpojax.rl import evaluation, group_edits, rollout
from grpojax.tasks import shaping

TEMPLATE_FIELDS = ("prompt", "solution", "answer")


def check_template(template: str) -> None:
  """Raises ValueError unless `template` is a `str.format` pattern over `TEMPLATE_FIELDS` only."""
  try:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
  except ValueError as error:
    raise ValueError(f"not a str.format pattern: {error}") from None
  unknown = sorted(names - set(TEMPLATE_FIELDS))
  if unknown:
    allowed = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    raise ValueError(f"unknown fields {unknown}; a template may use {allowed}")


def rephrase_prompt(template: str, example) -> str:
  """The rephrase prompt of `example`: its prompt, reference solution and answer in `template`."""
  return template.format(prompt=example.prompt, solution=example.solution, answer=example.answer)


def gated_groups(correct_pg: np.ndarray, trained_p: np.ndarray, *, failure_rate: float):
  """[P] True where a trained group's share of incorrect rows is at least `failure_rate`."""
  failed = 1.0 - np.asarray(correct_pg, np.float64).mean(axis=1)
  return np.asarray(trained_p, bool) & (failed >= failure_rate - 1e-9)


def replacement_plan(
  rewards_pg: np.ndarray, correct_pg: np.ndarray, gated_p: np.ndarray, verified_pk: np.ndarray
) -> np.ndarray:
  """Which candidate replaces which row.

  In each gated group the incorrect rows are ranked worst first (lowest reward, ties by row
  order); the j-th verified candidate of the group (in candidate order) replaces the j-th of
  them. A group runs out when either list does.

  Args:
    rewards_pg: [P, G] shaped rewards of the rollouts.
    correct_pg: [P, G] 1 where a rollout is correct.
    gated_p: [P] groups whose rows may be replaced.
    verified_pk: [P, K] True where candidate j of group p passed the verifier.

  Returns:
    [P, G] int: for each row, the flat candidate index p·K + j replacing it, or -1.
  """
  p, g = rewards_pg.shape
  k = verified_pk.shape[1]
  plan = np.full((p, g), -1, np.int64)
  for i in np.flatnonzero(gated_p):
    worst = [r for r in np.argsort(rewards_pg[i], kind="stable") if not correct_pg[i, r]]
    good = [i * k + j for j in range(k) if verified_pk[i, j]]
    for row, cand in zip(worst, good, strict=False):
      plan[i, row] = cand
  return plan


def _restate(
  run, layout, sampler, params, config, examples, key
) -> tuple[Any, np.ndarray, np.ndarray]:
  """k restatements per example: (global `Completions` [P·k], their shaped rewards [P·k] and
  correctness [P·k] under the original examples, on every process)."""
  rp, tok = config.rollout.rephrase, run.tokenizer
  num_prompts, k = len(examples), rp.num_replaced
  prompt_sharding = layout.rows(num_prompts)
  prompt_rows = host_data.owned_rows(prompt_sharding, num_prompts)
  ids = []
  for i in prompt_rows:
    ex = examples[int(i)]
    ids.append(run.encode_prompt(dataclasses.replace(ex, prompt=rephrase_prompt(rp.template, ex))))
    if len(ids[-1]) > rp.max_prompt_len:
      raise ValueError(
        f"the rephrase prompt of {ex.prompt[:60]!r} has {len(ids[-1])} tokens, more than "
        f"config.rollout.rephrase.max_prompt_len={rp.max_prompt_len}"
      )
  prompt_ids, prompt_mask = sampling.pad_prompts(ids, pad_id=tok.pad_id, bucket=rp.max_prompt_len)
  put = lambda x: host_data.from_rows(prompt_sharding, prompt_rows, x, num_prompts)
  comp = sampler.sample(params, put(prompt_ids), put(prompt_mask), key, num_samples=k)
  b = num_prompts * k
  row_sharding = layout.rows(b)
  comp = jax.tree.map(lambda x: jax.device_put(x, row_sharding), comp)
  rows = host_data.owned_rows(row_sharding, b)
  texts = rollout.decode_completions(
    tok, host_data.local_rows(comp.tokens, rows), host_data.local_rows(comp.mask, rows)
  )
  originals = [examples[int(r) // k] for r in rows]
  reward_fn = run.task.reward_fn
  local_rewards = np.asarray([reward_fn(t, ex) for t, ex in zip(texts, originals, strict=True)])
  local_correct = evaluation.correctness(texts, originals, reward_fn)
  gather = lambda v: host_data.to_numpy(host_data.from_rows(row_sharding, rows, v, b))
  rewards = gather(local_rewards.astype(np.float32))
  overlong = config.reward.overlong
  if overlong.enabled:
    lengths = host_data.to_numpy(comp.mask).sum(axis=1)
    penalty = shaping.overlong_penalty(
      lengths, max_length=overlong.max_len, cache_length=overlong.cache
    )
    rewards = rewards + overlong.penalty_factor * np.asarray(penalty, np.float32)
  return comp, rewards, gather(local_correct.astype(np.float32))


def inject(run, layout, sampler, params, config, ro: rollout.Rollout, key) -> rollout.Rollout:
  """RePO's edit of a finished rollout (see the module docstring).

  Args:
    run: the run's static pieces (`setup.Run`).
    layout: the run's `Layout`.
    sampler: the run's `rollout.Sampler` (sampling and scoring).
    params: the sampler's copy of the policy (the one the rollout was sampled from).
    config: the run config (`config.rollout.rephrase`).
    ro: the rollout, with `example_ids`, `correct` and `trained`.
    key: the restatements' sampling key.

  Returns:
    The rollout with verified restatements in place of the worst rows of gated groups, their
    rewards, recomputed behaviour log-probs and updated `correct` / `informative`, and metrics
    `rephrase/gated_groups`, `rephrase/candidate_accuracy` (verified share of the gated groups'
    restatements), `rephrase/injected_rows` and `rephrase/injected_correct` (share of injected
    rows the verifier accepts: 1 by construction, logged as a check).
  """
  rp, ro_cfg = config.rollout.rephrase, config.rollout
  p, g, k = ro_cfg.prompts_per_step, ro_cfg.samples_per_prompt, rp.num_replaced
  rewards = host_data.to_numpy(ro.batch.rewards).astype(np.float32)
  correct = np.array(ro.correct, np.float32)
  gated = gated_groups(correct.reshape(p, g), ro.trained, failure_rate=rp.failure_rate)
  metrics = dict(ro.metrics)
  metrics["rephrase/gated_groups"] = float(gated.sum())
  if not gated.any():
    none = {"candidate_accuracy": 0.0, "injected_rows": 0.0, "injected_correct": 0.0}
    metrics.update({f"rephrase/{name}": value for name, value in none.items()})
    metrics["rephrase/informative_groups"] = float(np.sum(ro.informative))
    return ro._replace(metrics=metrics)

  examples = [run.task.train(int(i)) for i in ro.example_ids]
  comp, cand_rewards, cand_correct = _restate(run, layout, sampler, params, config, examples, key)
  verified_pk = cand_correct.reshape(p, k) > 0
  plan = replacement_plan(rewards.reshape(p, g), correct.reshape(p, g), gated, verified_pk)
  flat = plan.reshape(-1)
  rows = np.flatnonzero(flat >= 0)
  cands = flat[rows]

  seqs = jax.tree.map(host_data.to_numpy, ro.batch.seqs)
  n = seqs.completion_mask.shape[1]
  tp = seqs.tokens.shape[1] - n
  c_tokens, c_mask, c_token_mask = (
    host_data.to_numpy(x) for x in (comp.tokens, comp.mask, comp.token_mask)
  )
  # The candidates as completions of their group's ORIGINAL prompt (row p·G holds it), scored
  # by the sampler's policy: the behaviour log-probs of the injected rows.
  group_rows = np.repeat(np.arange(p) * g, k)
  cand_seqs = types.Sequences(
    tokens=np.concatenate([seqs.tokens[group_rows, :tp], c_tokens], axis=1),
    attn_mask=np.concatenate([seqs.attn_mask[group_rows, :tp], c_token_mask], axis=1),
    completion_mask=c_mask,
  )
  scored = host_data.to_numpy(sampler.score(params, jax.tree.map(layout.put_rows, cand_seqs)))
  tokens, attn_mask = seqs.tokens.copy(), seqs.attn_mask.copy()
  completion_mask = seqs.completion_mask.copy()
  sampler_lp = host_data.to_numpy(ro.batch.sampler_logprobs).copy()
  tokens[rows, tp:] = c_tokens[cands]
  attn_mask[rows, tp:] = c_token_mask[cands]
  completion_mask[rows] = c_mask[cands]
  sampler_lp[rows] = np.where(c_mask[cands] > 0, scored[cands], 0.0)
  rewards[rows] = cand_rewards[cands]
  correct[rows] = cand_correct[cands]

  new_seqs = seqs._replace(tokens=tokens, attn_mask=attn_mask, completion_mask=completion_mask)
  batch = ro.batch._replace(
    seqs=jax.tree.map(layout.put_rows, new_seqs),
    sampler_logprobs=layout.put_rows(sampler_lp.astype(np.float32)),
    rewards=layout.put_rows(rewards),
  )
  informative = np.asarray([group_edits.is_informative(r) for r in rewards.reshape(p, g)])
  metrics.update(
    {
      "rephrase/informative_groups": float(informative.sum()),
      "rephrase/candidate_accuracy": float(verified_pk[gated].mean()),
      "rephrase/injected_rows": float(len(rows)),
      "rephrase/injected_correct": float(cand_correct[cands].mean()) if len(rows) else 0.0,
    }
  )
  return ro._replace(batch=batch, informative=informative, correct=correct, metrics=metrics)
