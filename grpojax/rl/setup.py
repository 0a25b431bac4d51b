"""What a run is made of, built once from its config: tokenizer, task, objective, policy.

`validate_config` runs before any work and names the offending field (every check is a
`_require(condition, field, message)`); `build_run` turns a validated config into the static
pieces the trainer closes over. The policy's heads are not configured: they follow from what the
objective reads (a value head for `values`, a log-Z head for `log_z`, a temperature head for
`temperature`).
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from grpojax import metrics, models, objectives, precision, tasks
from grpojax.models import char_tokenizer, tokenizers
from grpojax.objectives import seeupo
from grpojax.parallel import layout as layout_lib
from grpojax.parallel import rules
from grpojax.rl import group_edits, model_rewards, multiturn, pipeline, rephrase
from grpojax.tasks import gsm8k, plugins, scratchpad

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
  """A bad run config; the message starts with `config.<field>`."""


def _require(condition: bool, field: str, message: str) -> None:
  if not condition:
    raise ConfigError(f"config.{field}: {message}")


@dataclasses.dataclass(frozen=True)
class Run:
  """The static pieces of a run.

  Attributes:
    tokenizer: text <-> ids.
    task: the training stream, held-out set and reward function.
    objective: the composed RL objective.
    model: the initial policy (random or loaded; abstract for a compile-only run).
    encode_prompt: example -> prompt token ids (chat template applied when configured).
    reward_models: the reward model and LLM judge added to the task's reward
      (`model_rewards.ModelRewards`), or None when neither is configured.
  """

  tokenizer: Any
  task: Any
  objective: objectives.Objective
  model: models.Decoder
  encode_prompt: Callable[[Any], list[int]]
  reward_models: model_rewards.ModelRewards | None = None


def precision_policy(config: ml_collections.ConfigDict) -> precision.PrecisionPolicy:
  """The run's `PrecisionPolicy` from `config.precision` (errors name the field)."""
  pr = config.precision
  fields = {
    "matmul": ("matmul", pr.matmul),
    "lm_head_f32": ("lm_head_f32", pr.lm_head_f32),
    "base_format": ("base_format", pr.base_format),
    "lora_rank": ("lora.rank", pr.lora.rank),
    "lora_alpha": ("lora.alpha", pr.lora.alpha),
    "lora_targets": ("lora.targets", pr.lora.targets),
  }
  try:
    return precision.PrecisionPolicy(**{name: value for name, (_, value) in fields.items()})
  except ValueError as error:
    message = str(error)
    named = [where for name, (where, _) in fields.items() if name in message]
    raise ConfigError(f"config.precision.{named[0] if named else ''}: {message}") from None


def heads_for(objective: objectives.Objective) -> models.HeadsConfig:
  """The heads the objective reads."""
  need = objective.requires
  return models.HeadsConfig(
    value="values" in need, log_z="log_z" in need, temperature="temperature" in need
  )


def validate_config(config: ml_collections.ConfigDict) -> objectives.Objective:
  """Checks a run config before any work; errors name the field.

  Returns:
    The objective (its construction is part of the check).
  """
  _require(config.warm_start.steps >= 0, "warm_start.steps", "must be >= 0")
  _require(config.train.steps >= 0, "train.steps", "must be >= 0")
  _require(
    config.warm_start.steps + config.train.steps >= 1,
    "train.steps",
    "the run has no steps (warm_start.steps + train.steps == 0)",
  )
  ro = config.rollout
  _require(ro.prompts_per_step >= 1, "rollout.prompts_per_step", "must be >= 1")
  _require(ro.samples_per_prompt >= 1, "rollout.samples_per_prompt", "must be >= 1")
  _require(ro.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
  _require(ro.temperature > 0, "rollout.temperature", "must be > 0 for RL sampling")
  _require(0 < ro.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
  _require(
    ro.refill.max_generation_batches >= 1, "rollout.refill.max_generation_batches", "must be >= 1"
  )
  _require(
    ro.refill.metric in group_edits.REFILL_METRICS,
    "rollout.refill.metric",
    f"must be one of {group_edits.REFILL_METRICS}",
  )
  rp = ro.rephrase
  _require(0 < rp.failure_rate <= 1, "rollout.rephrase.failure_rate", "must be in (0, 1]")
  _require(
    1 <= rp.num_replaced <= ro.samples_per_prompt,
    "rollout.rephrase.num_replaced",
    f"must be in [1, rollout.samples_per_prompt={ro.samples_per_prompt}]",
  )
  _require(rp.max_prompt_len >= 1, "rollout.rephrase.max_prompt_len", "must be >= 1")
  _require(
    not (rp.enabled and ro.temperature_policy.enabled),
    "rollout.rephrase.enabled",
    "injected rows have no per-token temperatures (rollout.temperature_policy)",
  )
  try:
    rephrase.check_template(rp.template)
  except ValueError as error:
    raise ConfigError(f"config.rollout.rephrase.template: {error}") from None
  overlong = config.reward.overlong
  _require(overlong.max_len > 0, "reward.overlong.max_len", "must be > 0")
  _require(
    0 < overlong.cache <= overlong.max_len,
    "reward.overlong.cache",
    f"must lie in (0, max_len={overlong.max_len}]",
  )
  _require(overlong.penalty_factor >= 0, "reward.overlong.penalty_factor", "must be >= 0")
  try:
    model_rewards.check_config(config.reward)
  except ValueError as error:  # its messages start with the field
    raise ConfigError(str(error)) from None
  br = ro.branch
  _require(br.max_pivots >= 1, "rollout.branch.max_pivots", "must be >= 1")
  _require(br.tokens_per_node >= 1, "rollout.branch.tokens_per_node", "must be >= 1")
  _require(br.position_bias >= 0, "rollout.branch.position_bias", "must be >= 0")
  _require(br.window >= 1, "rollout.branch.window", "must be >= 1")
  _require(
    not (br.enabled and (ro.refill.enabled or ro.rephrase.enabled)),
    "rollout.branch.enabled",
    "branching forks the root rollout as sampled: it cannot follow rollout.refill or "
    "rollout.rephrase",
  )
  # The batch: P root groups, then (when branching) K branch groups of G rows.
  groups = ro.prompts_per_step + (br.max_pivots if br.enabled else 0)
  rows = groups * ro.samples_per_prompt
  tr = config.train
  _require(tr.epochs >= 1, "train.epochs", "must be >= 1")
  _require(
    tr.minibatches >= 1 and groups % tr.minibatches == 0,
    "train.minibatches",
    f"must divide the batch's {groups} groups (rollout.prompts_per_step"
    + (" + rollout.branch.max_pivots)" if br.enabled else ")"),
  )
  mb_rows = rows // tr.minibatches
  _require(
    tr.microbatch_rows >= 1 and mb_rows % tr.microbatch_rows == 0,
    "train.microbatch_rows",
    f"must divide the minibatch's {mb_rows} rows",
  )
  _require(tr.max_bad_steps >= 1, "train.max_bad_steps", "must be >= 1")
  _require(
    isinstance(tr.length_buckets, int)
    and not isinstance(tr.length_buckets, bool)
    and 0 <= tr.length_buckets <= ro.max_new_tokens,
    "train.length_buckets",
    f"must be an int in [0, rollout.max_new_tokens = {ro.max_new_tokens}] (0: off), got "
    f"{tr.length_buckets!r}",
  )
  _require(
    tr.spike_guard == 0 or tr.spike_guard > 1,
    "train.spike_guard",
    f"must be 0 (off) or a factor > 1, got {tr.spike_guard}",
  )
  for name in ("optim", "warm_start"):
    opt = config[name]
    _require(opt.learning_rate > 0, f"{name}.learning_rate", "must be > 0")
    _require(opt.grad_clip > 0, f"{name}.grad_clip", "must be > 0")
    _require(
      opt.schedule in ("constant", "cosine"),
      f"{name}.schedule",
      f"must be 'constant' or 'cosine', got {opt.schedule!r}",
    )
  _require(config.optim.head_learning_rate >= 0, "optim.head_learning_rate", "must be >= 0")
  _require(
    config.warm_start.steps == 0 or config.warm_start.batch_size >= 1,
    "warm_start.batch_size",
    "must be >= 1",
  )
  ev = config.eval
  _require(ev.every >= 1, "eval.every", "must be >= 1")
  _require(
    1 <= ev.pass_k <= ev.samples, "eval.pass_k", f"must be in [1, eval.samples={ev.samples}]"
  )
  _require(config.checkpoint.every >= 1, "checkpoint.every", "must be >= 1")
  _require(config.checkpoint.min_free_gb >= 0, "checkpoint.min_free_gb", "must be >= 0")
  writers_error = metrics.writers_error(config.metrics.writers)
  _require(writers_error is None, "metrics.writers", str(writers_error))
  _require(
    config.task.name not in ("gsm8k", DATA_TASK) or config.task.data_path,
    "task.data_path",
    f"the {config.task.name} task reads a local data file: set task.data_path",
  )
  _validate_plugins(config)
  try:
    multiturn.check_config(config)
  except ValueError as error:  # its messages start with the field
    raise ConfigError(str(error)) from None
  _require(
    not config.task.data_path or config.model.checkpoint or config.tokenizer.path,
    "tokenizer.path",
    "a data file needs a real tokenizer: set model.checkpoint or tokenizer.path (the character "
    "tokenizer only covers the built-in tasks)",
  )
  _require(config.model.dtype in _DTYPES, "model.dtype", f"must be one of {sorted(_DTYPES)}")
  _require(
    config.model.remat in models.REMAT_POLICIES,
    "model.remat",
    f"must be one of {sorted(models.REMAT_POLICIES)}, got {config.model.remat!r}",
  )
  policy = precision_policy(config)
  pr = config.precision
  _require(
    pr.rollout_matmul == "same" or pr.rollout_matmul in precision.MATMULS,
    "precision.rollout_matmul",
    f"must be 'same' or one of {precision.MATMULS}",
  )
  _require(
    policy.base_format == "none" or policy.lora_rank > 0,
    "precision.lora.rank",
    "a quantised base is frozen: set precision.lora.rank > 0 to train adapters",
  )
  _require(not pr.aqn.enabled or pr.aqn.num_stages >= 1, "precision.aqn.num_stages", "must be >= 1")
  _require(
    not pr.aqn.enabled or 0 < pr.aqn.sigma_end <= pr.aqn.sigma_start,
    "precision.aqn.sigma_end",
    "must be in (0, precision.aqn.sigma_start]",
  )
  try:
    pipeline.validate(config)
  except ValueError as error:  # its messages start with the field
    raise ConfigError(str(error)) from None
  objective = objectives.make(config.objective, group_size=ro.samples_per_prompt)
  try:  # a turn-by-turn objective (SeeUPO) needs multi-turn rollouts
    seeupo.check_multi_turn(objective, config.env.name)
  except ValueError as error:
    raise ConfigError(f"config.{error}") from None
  if pipeline.can_be_stale(config):  # stale rollouts get a correction unless turned off
    reads_sampler = "sampler_logprobs" in objective.requires
    objective = objectives.make(
      pipeline.objective_config(config, reads_sampler), group_size=ro.samples_per_prompt
    )
  warmup = tr.critic_warmup_steps
  _require(
    0 <= warmup < max(tr.steps, 1),
    "train.critic_warmup_steps",
    f"must be >= 0 and below train.steps ({tr.steps}), got {warmup}",
  )
  _require(
    warmup == 0 or "values" in objective.requires,
    "train.critic_warmup_steps",
    f"a critic warm-up trains the value head, but objective {config.objective.recipe!r} has none",
  )
  _validate_temperature_policy(config, objective)
  return objective


# `task.name` of a task read from any JSON-lines or Parquet file through `task.fields`.
DATA_TASK = "data"


def _validate_plugins(config) -> None:
  """The task's and the rewards' import paths resolve and the data task's settings are known
  (what the task factory returns, and what the rewards return, is checked in `build_run`)."""
  t = config.task
  try:
    if plugins.is_import_path(t.name):
      plugins.resolve(t.name, "task.name")
    plugins.resolve_rewards(config.reward.fns, config.reward.weights)
  except plugins.PluginError as error:
    raise ConfigError(str(error)) from None
  _require(
    plugins.is_import_path(t.name)
    or t.name in (*tasks.BUILTIN_TASKS, "gsm8k", DATA_TASK)
    or bool(t.data_path),
    "task.name",
    f"unknown task {t.name!r}; built-in tasks are {(*tasks.BUILTIN_TASKS, 'gsm8k', DATA_TASK)}, "
    "or a factory by import path 'module.path:function'",
  )
  _require(
    not t.kwargs or plugins.is_import_path(t.name),
    "task.kwargs",
    "keyword arguments go to a task factory named by import path in task.name",
  )
  if t.name == "scratchpad":
    _validate_scratchpad(t)
  _require(t.verifier in plugins.VERIFIERS, "task.verifier", f"must be one of {plugins.VERIFIERS}")
  for key in ("prompt", "answer"):
    _require(bool(t.fields[key]), f"task.fields.{key}", "must name a key of the data rows")
  _require(
    config.reward.on_error in plugins.ON_ERROR,
    "reward.on_error",
    f"must be one of {plugins.ON_ERROR}, got {config.reward.on_error!r}",
  )


def _validate_scratchpad(t: ml_collections.ConfigDict) -> None:
  """The scratchpad task's knobs, each error naming its `task` field."""
  fields = {"operations": "difficulty", "digits": "digits", "operators": "operators"}
  try:
    scratchpad.check_knobs(operations=t.difficulty, digits=t.digits, operators=t.operators)
  except ValueError as error:
    knob = str(error).split(" ", 1)[0]
    raise ConfigError(f"config.task.{fields[knob]}: {error}") from None


def _validate_temperature_policy(config, objective) -> None:
  """`rollout.temperature_policy` (IntroLLM's head-driven temperature) and the objective agree:
  the sampler records the densities exactly when the objective trains on them."""
  tp = config.rollout.temperature_policy
  trains_head = "sampler_temperature_logprobs" in objective.requires
  _require(
    tp.enabled == trains_head,
    "rollout.temperature_policy.enabled",
    f"must be {trains_head} for objective {config.objective.recipe!r} (a head-driven temperature "
    "needs an objective that trains the temperature head, such as 'introllm', and vice versa)",
  )
  if tp.enabled:
    _require(tp.tau_min > 0, "rollout.temperature_policy.tau_min", "must be > 0")
    _require(
      tp.tau_max > tp.tau_min,
      "rollout.temperature_policy.tau_max",
      f"must be > rollout.temperature_policy.tau_min ({tp.tau_min})",
    )
    _require(tp.concentration > 0, "rollout.temperature_policy.concentration", "must be > 0")


def check_mesh_divides(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """The batches a run splits over the batch axes (P·G rollout rows, micro-batches of M rows)
  must divide evenly; the error names the fields and the mesh. (Prompt batches that do not
  divide are replicated instead, as any row count that does not divide.)"""
  shards = rules.leading_shards(rules.batch_sharding(mesh))
  ro, tr = config.rollout, config.train
  sizes = {
    "rollout.prompts_per_step * rollout.samples_per_prompt": ro.prompts_per_step
    * ro.samples_per_prompt,
    "rollout.branch.max_pivots * rollout.samples_per_prompt": (
      ro.branch.max_pivots * ro.samples_per_prompt if ro.branch.enabled else 0
    ),
    "train.microbatch_rows": tr.microbatch_rows,
  }
  bad = {name: n for name, n in sizes.items() if n % shards}
  if bad:
    listed = ", ".join(f"config.{name} = {n}" for name, n in bad.items())
    raise ConfigError(
      f"{listed}: the mesh {dict(mesh.shape)} splits batches {shards} ways (data x fsdp), which "
      f"does not divide them; make them multiples of {shards} or move devices to the tensor axis"
    )


def build_tokenizer(config: ml_collections.ConfigDict):
  """`tokenizer.path`, else the checkpoint's own tokenizer, else the built-in character one."""
  ckpt = config.model.checkpoint
  path = config.tokenizer.path or (
    ckpt if ckpt and os.path.exists(os.path.join(ckpt, tokenizers.TOKENIZER_FILE)) else ""
  )
  if path:
    return tokenizers.load_tokenizer(path)
  return char_tokenizer.CharTokenizer(char_tokenizer.ARITHMETIC_ALPHABET)


def export_files(config: ml_collections.ConfigDict, tokenizer) -> dict[str, str | bytes]:
  """The tokenizer and generation files an exported policy carries, so it serves as is.

  The built-in character tokenizer gets equivalent Hugging Face files
  (`char_tokenizer.hf_files`); a real tokenizer's files (`tokenizer.json`,
  `tokenizer_config.json` with its chat template, the special tokens map, `chat_template.jinja`)
  are copied from where it was read, `generation_config.json` from the model checkpoint first.

  Returns:
    File name -> source path or contents, for `models.save_pretrained(extra_files=...)`.
  """
  if isinstance(tokenizer, char_tokenizer.CharTokenizer):
    return char_tokenizer.hf_files(tokenizer)
  ckpt, tok_dir = config.model.checkpoint, config.tokenizer.path or config.model.checkpoint
  wanted = {
    tokenizers.TOKENIZER_FILE: (tok_dir,),
    tokenizers.TOKENIZER_CONFIG_FILE: (tok_dir,),
    tokenizers.SPECIAL_TOKENS_MAP_FILE: (tok_dir,),
    tokenizers.CHAT_TEMPLATE_FILE: (tok_dir,),
    tokenizers.GENERATION_CONFIG_FILE: (ckpt, tok_dir),
  }
  files = {}
  for name, dirs in wanted.items():
    found = [os.path.join(d, name) for d in dirs if d and os.path.isfile(os.path.join(d, name))]
    if found:
      files[name] = found[0]
  return files


def build_model(
  config: ml_collections.ConfigDict,
  tokenizer,
  heads: models.HeadsConfig,
  *,
  activation_sharding=None,
  abstract: bool = False,
) -> models.Decoder:
  """Loads `model.checkpoint`, or makes a random policy from the config's shape fields.

  Args:
    config: the run config.
    tokenizer: gives the vocabulary size and special ids of a random policy.
    heads: the heads to build.
    activation_sharding: rows of each layer's output pinned to this sharding (or None).
    abstract: shapes only (nothing allocated, no weights read): for compile-only runs.
  """
  m = config.model
  kw = dict(
    dtype=_DTYPES[m.dtype],
    precision=precision_policy(config),
    remat=m.remat,
    activation_sharding=activation_sharding,
    heads=heads,
  )
  if m.checkpoint:
    if abstract:
      return models.abstract_pretrained(m.checkpoint, **kw)
    return models.from_pretrained(m.checkpoint, seed=m.init_seed, **kw)
  cfg = models.ModelConfig(
    model_type=m.model_type,
    vocab_size=tokenizer.vocab_size,
    hidden_size=m.hidden_size,
    intermediate_size=m.intermediate_size,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    num_kv_heads=m.num_kv_heads,
    head_dim=m.head_dim,
    attention_bias=m.model_type == "qwen2",
    qk_norm=m.model_type == "qwen3",
    tie_word_embeddings=True,
    bos_token_id=tokenizer.bos_id,
    eos_token_id=tokenizer.eos_ids[0],
  )
  if abstract:
    return models.abstract_policy(cfg, **kw)
  return models.init_policy(cfg, seed=m.init_seed, **kw)


def build_task(
  t: ml_collections.ConfigDict,
  data_dir: str | None = None,
  *,
  prompt_len: Callable[[str], int] | None = None,
  max_prompt_len: int | None = None,
):
  """A task factory by import path (`task.name="module:function"`, called with `task.kwargs`),
  a `data` file read through `task.fields` and scored by `task.verifier`, a GSM8K-format file
  (any other name with `task.data_path` set), or a built-in generated task.

  A data file is prepared once into tfds array_record files under `data_dir`; given
  `prompt_len` (question -> prompt tokens) and `max_prompt_len`, every row's prompt is checked
  first (`task.skip_long` drops overlong rows instead of failing at the first, by file:line).
  """
  if plugins.is_import_path(t.name):
    try:
      return plugins.make_task(t.name, t.kwargs.to_dict())
    except plugins.PluginError as error:
      raise ConfigError(str(error)) from None
  if t.data_path:
    data = {}
    if t.name == DATA_TASK:
      f = t.fields
      data = dict(
        name=DATA_TASK,
        fields=gsm8k.Fields(
          prompt=f.prompt,
          answer=f.answer,
          solution=f.solution,
          marker=f.marker,
          numeric=t.verifier == "numeric",
        ),
        reward_fn=plugins.make_verifier(t.verifier),
      )
    return gsm8k.make_task(
      t.data_path,
      seed=t.seed,
      heldout_files=t.heldout_path or None,
      heldout_size=t.heldout_size,
      data_dir=data_dir,
      prompt_len=prompt_len,
      max_prompt_len=max_prompt_len,
      skip_long=t.skip_long,
      **data,
    )
  return tasks.make_task(
    t.name,
    difficulty=t.difficulty,
    seed=t.seed,
    heldout_size=t.heldout_size,
    operators=t.operators,
    digits=t.digits,
  )


def with_rewards(task, reward: ml_collections.ConfigDict):
  """The task with its reward replaced by `reward.fns` (a `plugins.RewardSum`), each function
  tried once on the first held-out example to check what it returns; unchanged when empty."""
  if not reward.fns:
    return task
  try:
    named = plugins.resolve_rewards(reward.fns, reward.weights, task.reward_fn)
    combined = plugins.RewardSum(named, on_error=reward.on_error)
    if len(task.heldout):
      plugins.check_rewards(combined, task.heldout[0])
  except plugins.PluginError as error:
    raise ConfigError(str(error)) from None
  return dataclasses.replace(task, reward_fn=combined)


def _build_task_or_env(config, data_dir, **prompt_checks):
  """The multi-turn task of `config.env` when one is named, else `config.task` with
  `config.reward`'s functions."""
  if config.env.name:
    try:
      return multiturn.make_task(config)
    except ValueError as error:  # its messages start with the field
      raise ConfigError(str(error)) from None
  return with_rewards(build_task(config.task, data_dir, **prompt_checks), config.reward)


def build_run(
  config: ml_collections.ConfigDict,
  workdir: str | None = None,
  *,
  activation_sharding=None,
  abstract: bool = False,
  layout: layout_lib.Layout | None = None,
) -> Run:
  """Builds the tokenizer, task, objective and policy of a config (validated here first).

  The reward model and judge, when configured, are laid out on `layout` (None: this process's
  first device).
  """
  objective = validate_config(config)
  tok = build_tokenizer(config)
  use_template = bool(config.tokenizer.chat_template)

  def encode_text(prompt: str) -> list[int]:
    if use_template:
      text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
      )
      return tok.encode(text)
    ids = tok.encode(prompt)
    return ids if tok.bos_id is None else [tok.bos_id, *ids]

  task = _build_task_or_env(
    config,
    None if workdir is None else os.path.join(workdir, "data"),
    # Prompts are checked as the run encodes them, before any training state is written.
    prompt_len=lambda prompt: len(encode_text(prompt)),
    max_prompt_len=config.rollout.max_prompt_len,
  )
  model = build_model(
    config, tok, heads_for(objective), activation_sharding=activation_sharding, abstract=abstract
  )
  if model.config.vocab_size < tok.vocab_size:
    raise ConfigError(
      f"config.model: the policy's vocabulary ({model.config.vocab_size}) is "
      f"smaller than the tokenizer's ({tok.vocab_size})"
    )
  try:  # a compile-only run loads no reward checkpoints
    reward_models = (
      None
      if abstract
      else model_rewards.from_config(config.reward, layout=layout, policy_dtype=config.model.dtype)
    )
  except ValueError as error:
    raise ConfigError(str(error)) from None
  return Run(
    tokenizer=tok,
    task=task,
    objective=objective,
    model=model,
    encode_prompt=lambda example: encode_text(example.prompt),
    reward_models=reward_models,
  )
