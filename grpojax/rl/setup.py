"""What a run is made of, built once from its config: tokenizer, task, policy, objective.

`validate_config` runs before any work and names the offending field; `build_run` turns a
validated config into the static pieces the trainer closes over.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from grpojax import models, objectives, tasks
from grpojax.models import tokenizers
from grpojax.tasks import gsm8k

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Run:
  """The static pieces of a run.

  Attributes:
    tokenizer: text <-> ids.
    task: the training stream, held-out set and reward function.
    model: the initial policy (random or loaded).
    objective: the composed RL objective.
    encode_prompt: example -> prompt token ids (chat template applied when configured).
  """

  tokenizer: Any
  task: Any
  model: models.Decoder
  objective: Any
  encode_prompt: Callable[[Any], list[int]]


def _check(cond: bool, field: str, message: str) -> None:
  if not cond:
    raise ValueError(f"config.{field}: {message}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a run config before any work; errors name the field."""
  _check(config.warm_start.steps >= 0, "warm_start.steps", "must be >= 0")
  _check(config.train.steps >= 0, "train.steps", "must be >= 0")
  _check(
    config.warm_start.steps + config.train.steps >= 1,
    "train.steps",
    "the run has no steps (warm_start.steps + train.steps == 0)",
  )
  ro = config.rollout
  _check(ro.prompts_per_step >= 1, "rollout.prompts_per_step", "must be >= 1")
  _check(ro.samples_per_prompt >= 1, "rollout.samples_per_prompt", "must be >= 1")
  _check(ro.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
  _check(ro.temperature > 0, "rollout.temperature", "must be > 0 for RL sampling")
  _check(0 < ro.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
  rows = ro.prompts_per_step * ro.samples_per_prompt
  tr = config.train
  _check(tr.epochs >= 1, "train.epochs", "must be >= 1")
  _check(
    tr.minibatches >= 1 and ro.prompts_per_step % tr.minibatches == 0,
    "train.minibatches",
    f"must divide rollout.prompts_per_step ({ro.prompts_per_step})",
  )
  mb_rows = rows // tr.minibatches
  _check(
    tr.microbatch_rows >= 1 and mb_rows % tr.microbatch_rows == 0,
    "train.microbatch_rows",
    f"must divide the minibatch's {mb_rows} rows",
  )
  _check(tr.max_bad_steps >= 1, "train.max_bad_steps", "must be >= 1")
  for name in ("optim", "warm_start"):
    opt = config[name]
    _check(opt.learning_rate > 0, f"{name}.learning_rate", "must be > 0")
    _check(opt.grad_clip > 0, f"{name}.grad_clip", "must be > 0")
    _check(
      opt.schedule in ("constant", "cosine"),
      f"{name}.schedule",
      f"must be 'constant' or 'cosine', got {opt.schedule!r}",
    )
  _check(
    config.warm_start.steps == 0 or config.warm_start.batch_size >= 1,
    "warm_start.batch_size",
    "must be >= 1",
  )
  ev = config.eval
  _check(ev.every >= 1, "eval.every", "must be >= 1")
  _check(1 <= ev.pass_k <= ev.samples, "eval.pass_k", f"must be in [1, eval.samples={ev.samples}]")
  _check(config.checkpoint.every >= 1, "checkpoint.every", "must be >= 1")
  _check(
    config.task.name != "gsm8k" or config.task.data_path,
    "task.data_path",
    "the gsm8k task reads a local JSON-lines file: set task.data_path",
  )
  _check(
    not config.task.data_path or config.model.checkpoint or config.tokenizer.path,
    "tokenizer.path",
    "a data file needs a real tokenizer: set model.checkpoint or "
    "tokenizer.path (the character tokenizer only covers the built-in tasks)",
  )
  _check(config.model.dtype in _DTYPES, "model.dtype", f"must be one of {sorted(_DTYPES)}")
  _check(
    config.model.remat in models.REMAT_POLICIES,
    "model.remat",
    f"must be one of {sorted(models.REMAT_POLICIES)}, got {config.model.remat!r}",
  )
  _validate_precision(config)
  objective = objectives.make(config.objective)  # validates the objective, naming its fields
  _check(
    objective.config.surrogate.name != "flowrl",
    "objective.surrogate.name",
    "flowrl needs a learned log Z head, which the trainer does not build yet",
  )


def _validate_precision(config: ml_collections.ConfigDict) -> None:
  from grpojax.precision import formats, policy

  pr = config.precision
  _check(
    pr.matmul in policy.MATMULS,
    "precision.matmul",
    f"must be one of {policy.MATMULS}, got {pr.matmul!r}",
  )
  _check(
    pr.rollout_matmul == "same" or pr.rollout_matmul in policy.MATMULS,
    "precision.rollout_matmul",
    f"must be 'same' or one of {policy.MATMULS}",
  )
  _check(
    pr.base_format == "none" or pr.base_format in formats.WEIGHT_FORMATS,
    "precision.base_format",
    f"must be 'none' or one of {formats.WEIGHT_FORMATS}",
  )
  _check(pr.lora.rank >= 0, "precision.lora.rank", "must be >= 0")
  _check(
    pr.base_format == "none" or pr.lora.rank > 0,
    "precision.lora.rank",
    "a quantised base is frozen: set precision.lora.rank > 0 to train adapters",
  )
  _check(not pr.aqn.enabled or pr.aqn.num_stages >= 1, "precision.aqn.num_stages", "must be >= 1")
  _check(
    not pr.aqn.enabled or 0 < pr.aqn.sigma_end <= pr.aqn.sigma_start,
    "precision.aqn.sigma_end",
    "must be in (0, precision.aqn.sigma_start]",
  )


def apply_precision(model: models.Decoder, config: ml_collections.ConfigDict) -> models.Decoder:
  """Applies `config.precision` to a freshly built policy, in place (see grpojax.precision)."""
  import jax

  from grpojax.precision import policy

  pr = config.precision
  policy.set_matmul(model, pr.matmul)
  policy.set_lm_head_f32(model, pr.lm_head_f32)
  if pr.base_format != "none":
    policy.quantize_base(model, pr.base_format, pr.lora.targets)
  if pr.lora.rank > 0:
    policy.add_lora(
      model,
      rank=pr.lora.rank,
      alpha=pr.lora.alpha,
      targets=pr.lora.targets,
      key=jax.random.key(config.model.init_seed + 1),
    )
  return model


def trainable_filter(config: ml_collections.ConfigDict):
  """What the optimiser updates: LoRA adapters when configured, else every parameter."""
  return nnx.LoRAParam if config.precision.lora.rank > 0 else nnx.Param


def needs_reference(config: ml_collections.ConfigDict) -> bool:
  """Whether the objective keeps a frozen reference policy (a KL term with β > 0)."""
  return float(config.objective.kl.coef) > 0


def build_tokenizer(config: ml_collections.ConfigDict):
  """`tokenizer.path`, else the checkpoint's own tokenizer, else the built-in character one."""
  ckpt = config.model.checkpoint
  path = config.tokenizer.path or (
    ckpt if ckpt and os.path.exists(os.path.join(ckpt, tokenizers.TOKENIZER_FILE)) else ""
  )
  if path:
    return tokenizers.load_tokenizer(path)
  return tokenizers.CharTokenizer(tokenizers.ARITHMETIC_ALPHABET)


def build_model(config: ml_collections.ConfigDict, tokenizer) -> models.Decoder:
  """Loads `model.checkpoint`, or makes a random policy from the config's shape fields."""
  m = config.model
  dtype = _DTYPES[m.dtype]
  if m.checkpoint:
    model = models.from_pretrained(m.checkpoint, dtype=dtype)
    model.remat = m.remat
    return apply_precision(model, config)
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
  return apply_precision(
    models.Decoder(cfg, rngs=nnx.Rngs(m.init_seed), dtype=dtype, remat=m.remat), config
  )


def build_task(t: ml_collections.ConfigDict, data_dir: str | None = None):
  """A built-in generated task, or a GSM8K-format JSON-lines file when `task.data_path` is set.

  A data file is prepared once into tfds array_record files under `data_dir`.
  """
  if t.data_path:
    return gsm8k.make_task(
      t.data_path,
      seed=t.seed,
      heldout_files=t.heldout_path or None,
      heldout_size=t.heldout_size,
      data_dir=data_dir,
    )
  return tasks.make_task(
    t.name, difficulty=t.difficulty, seed=t.seed, heldout_size=t.heldout_size, operators=t.operators
  )


def build_run(config: ml_collections.ConfigDict, workdir: str | None = None) -> Run:
  """Builds the tokenizer, task, policy and objective of a validated config."""
  tok = build_tokenizer(config)
  task = build_task(config.task, None if workdir is None else os.path.join(workdir, "data"))
  model = build_model(config, tok)
  if model.config.vocab_size < tok.vocab_size:
    raise ValueError(
      f"config.model: the policy's vocabulary ({model.config.vocab_size}) is "
      f"smaller than the tokenizer's ({tok.vocab_size})"
    )
  use_template = bool(config.tokenizer.chat_template)

  def encode_prompt(example) -> list[int]:
    if use_template:
      text = tok.apply_chat_template(
        [{"role": "user", "content": example.prompt}], add_generation_prompt=True
      )
      return tok.encode(text)
    ids = tok.encode(example.prompt)
    return ids if tok.bos_id is None else [tok.bos_id, *ids]

  return Run(
    tokenizer=tok,
    task=task,
    model=model,
    objective=objectives.make(config.objective),
    encode_prompt=encode_prompt,
  )
