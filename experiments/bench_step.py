"""Seconds per full GRPO step (sample + score + learn): grpojax vs TRL's `GRPOTrainer`.

Both train the same random Qwen2-architecture checkpoint (vocab 512, hidden 256, intermediate 768,
4 layers, 4 heads, 2 kv heads, tied embeddings, float32) on 16 prompts x 8 samples of 24 prompt
tokens, sampling 64 new tokens each at temperature 1 with no early stop, then take one AdamW step
(lr 1e-6, b2 0.98, global-norm clip 1, no weight decay) on all 128 rows at once. The objective is
GRPO without a reference model: group-normalised advantages, PPO-clip surrogate (eps 0.2),
per-sequence token mean (grpojax `objectives.default_config('grpo')` with `kl.coef=0`; TRL
`loss_type='grpo'`, `beta=0`). The reward is the fraction of even token ids in the completion.

grpojax's step is `train._rl_step`, split into sample / score (trainer log-probs of the rollout
under the current policy, plus advantages) / learn (gradient + update). TRL 1.16 skips the
old-log-prob forward when one generation batch feeds one optimiser step, so its split is
generate+score (`_generate_and_score_completions`, of which `_generate` is the sampling part) and
learn (the rest of the step: forward, backward, optimiser). Medians over `--steps` steps after
`--warmup` (2) untimed steps; grpojax's compile time is reported apart. Run on a quiet machine:

  python experiments/bench_step.py --steps 7

Needs the `reference` extra (torch, transformers, trl, datasets).

Measured 2026-11 on the 2-core CPU machine (jax 0.10.2, torch 2.13.0, transformers 5.24.0,
trl 1.16.0, torch 2 threads), `--steps 5` (2 warm-up steps each), quiet machine:

  grpojax f32  : 2.527 s/step (sample 0.587, score 0.001, learn 1.938); compile 5.3 s (once)
  learn FLOP/s : 117.3 GFLOP/s (XLA cost analysis: 227.3 GFLOP per step; 6ND estimate 221.8)
                 vs float32 1024^3 matmul 219.9 GFLOP/s (53% of it)
  grpojax bf16 : 3.466 s/step (sample 1.273, score 0.001, learn 2.194); compile 4.3 s
  TRL 1.16.0   : 3.314 s/step (generate 1.212, rewards+advantages 0.007, learn 2.095,
                 ~106 GFLOP/s by the 6ND estimate)
  speed-up grpojax / TRL (f32 step time): 1.31x

With one update per rollout grpojax takes the old log-probs from the update's own forward pass
(as TRL does), so "score" is empty here; before that fusion the same shape measured 3.3-3.5 s
(0.9-1.07x TRL). What bounds it now: the learn phase runs at ~53% of the machine's f32 matmul
rate, as TRL's does, and sampling is already 2x faster than TRL's generate. bf16 compute does not
pay on this CPU (its weight-gradient matmuls are slow).
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("steps", 5, "Timed steps of each trainer; medians are reported.")
flags.DEFINE_integer(
  "warmup",
  2,
  "Untimed warm-up steps of each trainer before the timed ones "
  "(the first includes grpojax's compilation and torch's first-call set-up).",
)
flags.DEFINE_bool("skip_trl", False, "Time grpojax only.")
flags.DEFINE_bool("skip_bf16", False, "Skip the extra grpojax run with bfloat16 compute.")
FLAGS = flags.FLAGS

PROMPTS, SAMPLES, PROMPT_LEN, NEW_TOKENS = 16, 8, 24, 64
VOCAB, LR, B2 = 512, 1e-6, 0.98


def _even_fraction(ids) -> float:
  return sum(1 for t in ids if int(t) % 2 == 0) / max(len(ids), 1)


def _median(xs):
  return statistics.median(xs)


def matmul_rate_flops():
  """Float32 FLOP/s of a 1024^3 matmul in XLA on this machine (median of 20)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (1024, 1024), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(20):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * 1024**3 / _median(times)


def make_checkpoint(path: str):
  """Saves a random Qwen2 checkpoint of the benchmark's shape; returns the torch model."""
  import torch
  import transformers

  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(
    vocab_size=VOCAB,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
    bos_token_id=None,
    eos_token_id=1,
    pad_token_id=0,
  )
  model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
  model.save_pretrained(path)
  return model


def prompt_texts(n: int) -> list[str]:
  """`n` prompts, each 24 random token ids (never pad 0 or eos 1) written as "id id ...".

  The texts are the ids in decimal, so both trainers see exactly the same prompt tokens.
  """
  import numpy as np

  rs = np.random.RandomState(0)
  return [" ".join(map(str, rs.randint(2, VOCAB, PROMPT_LEN))) for _ in range(n)]


class _IdTokenizer:
  """Ids <-> decimal text; no EOS, so sampling never stops early."""

  pad_id, bos_id, vocab_size = 0, None, VOCAB
  eos_ids = ()

  def encode(self, text: str) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids) -> str:
    return " ".join(map(str, ids))


def grpojax_config():
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import configs.common  # the repository's config fragments (not an installed package)

  c = configs.common.base("grpo")
  ro = c.rollout
  ro.prompts_per_step, ro.samples_per_prompt = PROMPTS, SAMPLES
  ro.max_prompt_len, ro.max_new_tokens, ro.temperature = PROMPT_LEN, NEW_TOKENS, 1.0
  c.objective.kl.coef = 0.0
  c.train.microbatch_rows = PROMPTS * SAMPLES
  c.warm_start.steps = 0
  c.optim.update(
    learning_rate=LR, warmup_steps=0, schedule="constant", b2=B2, weight_decay=0.0, grad_clip=1.0
  )
  return c


def bench_grpojax(path: str, steps: int, warmup: int, dtype, texts, measure_flops: bool):
  """Times `train._rl_step`; returns a dict of medians, compile time and (optionally) FLOPs."""
  import jax
  import numpy as np
  from flax import nnx

  from grpojax import models, objectives, train
  from grpojax.rl import setup
  from grpojax.rl import steps as steps_lib
  from grpojax.tasks import example

  config = grpojax_config()
  setup.validate_config(config)
  tok = _IdTokenizer()
  task = example.Task(
    name="even_ids",
    train=lambda i: example.Example(prompt=texts[i % len(texts)], answer="", solution=""),
    heldout=(),
    reward_fn=lambda text, ex: _even_fraction(tok.encode(text)),
  )
  model = models.from_pretrained(path, dtype=dtype)
  run = setup.Run(
    tokenizer=tok,
    task=task,
    model=model,
    objective=objectives.make(config.objective),
    encode_prompt=lambda ex: tok.encode(ex.prompt),
  )
  opt = train._optimizer(config.optim, warmup + steps)
  graphdef, params = nnx.split(model, nnx.Param)
  fns = steps_lib.build(
    graphdef,
    run.objective,
    opt,
    temperature=config.rollout.temperature,
    compute_entropy=True,
    seq_chunk=config.train.logprob_chunk,
    vocab_chunk=None,
  )
  state = train.TrainState(
    step=jax.numpy.zeros((), jax.numpy.int32),
    params=params,
    opt_state=opt.init(params),
    objective_state=run.objective.init(),
    ref_params=None,
    data_position=jax.numpy.zeros((), jax.numpy.int32),
  )
  key = jax.random.key(0)
  logs_all = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, logs, finite = train._rl_step(
      run, config, fns, state, jax.random.fold_in(key, i), use_ref=False
    )
    jax.block_until_ready(state.params)
    logs["step_s"] = time.perf_counter() - t
    assert finite, logs
    assert logs["response/length"] == NEW_TOKENS, logs["response/length"]
    logs_all.append(logs)
  timed = logs_all[warmup:]
  out = {
    k: _median([lg[k] for lg in timed])
    for k in ("step_s", "time/sample_s", "time/score_s", "time/learn_s")
  }
  out["compile_s"] = logs_all[0]["step_s"] - out["step_s"]
  out["reward"] = _median([lg["reward/mean"] for lg in timed])
  if measure_flops:
    # FLOPs of one learn phase = the gradient of the whole 128-row batch (the AdamW update's
    # FLOPs are negligible), from XLA's cost analysis of the compiled function.
    rows = PROMPTS * SAMPLES
    seqs = jax.tree.map(np.asarray, _dummy_seqs(rows))
    batch = _dummy_batch(rows)
    cost = (
      fns.grad.lower(state.params, seqs, batch, state.objective_state, key)
      .compile()
      .cost_analysis()
    )
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["grad_flops"] = float(cost["flops"])
    cfg = model.config
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    out["analytic_flops"] = 6 * (n_params - cfg.vocab_size * cfg.hidden_size) * rows * (
      PROMPT_LEN + NEW_TOKENS
    ) + 3 * 2 * cfg.vocab_size * cfg.hidden_size * rows * (PROMPT_LEN + NEW_TOKENS)
  return out


def _dummy_seqs(rows):
  import jax.numpy as jnp

  from grpojax.rl import sequences

  n = PROMPT_LEN + NEW_TOKENS
  return sequences.Sequences(
    tokens=jnp.ones((rows, n), jnp.int32),
    attn_mask=jnp.ones((rows, n), jnp.int32),
    completion_mask=jnp.ones((rows, NEW_TOKENS), jnp.int32),
  )


def _dummy_batch(rows):
  import jax.numpy as jnp

  from grpojax import objectives

  z = jnp.zeros((rows, NEW_TOKENS), jnp.float32)
  return objectives.LossBatch(
    old_logprobs=z,
    sampler_logprobs=z,
    ref_logprobs=None,
    advantages=z,
    mask=jnp.ones((rows, NEW_TOKENS), jnp.int32),
    rewards=jnp.zeros((rows,), jnp.float32),
    max_len=NEW_TOKENS,
  )


def bench_trl(path: str, steps: int, warmup: int, texts):
  """Times TRL `GRPOTrainer` steps; returns a dict of medians (and the TRL version)."""
  try:
    import datasets
    import tokenizers
    import torch
    import transformers
    import trl
  except ImportError as e:
    raise RuntimeError(f"the TRL half needs the `reference` extra (trl, datasets): {e}") from e

  # A word-level tokenizer whose tokens are the decimal ids, so TRL tokenises the prompt texts to
  # exactly the ids grpojax samples from.
  tk = tokenizers.Tokenizer(
    tokenizers.models.WordLevel({str(i): i for i in range(VOCAB)}, unk_token="0")
  )
  tk.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tk.decoder = None
  tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tk, pad_token="0", eos_token="1", unk_token="0"
  )
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
  rows = PROMPTS * SAMPLES
  ds = datasets.Dataset.from_dict(
    {"prompt": [texts[i % len(texts)] for i in range(PROMPTS * (warmup + steps + 1))]}
  )

  def even_fraction(completions, completion_ids, **kwargs):
    del completions, kwargs
    return [_even_fraction(ids) for ids in completion_ids]

  args = trl.GRPOConfig(
    output_dir=tempfile.mkdtemp(),
    use_cpu=True,
    seed=0,
    report_to=[],
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    max_steps=warmup + steps,
    per_device_train_batch_size=rows,
    gradient_accumulation_steps=1,
    num_generations=SAMPLES,
    generation_batch_size=rows,
    num_iterations=1,
    beta=0.0,
    loss_type="grpo",
    scale_rewards="group",
    epsilon=0.2,
    learning_rate=LR,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    adam_beta1=0.9,
    adam_beta2=B2,
    max_grad_norm=1.0,
    max_completion_length=NEW_TOKENS,
    temperature=1.0,
    top_p=1.0,
    top_k=0,
    shuffle_dataset=False,
    dataloader_num_workers=0,
    mask_truncated_completions=False,
    log_completions=False,
    # No early stop: EOS is masked out until all 64 tokens are sampled.
    generation_kwargs={"min_new_tokens": NEW_TOKENS},
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

  class StepTimer(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
      self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
      times["step"].append(time.perf_counter() - self.t)

  trainer.add_callback(StepTimer())
  trainer.train()
  if len(times["step"]) != warmup + steps or len(times["gen_score"]) != warmup + steps:
    raise RuntimeError(
      f"TRL ran {len(times['step'])} steps and {len(times['gen_score'])} "
      f"generations, expected {warmup + steps} of each"
    )
  if min(lengths) != NEW_TOKENS:
    raise RuntimeError(f"TRL completions stopped early: mean lengths {lengths}")
  step, gen_score, gen = (_median(times[k][warmup:]) for k in ("step", "gen_score", "generate"))
  return {
    "step_s": step,
    "generate_s": gen,
    "score_s": gen_score - gen,
    "learn_s": step - gen_score,
    "version": trl.__version__,
  }


def main(_):
  import jax
  import jax.numpy as jnp
  import torch

  torch.set_num_threads(2)
  path = tempfile.mkdtemp()
  make_checkpoint(path)
  texts = prompt_texts(PROMPTS * 8)
  rows = PROMPTS * SAMPLES
  print(
    f"shape: {PROMPTS} prompts x {SAMPLES} samples, {PROMPT_LEN} prompt tokens, {NEW_TOKENS} "
    f"new tokens, one AdamW step on {rows} rows; torch threads {torch.get_num_threads()}, "
    f"jax devices {jax.devices()}",
    flush=True,
  )

  ours = bench_grpojax(path, FLAGS.steps, FLAGS.warmup, jnp.float32, texts, measure_flops=True)
  print(
    f"grpojax f32  : {ours['step_s']:.3f} s/step (sample {ours['time/sample_s']:.3f}, score "
    f"{ours['time/score_s']:.3f}, learn {ours['time/learn_s']:.3f}); compile "
    f"{ours['compile_s']:.1f} s (once); reward {ours['reward']:.3f}",
    flush=True,
  )
  peak = matmul_rate_flops()
  achieved = ours["grad_flops"] / ours["time/learn_s"]
  print(
    f"learn FLOP/s : {achieved / 1e9:.1f} GFLOP/s (XLA cost analysis: "
    f"{ours['grad_flops'] / 1e9:.1f} GFLOP per step; 6ND estimate "
    f"{ours['analytic_flops'] / 1e9:.1f}) vs float32 1024^3 matmul {peak / 1e9:.1f} GFLOP/s "
    f"({100 * achieved / peak:.0f}% of it)",
    flush=True,
  )
  if not FLAGS.skip_bf16:
    bf = bench_grpojax(path, FLAGS.steps, FLAGS.warmup, jnp.bfloat16, texts, measure_flops=False)
    print(
      f"grpojax bf16 : {bf['step_s']:.3f} s/step (sample {bf['time/sample_s']:.3f}, score "
      f"{bf['time/score_s']:.3f}, learn {bf['time/learn_s']:.3f}); compile "
      f"{bf['compile_s']:.1f} s; bf16 compute, f32 params",
      flush=True,
    )
  if FLAGS.skip_trl:
    return
  theirs = bench_trl(path, FLAGS.steps, FLAGS.warmup, texts)
  print(
    f"TRL {theirs['version']:<9}: {theirs['step_s']:.3f} s/step (generate "
    f"{theirs['generate_s']:.3f}, rewards+advantages {theirs['score_s']:.3f}, learn "
    f"{theirs['learn_s']:.3f}, ~{ours['analytic_flops'] / theirs['learn_s'] / 1e9:.0f} GFLOP/s "
    f"by the 6ND estimate); no old-log-prob forward (one optimiser step per generation)",
    flush=True,
  )
  print(f"speed-up grpojax / TRL (f32 step time): {theirs['step_s'] / ours['step_s']:.2f}x")


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  app.run(main)
