"""Config fragments shared by the experiment files: plain functions, no inheritance."""

import ml_collections

from grpojax import objectives


def base(recipe: str = "grpo") -> ml_collections.ConfigDict:
  """A full run config for the built-in arithmetic task with a tiny random Qwen2 policy.

  Every field a run reads is here, so a `--config.a.b=value` typo fails loudly.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.log_every = 10
  # Two-digit addition, generated in code; held-out problems never appear in training.
  # `name`: "arithmetic" | "countdown" | "scratchpad" (multi-step arithmetic with a worked
  # solution: `difficulty` operations on `digits`-digit numbers with `operators`, see
  # grpojax/tasks/scratchpad.py) | "gsm8k" (GSM8K-format `data_path`) | "data" (any
  # JSON-lines or Parquet `data_path`, read through `fields`, scored by `verifier`: exact |
  # numeric | math_verify) | "my_pkg.my_tasks:make_task" (any callable returning a
  # grpojax.tasks.Task, called with `kwargs`; see grpojax/tasks/plugins.py).
  c.task = ml_collections.ConfigDict(
    dict(
      name="arithmetic",
      kwargs=ml_collections.ConfigDict(),
      # The keys of a "data" row; solution "" = the answer's text; marker: "" or the text after
      # whose last occurrence the final answer stands (GSM8K's "####").
      fields=ml_collections.ConfigDict(
        dict(prompt="prompt", answer="answer", solution="", marker="")
      ),
      verifier="numeric",
      difficulty=2,
      operators="+",
      digits=1,  # scratchpad only (arithmetic's digits are its difficulty)
      seed=0,
      heldout_size=256,
      data_path="",
      heldout_path="",
      # A data row whose prompt exceeds rollout.max_prompt_len fails preparation (file:line);
      # True drops and counts such rows instead.
      skip_long=False,
    )
  )
  # Multi-turn environments (grpojax/tasks/environments.py, grpojax/rl/multiturn.py): name "" =
  # single-turn `task`; "calculator" | "guess" (built-in, `kwargs` their arguments, seed and
  # heldout_size from `task`) | "my_pkg.mod:make_env_task" (any callable returning a
  # MultiTurnTask, called with `kwargs`). An episode has at most `max_turns` policy turns in the
  # one rollout.max_new_tokens budget; each environment reply is at most `max_obs_tokens` tokens;
  # an environment call that raises or runs past `timeout_s` seconds ends its episode, reward 0.
  c.env = ml_collections.ConfigDict(
    dict(name="", max_turns=3, timeout_s=10.0, max_obs_tokens=8, kwargs=ml_collections.ConfigDict())
  )
  # "" = the checkpoint's tokenizer, or the built-in character one for a random policy.
  c.tokenizer = ml_collections.ConfigDict(dict(path="", chat_template=False))
  # checkpoint "" = a random policy of the shape below; else a local HF checkpoint directory.
  c.model = ml_collections.ConfigDict(
    dict(
      checkpoint="",
      model_type="qwen2",
      hidden_size=128,
      intermediate_size=384,
      num_layers=3,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      init_seed=0,
      dtype="float32",
      # Rematerialisation of each layer in the trainer's forward: none | full | dots | dots_all.
      remat="none",
    )
  )
  c.rollout = ml_collections.ConfigDict(
    dict(
      prompts_per_step=32,
      samples_per_prompt=8,
      max_prompt_len=8,
      max_new_tokens=6,
      temperature=1.0,
      top_k=0,
      top_p=1.0,
      min_p=0.0,
    )
  )
  # The loss: a recipe and its keyword arguments (grpojax.objectives.recipes), plus an optional
  # correction for the sampler-trainer mismatch (`correction.name`: none | tis | mis | opsm).
  c.objective = objectives.default_config(recipe)
  # IntroLLM's learned per-token temperature (grpojax.sampling.head_temperature): each token's
  # τ ~ τ_min + (τ_max − τ_min)·Beta(1 + κm, 1 + κ(1 − m)), m = sigmoid(temperature head), in
  # place of `rollout.temperature`; needs an objective that trains the head (`introllm`).
  c.rollout.temperature_policy = ml_collections.ConfigDict(
    dict(enabled=False, tau_min=0.5, tau_max=1.5, concentration=8.0)
  )
  # DAPO's dynamic sampling: keep groups whose correctness differs (`metric` "acc", as DAPO and
  # verl; "reward": the shaped reward), generating up to `max_generation_batches` batches of
  # prompts per step to fill the batch with them.
  c.rollout.refill = ml_collections.ConfigDict(
    dict(enabled=False, max_generation_batches=10, metric="acc")
  )
  # RePO's rephrase injection (grpojax/rl/rephrase.py): in groups whose share of incorrect rows
  # is >= failure_rate, up to num_replaced of the worst incorrect rows are replaced by the
  # policy's verified restatements of the reference solution, prompted by `template`
  # ({prompt}, {solution}, {answer}) and padded to max_prompt_len tokens.
  c.rollout.rephrase = ml_collections.ConfigDict(
    dict(
      enabled=False,
      failure_rate=1.0,
      num_replaced=1,
      template="{prompt}{solution}\n{prompt}",
      max_prompt_len=24,
    )
  )
  # DEEP-GRPO's pivot branching (grpojax/rl/pivots.py): failed chains are cut into nodes of
  # tokens_per_node tokens (the authors' 50, scaled to this task's 3-6-token answers), one pivot
  # per failed chain is drawn by P(success | depth)·depth^position_bias (a logistic fit on a
  # sliding window of `window` pivots) and branched samples_per_prompt times; up to max_pivots
  # branch groups a step follow the root groups in the batch.
  c.rollout.branch = ml_collections.ConfigDict(
    dict(enabled=False, max_pivots=16, tokens_per_node=1, position_bias=2.0, window=10000)
  )
  # Where each step's rollout comes from (grpojax/rl/pipeline.py): "sync" (sampled now by the
  # current policy), "stale" (by the policy `staleness` updates older: reproducible, for
  # experiments) or "async" (a background producer with the latest published policy; no rollout
  # more than `max_staleness` updates old trains, `on_stale` "drop" | "wait"). Whenever rollouts
  # can be stale, an objective without its own correction gets `correction` ("tis" | "mis";
  # "none" turns it off).
  c.rollout.pipeline = ml_collections.ConfigDict(
    dict(mode="sync", staleness=0, max_staleness=4, on_stale="drop", correction="tis")
  )
  # Where each step's prompts come from (grpojax/rl/curricula.py): "sequential" (the stream in
  # order), or a candidate pool of `pool_size` scored by "goldilocks" (a teacher MLP on the
  # policy's pooled prompt states, utility sqrt(p(1-p)), trained by SGD on replayed observed
  # accuracies) or "paced" (p = log Z / objective.beta from the log-Z head, utility -|p - tau|,
  # `replay_fraction` of each batch replayed with priority |p - accuracy|^replay_alpha).
  c.curriculum = ml_collections.ConfigDict(
    dict(
      name="sequential",
      pool_size=128,
      seed=0,
      tau=0.5,
      replay_capacity=1024,
      replay_fraction=0.25,
      replay_alpha=1.0,
      teacher_hidden=64,
      teacher_learning_rate=0.5,
      teacher_steps=4,
      teacher_batch=64,
    )
  )
  # Reward shaping. DAPO's overlong penalty, with budgets in tokens of this task (the paper's are
  # for 20k-token answers): R += min(-(|y| - (max_len - cache)) / cache, 0) * penalty_factor.
  # `fns`: reward functions by import path ("task" = the task's own), summed with `weights`
  # (empty: all 1); empty `fns` = the task's own reward. A function returns a float or a dict
  # of named components (its value: the "reward" entry, else their sum); each is logged as
  # reward/<fn>/<component>. `on_error`: "raise" (stop, naming the function and the item) or
  # "zero" (score 0, counted in reward/errors). See grpojax/tasks/plugins.py.
  c.reward = ml_collections.ConfigDict(
    dict(
      fns=(),
      weights=(),
      on_error="raise",
      overlong=ml_collections.ConfigDict(
        dict(enabled=False, max_len=c.rollout.max_new_tokens, cache=2, penalty_factor=1.0)
      ),
      # Rewards from models, added with their weights: R += weight * score (off: `path` "").
      # See grpojax/rl/model_rewards.py. `time_limit_s` bounds each batch, first compilation
      # included. A local ...ForSequenceClassification directory (weights and tokenizer):
      model=ml_collections.ConfigDict(
        dict(
          path="",
          weight=1.0,
          label=0,  # which output of the score head is the reward
          max_len=1024,  # tokens of prompt + completion; a longer pair keeps its end
          batch_size=16,  # global rows per call, split over the mesh's batch axes
          chat_template=True,
          dtype="",  # compute dtype: "float32" | "bfloat16" | "" = model.dtype
          time_limit_s=600.0,
        )
      ),
      # An LLM judge: a local chat checkpoint, greedy; reward (s - min) / (max - min) of the
      # score s on its final line "Score: s", or `fallback` when unparsable (counted).
      judge=ml_collections.ConfigDict(
        dict(
          path="",
          weight=1.0,
          # "" = grpojax.rl.judge.DEFAULT_RUBRIC; fields {prompt} {completion} {reference} {lo} {hi}
          rubric="",
          min_score=0,
          max_score=10,
          fallback=0.0,
          max_new_tokens=256,
          max_prompt_len=1024,
          batch_size=8,  # global rows per call, split over the mesh's batch axes
          chat_template=True,
          dtype="",  # compute dtype: "float32" | "bfloat16" | "" = model.dtype
          # a filled-in rubric over max_prompt_len: "fallback" (scored `fallback`, counted in
          # reward/judge/too_long, a warning names it) or "raise" (stop naming the item)
          on_too_long="fallback",
          time_limit_s=900.0,
        )
      ),
    )
  )
  c.optim = ml_collections.ConfigDict(
    dict(
      learning_rate=1.5e-4,
      warmup_steps=10,
      schedule="cosine",
      final_lr_fraction=0.1,
      b1=0.9,
      b2=0.98,
      weight_decay=0.0,
      grad_clip=1.0,
      # Heads (value, log Z, temperature) train at this rate; 0 = the policy's learning_rate.
      head_learning_rate=0.0,
    )
  )
  # Supervised steps on reference solutions before RL (0 for a pretrained checkpoint).
  c.warm_start = ml_collections.ConfigDict(
    dict(
      steps=500,
      batch_size=64,
      learning_rate=1e-3,
      warmup_steps=50,
      schedule="constant",
      final_lr_fraction=1.0,
      b1=0.9,
      b2=0.98,
      weight_decay=0.0,
      grad_clip=1.0,
    )
  )
  # critic_warmup_steps: the first N RL steps train only the heads (VAPO's value pretraining on
  # the warm-started policy's returns; the decoder stays bit-identical), part of train.steps.
  c.train = ml_collections.ConfigDict(
    dict(
      steps=300,
      epochs=1,
      minibatches=1,
      microbatch_rows=256,
      logprob_chunk=1024,
      max_bad_steps=3,
      critic_warmup_steps=0,
      # > 0: skip an update whose gradient norm exceeds this many times the median of the
      # recent ones (grpojax/rl/spike_guard.py); skipped updates count towards max_bad_steps.
      spike_guard=0.0,
      # > 0: each micro-batch's forward/backward runs on rows grouped by completion length and
      # cut to the shortest of this many static lengths that holds them (grpojax/rl/
      # length_buckets.py); 0: every row at rollout.max_new_tokens.
      length_buckets=0,
    )
  )
  c.eval = ml_collections.ConfigDict(
    dict(every=50, num_prompts=256, batch_prompts=128, samples=8, pass_k=8)
  )
  # A save needs the newest checkpoint's size free on disk, and at least min_free_gb.
  c.checkpoint = ml_collections.ConfigDict(dict(every=50, max_to_keep=2, min_free_gb=0.0))
  # Run tracking (grpojax/metrics.py): the metrics.jsonl history (always) plus any of
  # "tensorboard", "csv" (long-format metrics.csv) and "wandb" (pip install 'grpojax[wandb]';
  # WANDB_MODE=offline keeps the run on disk); wandb_name "" = the workdir's base name.
  c.metrics = ml_collections.ConfigDict(
    dict(writers=("tensorboard", "jsonl"), wandb_project="grpojax", wandb_name="")
  )
  # Numerics of the policy, read by the sampler and the trainer alike (grpojax.precision):
  # matmul default | fp8 | fp8_block for every decoder projection (Jet-RL's unified FP8 flow);
  # rollout_matmul "same", or another matmul for the sampler only (the naive FP8-rollout
  # baseline); base_format none | nvfp4 | int4 | fp8 freezes a quantised base under LoRA
  # adapters (QeRL), with Adaptive Quantization Noise on the rollout model's RMSNorm scales.
  c.precision = ml_collections.ConfigDict(
    dict(
      matmul="default",
      rollout_matmul="same",
      lm_head_f32=False,
      base_format="none",
      lora=ml_collections.ConfigDict(
        dict(rank=0, alpha=16.0, targets=r"(q|k|v|o|gate|up|down)_proj")
      ),
      aqn=ml_collections.ConfigDict(
        dict(enabled=False, sigma_start=1e-2, sigma_end=1e-4, num_stages=10)
      ),
    )
  )
  # Device mesh over all processes' devices: data x fsdp x tensor, one size may be -1 (the
  # rest). Training shards parameters over fsdp and tensor; the sampler keeps them whole on
  # each fsdp group (grpojax.parallel.rules.SAMPLE_RULES). Batches split over data x fsdp.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return c


def shrink_for_local(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A seconds-long smoke run of the same program (the `:local` argument).

  Sizes shrink, the method does not: a recipe without a warm start keeps none.
  """
  c.warm_start.steps = min(c.warm_start.steps, 2)
  c.warm_start.batch_size = 8
  c.train.steps = 2
  c.train.microbatch_rows = 8
  c.rollout.prompts_per_step = 2
  c.rollout.samples_per_prompt = 4
  c.eval.num_prompts = 8
  c.eval.batch_prompts = 8
  c.eval.samples = 4
  c.eval.pass_k = 4
  c.eval.every = 1
  c.checkpoint.every = 2
  c.log_every = 1
  c.model.hidden_size, c.model.intermediate_size, c.model.num_layers = 32, 64, 1
  return c


def finish(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the config-file argument: nothing, or `local` for a seconds-long smoke run."""
  if arg == "local":
    shrink_for_local(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (expected nothing or 'local')")
  c.lock()  # a typo in an override cannot add a field
  return c
