"""The peers of experiments/bench_step.py: tunix's `GRPOLearner`, TRL's `GRPOTrainer` and a plain
PyTorch loop, each timing one full GRPO step on the same checkpoint and shape as grpojax (the
settings and what each step covers are in bench_step.py's docstring). Imported lazily: every
peer library is optional.
"""

import importlib.util
import os
import statistics
import tempfile
import time

LR, B2, CLIP_EPS, ADV_EPS = 1e-6, 0.98, 0.2, 1e-6
EOS, PAD = 1, 0


def fraction_even(ids) -> float:
  return sum(1 for t in ids if int(t) % 2 == 0) / max(len(ids), 1)


def median(xs):
  return statistics.median(xs)


def missing(*modules: str) -> list[str]:
  return [m for m in modules if importlib.util.find_spec(m) is None]


class _TunixIdTokenizer:
  """tunix's tokenizer protocol over decimal ids. Its EOS is an id the model cannot sample (the
  vocabulary size), so no row stops early, as `min_new_tokens` does for TRL."""

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str, **kwargs) -> list[int]:
    del kwargs
    return [int(t) for t in str(text).split()]

  def decode(self, ids, **kwargs) -> str:
    del kwargs
    return " ".join(str(int(t)) for t in ids)

  def bos_id(self):
    return None

  def eos_id(self) -> int:
    return self.vocab_size

  def pad_id(self) -> int:
    return PAD


def tunix_model_config(path: str):
  """tunix's Qwen2 config for the checkpoint at `path` (its `config.json`)."""
  import json

  from tunix.models.qwen2 import model as qwen2

  with open(os.path.join(path, "config.json")) as f:
    hf = json.load(f)
  return qwen2.ModelConfig(
    num_layers=hf["num_hidden_layers"],
    vocab_size=hf["vocab_size"],
    embed_dim=hf["hidden_size"],
    hidden_dim=hf["intermediate_size"],
    num_heads=hf["num_attention_heads"],
    head_dim=hf["head_dim"],
    num_kv_heads=hf["num_key_value_heads"],
    rope_theta=int(hf["rope_theta"]),
    norm_eps=hf["rms_norm_eps"],
    use_tied_embedding=hf["tie_word_embeddings"],
  )


def bench_tunix(path: str, shape, steps: int, warmup: int, texts):
  """Times tunix `GRPOLearner` steps on the same checkpoint (loaded into tunix's own Qwen2);
  returns a dict of medians, versions and settings."""
  import importlib.metadata

  import jax
  import numpy as np
  import optax
  from tunix.models.qwen2 import params as qwen2_params
  from tunix.rl import rl_cluster
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  # One device, actor and sampler colocated: they share the weights, so tunix skips its
  # weight sync. tunix's models need an Auto mesh (jax.make_mesh defaults to Explicit axes).
  auto = (jax.sharding.AxisType.Auto,) * 2
  mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=auto, devices=jax.devices()[:1])
  model = qwen2_params.create_model_from_safe_tensors(path, tunix_model_config(path), mesh)
  tokenizer = _TunixIdTokenizer(shape.vocab)
  optimizer = optax.chain(
    optax.clip_by_global_norm(1.0), optax.adamw(LR, b1=0.9, b2=B2, eps=1e-8, weight_decay=0.0)
  )
  rollout_config = base_rollout.RolloutConfig(
    max_tokens_to_generate=shape.new_tokens,
    max_prompt_length=shape.prompt_len,
    kv_cache_size=shape.prompt_len + shape.new_tokens,
    temperature=1.0,
    top_p=1.0,
    top_k=None,
    eos_tokens=[tokenizer.eos_id()],
  )
  training_config = rl_cluster.RLTrainingConfig(
    actor_optimizer=optimizer,
    eval_every_n_steps=10**9,
    max_steps=warmup + steps,
    mini_batch_size=shape.prompts,  # in prompts: one optimiser step on all rows
    train_micro_batch_size=shape.prompts,
  )
  cluster = rl_cluster.RLCluster(
    actor=model,
    tokenizer=tokenizer,
    cluster_config=rl_cluster.ClusterConfig(
      role_to_mesh={role: mesh for role in rl_cluster.Role},
      rollout_engine="vanilla",
      offload_to_cpu=False,
      training_config=training_config,
      rollout_config=rollout_config,
    ),
  )
  algo = grpo_learner.GRPOConfig(
    num_generations=shape.samples, num_iterations=1, beta=0.0, epsilon=CLIP_EPS
  )

  def even_fraction(prompts, completions, **kwargs):
    del prompts, kwargs
    return [fraction_even(tokenizer.encode(c)) for c in completions]

  learner = grpo_learner.GRPOLearner(
    rl_cluster=cluster, algo_config=algo, reward_fns=[even_fraction]
  )
  times = {"step": [], "generate": []}
  lengths = []

  def timed(name, fn):
    def wrapper(*a, **kw):
      t = time.perf_counter()
      out = fn(*a, **kw)
      times[name].append(time.perf_counter() - t)
      if name == "generate":
        lengths.extend(len(ids) for ids in out.tokens)
      return out

    return wrapper

  # A global step holds the rollout (`RLCluster.generate`), the rewards and advantages, and the
  # update; tunix syncs no weights between colocated actor and sampler.
  cluster.generate = timed("generate", cluster.generate)
  learner._run_global_step = timed("step", learner._run_global_step)
  batches = [
    {
      "prompts": np.array(
        [texts[(i * shape.prompts + j) % len(texts)] for j in range(shape.prompts)]
      )
    }
    for i in range(warmup + steps)
  ]
  learner.train(batches)
  if len(times["step"]) != warmup + steps or len(times["generate"]) != warmup + steps:
    raise RuntimeError(
      f"tunix ran {len(times['step'])} steps and {len(times['generate'])} generations, "
      f"expected {warmup + steps} of each"
    )
  if set(lengths) != {shape.new_tokens}:
    raise RuntimeError(f"tunix completions stopped early: lengths {sorted(set(lengths))}")
  step, gen = (median(times[k][warmup:]) for k in ("step", "generate"))
  return {
    "step_s": step,
    "generate_s": gen,
    "learn_s": step - gen,
    "version": importlib.metadata.version("google-tunix"),
    "settings": dict(
      rollout_engine="vanilla",
      colocated=True,
      weight_sync=learner.should_sync_weights,
      loss_agg_mode=algo.loss_agg_mode,
      num_iterations=algo.num_iterations,
      beta=algo.beta,
      remat=model.config.remat_config.name,
      dtype=np.dtype(model.config.dtype).name,
    ),
  }


def _trl_tokenizer(vocab: int):
  """A word-level tokenizer whose tokens are the decimal ids, so TRL tokenises the prompt texts
  to exactly the ids grpojax samples from."""
  import tokenizers
  import transformers

  tk = tokenizers.Tokenizer(
    tokenizers.models.WordLevel({str(i): i for i in range(vocab)}, unk_token=str(PAD))
  )
  tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=tk, pad_token=str(PAD), eos_token=str(EOS), unk_token=str(PAD)
  )


def bench_trl(path: str, shape, steps: int, warmup: int, texts, use_defaults: bool):
  """Times TRL `GRPOTrainer` steps; returns a dict of medians, settings and what ran."""
  import accelerate
  import datasets
  import torch
  import transformers
  import trl

  tokenizer = _trl_tokenizer(shape.vocab)
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  ds = datasets.Dataset.from_dict(
    {"prompt": [texts[i % len(texts)] for i in range(shape.prompts * (warmup + steps + 1))]}
  )

  def even_fraction(completions, completion_ids, **kwargs):
    del completions, kwargs
    return [fraction_even(ids) for ids in completion_ids]

  # TRL 1.16 defaults bf16=True and gradient_checkpointing=True (see the module docstring).
  precision = {} if use_defaults else dict(bf16=False, gradient_checkpointing=False)
  args = trl.GRPOConfig(
    output_dir=tempfile.mkdtemp(),
    use_cpu=True,
    seed=0,
    report_to=[],
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    max_steps=warmup + steps,
    per_device_train_batch_size=shape.rows,
    gradient_accumulation_steps=1,
    num_generations=shape.samples,
    generation_batch_size=shape.rows,
    num_iterations=1,
    beta=0.0,
    loss_type="grpo",
    scale_rewards="group",
    epsilon=CLIP_EPS,
    learning_rate=LR,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    adam_beta1=0.9,
    adam_beta2=B2,
    max_grad_norm=1.0,
    max_completion_length=shape.new_tokens,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    shuffle_dataset=False,
    dataloader_num_workers=0,
    mask_truncated_completions=False,
    log_completions=False,
    # No early stop: EOS is masked out until all new tokens are sampled.
    generation_kwargs={"min_new_tokens": shape.new_tokens},
    **precision,
  )
  trainer = trl.GRPOTrainer(
    model=model,
    reward_funcs=[even_fraction],
    args=args,
    train_dataset=ds,
    processing_class=tokenizer,
  )

  times = {"step": [], "gen_score": [], "generate": []}
  lengths = []

  def timed(name, fn):
    def wrapper(*a, **kw):
      t = time.perf_counter()
      out = fn(*a, **kw)
      times[name].append(time.perf_counter() - t)
      if name == "gen_score":
        lengths.append(float(out["completion_mask"].sum(dim=1).float().mean()))
      return out

    return wrapper

  trainer._generate_and_score_completions = timed(
    "gen_score", trainer._generate_and_score_completions
  )
  trainer._generate = timed("generate", trainer._generate)

  # What the first step actually runs with, seen from inside a decoder MLP (the LM head may be
  # fused into the loss); removed after that step, so timed steps carry no hook.
  observed = {}
  trained = trainer.model
  # transformers 5 renames gradient checkpointing to activation checkpointing.
  ckpt_attr = next(
    (
      a
      for a in ("is_activation_checkpointing", "is_gradient_checkpointing")
      if hasattr(type(trained), a)
    ),
    None,
  )

  def probe(module, inputs, output):
    del module, inputs
    phase = "learn" if torch.is_grad_enabled() else "generate"
    seen = observed.setdefault(
      phase,
      dict(
        autocast=torch.is_autocast_enabled("cpu"),
        dtype=str(output.dtype).replace("torch.", ""),
        grad_ckpt=bool(getattr(trained, ckpt_attr)) if ckpt_attr else None,
        deterministic=torch.are_deterministic_algorithms_enabled(),
        threads=torch.get_num_threads(),
      ),
    )
    if phase == "generate":  # one-token calls after the prompt's mean a KV cache is in use
      seen["kv_cache"] = seen.get("kv_cache", False) or output.shape[1] == 1

  hook = trained.model.layers[0].mlp.down_proj.register_forward_hook(probe)

  class StepTimer(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
      self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      times["step"].append(time.perf_counter() - self.t)
      hook.remove()

  trainer.add_callback(StepTimer())
  trainer.train()
  if len(times["step"]) != warmup + steps or len(times["gen_score"]) != warmup + steps:
    raise RuntimeError(
      f"TRL ran {len(times['step'])} steps and {len(times['gen_score'])} "
      f"generations, expected {warmup + steps} of each"
    )
  if min(lengths) != shape.new_tokens:
    raise RuntimeError(f"TRL completions stopped early: mean lengths {lengths}")
  step, gen_score, gen = (median(times[k][warmup:]) for k in ("step", "gen_score", "generate"))
  return {
    "step_s": step,
    "generate_s": gen,
    "score_s": gen_score - gen,
    "learn_s": step - gen_score,
    "version": trl.__version__,
    "versions": ", ".join(
      f"{m.__name__} {m.__version__}" for m in (trl, transformers, accelerate, datasets)
    ),
    "settings": dict(
      bf16=args.bf16,
      gradient_checkpointing=args.gradient_checkpointing,
      num_iterations=args.num_iterations,
      loss_type=args.loss_type,
      beta=args.beta,
      steps_per_generation=args.steps_per_generation,
    ),
    "observed": observed,
  }


def bench_torch(path: str, shape, steps: int, warmup: int, prompts):
  """Times a plain PyTorch GRPO step: `generate`, then one forward/backward/AdamW step."""
  import numpy as np
  import torch
  import transformers

  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, B2), eps=1e-8, weight_decay=0.0)
  p, g, tp, n = shape.prompts, shape.samples, shape.prompt_len, shape.new_tokens
  input_ids = torch.tensor(np.repeat(np.asarray(prompts[:p]), g, axis=0))
  gen_kw = dict(
    do_sample=True,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    max_new_tokens=n,
    min_new_tokens=n,  # EOS is masked out until all new tokens are sampled, as in TRL
    eos_token_id=EOS,
    pad_token_id=PAD,
  )
  times = {"step": [], "generate": []}
  for _ in range(warmup + steps):
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
      seqs = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **gen_kw)
    t1 = time.perf_counter()
    assert seqs.shape == (p * g, tp + n), seqs.shape
    model.train()
    completion = seqs[:, tp:]
    mask = torch.ones_like(completion, dtype=torch.float32)
    rewards_pg = (completion % 2 == 0).float().mean(dim=1).view(p, g)
    adv = (rewards_pg - rewards_pg.mean(1, keepdim=True)) / (
      rewards_pg.std(1, keepdim=True) + ADV_EPS
    )
    # Logits of the positions that predict the completion tokens only.
    logits = model(
      input_ids=seqs, attention_mask=torch.ones_like(seqs), logits_to_keep=n + 1
    ).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    logp = logp.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - logp.detach())  # on-policy: the old log-probs are the current ones
    a = adv.reshape(-1, 1)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - CLIP_EPS, 1 + CLIP_EPS) * a)
    loss = -((surrogate * mask).sum(1) / mask.sum(1).clamp(min=1.0)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times["step"].append(time.perf_counter() - t0)
    times["generate"].append(t1 - t0)
  step, gen = (median(times[k][warmup:]) for k in ("step", "generate"))
  return {
    "step_s": step,
    "generate_s": gen,
    "learn_s": step - gen,
    "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
  }


def tunix_import_error() -> str | None:
  """Why tunix cannot be imported here (None when it can)."""
  if missing("tunix"):
    return "not importable: tunix; install the peers-jax extra in its own environment"
  try:
    from tunix.rl.grpo import grpo_learner  # noqa: F401
  except Exception as e:  # a broken install names itself in the skip line
    return f"import failed: {type(e).__name__}: {e}"
  return None


def trl_why(settings: dict, mkldnn_bf16: bool) -> str:
  """One line on why TRL runs with its settings here."""
  if settings["bf16"]:
    return (
      "TRL defaults kept (--trl_defaults): bf16 autocast on CPU; with oneDNN bf16 "
      f"{'usable' if mkldnn_bf16 else 'unusable (no AVX-512)'} here, torch's bf16 GEMMs "
      f"{'run in oneDNN' if mkldnn_bf16 else 'fall back to the scalar cpublas gemm'}"
    )
  return (
    "bf16=False: TRL's default bf16=True autocasts every forward to bfloat16 on CPU, and without "
    "AVX-512 torch's bf16 GEMMs fall back to the scalar single-threaded cpublas gemm "
    f"(oneDNN bf16 usable here: {mkldnn_bf16}); gradient_checkpointing=False, as grpojax "
    "recomputes nothing"
  )
