"""Seconds per full GRPO step (sample + learn): grpojax vs TRL's `GRPOTrainer` vs a plain
PyTorch loop, all on the same checkpoint and shape, in one run.

All three train the same random Qwen2-architecture checkpoint (vocab 512, hidden 256,
intermediate 768, 4 layers, 4 heads, 2 kv heads, tied embeddings, float32; written once by
`grpojax.models.save_pretrained`) on 16 prompts x 8 samples of 24 prompt tokens, sampling 64 new
tokens each at temperature 1 with no early stop, then take one AdamW step (lr 1e-6, b2 0.98,
global-norm clip 1, no weight decay) on all 128 rows at once. The objective is GRPO without a
reference model: group z-score advantages, PPO-clip surrogate (eps 0.2), per-sequence token mean
(grpojax `objectives.default_config('grpo')` with `kl_coef=0`; TRL `loss_type='grpo'`,
`beta=0`). The reward is the fraction of even token ids in the completion.

* grpojax: `train.build(config, mesh)`, the builder the trainer uses, and `train._rl_step`, the
  trainer's RL step. The bench swaps in its own task and id tokenizer (`program.run`) and the
  same sampler without stop tokens (`rollout.make_sampler` over the trainer's sampler copy), so
  every row samples all 64 tokens. A step splits into sample (rollout, rewards, batch) and learn
  (`program.update`: the one jitted update, which takes the old log-probs from its own forward
  pass with one optimiser step per rollout). The earlier "score" column is gone: scoring now
  lives inside the update.
* TRL: `GRPOTrainer`, split into generate (`_generate`), rewards + advantages (the rest of
  `_generate_and_score_completions`; TRL skips the old-log-prob forward when one generation
  batch feeds one optimiser step) and learn (the rest of the step).
* plain PyTorch: transformers `generate` for the 128 rollouts, then one forward, backward and
  `torch.optim.AdamW` step of the same GRPO loss written directly in torch.
* tunix (the JAX peer, `GRPOLearner` of google-tunix): the same checkpoint loaded into tunix's
  own Qwen2 (`qwen2.params.create_model_from_safe_tensors`), actor and vanilla sampler colocated
  on one Auto mesh (so they share the weights and tunix syncs none), `GRPOConfig(beta=0,
  num_iterations=1, epsilon=0.2)` with its default per-sequence token mean, the same optax AdamW
  with global-norm clipping, one mini-batch of all rows. Its EOS is an id the model cannot sample,
  so every row samples all new tokens. A step is tunix's global step (rollout, rewards and
  advantages, update); generate is `RLCluster.generate`. tunix marks sampled pad ids (0) as
  padding, ~1/vocab of the tokens.

TRL runs as a competent CPU user would set it up: `bf16=False` and
`gradient_checkpointing=False`, both of which TRL 1.16 turns on by default. Its bf16 default
makes accelerate wrap the model's forward in `torch.autocast("cpu", torch.bfloat16)` (generation
included), and torch sends a bf16 GEMM to oneDNN only when `mkldnn_bf16_device_check()` holds
(AVX-512 BW/VL/DQ, or Arm bf16); otherwise it falls back to the scalar
`at::native::cpublas::cpublas_gemm_impl`, which a native stack sample of TRL's backward on
AVX2-only AMD EPYC machines found running on one thread. `--trl_defaults` keeps TRL's own
defaults, to reproduce that path. The first TRL step records, through a forward hook, whether
autocast was on, the activations' dtype, gradient checkpointing, deterministic algorithms,
torch's thread count and KV-cache use, and the run prints them next to TRL's time.

Medians over `--steps` steps after `--warmup` (2) untimed steps; grpojax's compile time is
reported apart. Run on a quiet machine:

  python experiments/bench_step.py --steps 7
  python experiments/bench_step.py --smoke      # tiny shapes, one step each: checks code paths

Needs the `reference` extra (torch, transformers, trl, datasets) for the torch peers and the
`peers-jax` extra (google-tunix) for tunix; without them only grpojax runs and each peer prints
why it was skipped. tunix 0.1.7 declares safetensors<0.8, and pip then moves transformers back
to a version that breaks beside the reference extra, so all peers run from a virtual
environment over the installed one, without tunix's copies of those packages (tunix's GRPO path
runs with safetensors 0.8):

  python -m venv --system-site-packages VENV && VENV/bin/pip install google-tunix==0.1.7
  VENV/bin/pip uninstall -y transformers safetensors tokenizers huggingface_hub
  VENV/bin/python experiments/bench_step.py --steps 7

Measured 2026-12-06 on a 2-core AMD EPYC machine with AVX-512 (so torch's oneDNN bf16 GEMMs
were usable here and TRL's bf16 slow path could not occur), jax 0.10.2, torch 2.13.0,
transformers 5.25.0, trl 1.16.0, accelerate 1.16.0, torch 2 threads, `--steps 5`, quiet machine:

  grpojax f32  : 3.033 s/step (sample 0.895, learn 2.133); compile 8.3 s (once)
  learn FLOP/s : 106.6 GFLOP/s (XLA cost analysis of the update: 227.4 GFLOP per step)
                 vs float32 matmul 208.7 GFLOP/s (51% of it)
  grpojax bf16 : 3.228 s/step (sample 0.973, learn 2.310)
  TRL 1.16.0   : 5.321 s/step (generate 1.733, rewards+advantages 0.013, learn 3.575),
                 bf16=False, gradient_checkpointing=False
  torch loop   : 3.099 s/step (generate 1.140, learn 1.959)
  speed-up grpojax / TRL: 1.75x; grpojax / plain PyTorch loop: 1.02x

So against a plain eager PyTorch loop on the same model grpojax is level: its sampler is faster
(0.90 s against 1.14 s), its update slower (2.13 s against 1.96 s; both near half the matmul
rate). TRL's extra time over the plain loop is in its learn phase and generate, not in a slow
GEMM path on this machine; on AVX2-only machines its bf16 default is what makes it ~30x slower.
"""

import dataclasses
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_peers  # noqa: E402  (experiments/step_peers.py, next to this script)

flags.DEFINE_integer("steps", 5, "Timed steps of each trainer; medians are reported.")
flags.DEFINE_integer(
  "warmup",
  2,
  "Untimed warm-up steps of each trainer before the timed ones "
  "(the first includes grpojax's compilation and torch's first-call set-up).",
)
flags.DEFINE_bool("smoke", False, "Tiny shapes, one warm-up and one timed step of everything.")
flags.DEFINE_bool("skip_trl", False, "Skip TRL's GRPOTrainer.")
flags.DEFINE_bool("skip_torch", False, "Skip the plain PyTorch loop.")
flags.DEFINE_bool("skip_tunix", False, "Skip tunix's GRPOLearner.")
flags.DEFINE_bool("skip_bf16", False, "Skip the extra grpojax run with bfloat16 compute.")
flags.DEFINE_bool(
  "trl_defaults",
  False,
  "Run TRL with its own defaults (bf16 autocast on CPU, gradient checkpointing) instead of "
  "float32 without checkpointing.",
)
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Shape:
  """The benchmark's model and batch."""

  prompts: int
  samples: int
  prompt_len: int
  new_tokens: int
  hidden: int
  intermediate: int
  layers: int
  heads: int
  kv_heads: int
  vocab: int = 512

  @property
  def rows(self) -> int:
    return self.prompts * self.samples


FULL = Shape(16, 8, 24, 64, hidden=256, intermediate=768, layers=4, heads=4, kv_heads=2)
SMOKE = Shape(2, 4, 8, 8, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)


def matmul_rate_flops(n: int = 1024):
  """Float32 FLOP/s of an n^3 matmul in XLA on this machine (median of 20)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(20):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / step_peers.median(times)


def make_checkpoint(path: str, shape: Shape) -> None:
  """Writes a random Qwen2 checkpoint of the benchmark's shape (EOS 1, no BOS)."""
  from grpojax import models

  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=shape.vocab,
    hidden_size=shape.hidden,
    intermediate_size=shape.intermediate,
    num_layers=shape.layers,
    num_heads=shape.heads,
    num_kv_heads=shape.kv_heads,
    head_dim=shape.hidden // shape.heads,
    attention_bias=True,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
    eos_token_id=step_peers.EOS,
  )
  models.save_pretrained(models.init_policy(cfg, seed=0), path)


def prompt_ids(shape: Shape, n: int) -> list[list[int]]:
  """`n` prompts of `shape.prompt_len` random ids, never pad 0 or EOS 1."""
  import numpy as np

  rs = np.random.RandomState(0)
  return [rs.randint(2, shape.vocab, shape.prompt_len).tolist() for _ in range(n)]


class _IdTokenizer:
  """Ids <-> decimal text ("17 4 255"); no EOS, so grpojax's sampler never stops early."""

  pad_id, bos_id, eos_ids = step_peers.PAD, None, ()

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    del skip_special_tokens
    return " ".join(map(str, ids))


def grpojax_config(shape: Shape, path: str, dtype: str, total_steps: int):
  """The run config of the benchmark: `configs.common.base('grpo')` at the benchmark's shape."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import configs.common  # the repository's config fragments (not an installed package)

  c = configs.common.base("grpo")
  c.model.checkpoint, c.model.dtype = path, dtype
  ro = c.rollout
  ro.prompts_per_step, ro.samples_per_prompt = shape.prompts, shape.samples
  ro.max_prompt_len, ro.max_new_tokens, ro.temperature = shape.prompt_len, shape.new_tokens, 1.0
  c.reward.overlong.max_len = shape.new_tokens
  c.objective.kl_coef = 0.0
  c.train.steps, c.train.microbatch_rows = total_steps, shape.rows
  c.warm_start.steps = 0
  c.optim.update(
    learning_rate=step_peers.LR,
    warmup_steps=0,
    schedule="constant",
    b2=step_peers.B2,
    weight_decay=0.0,
    grad_clip=1.0,
  )
  return c


def build_program(config, texts: list[str], vocab: int):
  """`train.build`'s program with the bench's task and tokenizer, and a stop-free sampler."""
  from flax import nnx

  from grpojax import train
  from grpojax.parallel import mesh as mesh_lib
  from grpojax.rl import rollout
  from grpojax.tasks import example

  mesh = mesh_lib.mesh_from_config(config.mesh)
  program = train.build(config, mesh)
  tok = _IdTokenizer(vocab)
  task = example.Task(
    name="even_ids",
    train=lambda i: example.Example(prompt=texts[i % len(texts)], answer="", solution=""),
    heldout=(),
    reward_fn=lambda text, ex: step_peers.fraction_even(tok.encode(text)),
  )
  run = dataclasses.replace(
    program.run, tokenizer=tok, task=task, encode_prompt=lambda ex: tok.encode(ex.prompt)
  )
  # The trainer's sampler graph and layout; only the stop ids differ (none).
  graphdef, shardings, _ = train._sampler_copy(run, program.layout, config, nnx.state(run.model))
  sampler = rollout.make_sampler(graphdef, config, tok, param_shardings=shardings, mesh=mesh)
  return program._replace(run=run, sampler=sampler)


def bench_grpojax(path, shape: Shape, steps, warmup, dtype: str, texts, measure_flops: bool):
  """Times `train._rl_step`; returns a dict of medians, compile time and (optionally) FLOPs."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from grpojax import train, types
  from grpojax.parallel import layout as layout_lib
  from grpojax.rl import pipeline, step

  config = grpojax_config(shape, path, dtype, warmup + steps)
  program = build_program(config, texts, shape.vocab)
  assert not program.use_reference
  state = program.init_state(nnx.state(program.run.model))
  key = jax.random.key(config.seed)
  # The trainer's rollout pipeline (synchronous here): step i samples with its own key.
  produce = lambda params, data, i: train._produce(
    program, config, params, data, i, jax.random.fold_in(key, i)
  )
  pipe = pipeline.build(
    config,
    produce,
    total_steps=warmup + steps,
    batch_shardings=program.batch_shardings,
    copy=layout_lib.copy_tree,
  )
  logs_all = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    key_i = jax.random.fold_in(key, i)
    state, logs, finite = train._rl_step(program, config, state, key_i, i, pipe)
    jax.block_until_ready(state.params)
    logs["step_s"] = time.perf_counter() - t
    assert finite, logs
    assert logs["response/length"] == shape.new_tokens, logs["response/length"]
    logs_all.append(logs)
  timed = logs_all[warmup:]
  out = {
    k: step_peers.median([lg[k] for lg in timed])
    for k in ("step_s", "time/sample_s", "time/learn_s")
  }
  out["compile_s"] = logs_all[0]["step_s"] - out["step_s"]
  out["reward"] = step_peers.median([lg["reward/mean"] for lg in timed])
  if measure_flops:
    # FLOPs of one learn phase: the update on the whole batch in one micro-batch (gradient plus
    # clipping and AdamW, whose FLOPs are negligible), from XLA's cost analysis.
    rows, n = shape.rows, shape.prompt_len + shape.new_tokens
    sds = lambda *s, dtype=jnp.int32: jax.ShapeDtypeStruct(s, dtype)
    batch = step.Batch(
      seqs=types.Sequences(sds(rows, n), sds(rows, n), sds(rows, shape.new_tokens)),
      sampler_logprobs=sds(rows, shape.new_tokens, dtype=jnp.float32),
      rewards=sds(rows, dtype=jnp.float32),
    )
    cost = program.update.lower(state, batch, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["update_flops"] = float(cost["flops"])
    embed = shape.vocab * shape.hidden
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    # 6ND over the non-embedding parameters, plus the tied LM head's matmul (forward + backward).
    out["analytic_flops"] = 6 * (n_params - embed) * rows * n + 3 * 2 * embed * rows * n
  return out


def main(argv):
  del argv
  import jax

  shape = SMOKE if FLAGS.smoke else FULL
  steps, warmup = (1, 1) if FLAGS.smoke else (FLAGS.steps, FLAGS.warmup)
  path = os.path.join(tempfile.mkdtemp(), "policy")
  make_checkpoint(path, shape)
  prompts = prompt_ids(shape, shape.prompts * 8)
  texts = [" ".join(map(str, ids)) for ids in prompts]
  print(
    f"shape: {shape.prompts} prompts x {shape.samples} samples, {shape.prompt_len} prompt "
    f"tokens, {shape.new_tokens} new tokens, one AdamW step on {shape.rows} rows; model hidden "
    f"{shape.hidden}, {shape.layers} layers, vocab {shape.vocab}; jax {jax.__version__}, "
    f"devices {jax.devices()}",
    flush=True,
  )

  ours = bench_grpojax(path, shape, steps, warmup, "float32", texts, measure_flops=True)
  print(
    f"grpojax f32  : {ours['step_s']:.3f} s/step (sample {ours['time/sample_s']:.3f}, learn "
    f"{ours['time/learn_s']:.3f}); compile {ours['compile_s']:.1f} s (once); reward "
    f"{ours['reward']:.3f}",
    flush=True,
  )
  peak = matmul_rate_flops(256 if FLAGS.smoke else 1024)
  achieved = ours["update_flops"] / ours["time/learn_s"]
  print(
    f"learn FLOP/s : {achieved / 1e9:.1f} GFLOP/s (XLA cost analysis of the update: "
    f"{ours['update_flops'] / 1e9:.1f} GFLOP per step; 6ND estimate "
    f"{ours['analytic_flops'] / 1e9:.1f}) vs float32 matmul {peak / 1e9:.1f} GFLOP/s "
    f"({100 * achieved / peak:.0f}% of it)",
    flush=True,
  )
  if not FLAGS.skip_bf16:
    bf = bench_grpojax(path, shape, steps, warmup, "bfloat16", texts, measure_flops=False)
    print(
      f"grpojax bf16 : {bf['step_s']:.3f} s/step (sample {bf['time/sample_s']:.3f}, learn "
      f"{bf['time/learn_s']:.3f}); compile {bf['compile_s']:.1f} s; bf16 compute, f32 params",
      flush=True,
    )

  jax_peer = None
  why_not = "--skip_tunix" if FLAGS.skip_tunix else step_peers.tunix_import_error()
  if why_not:
    print(f"tunix: skipped ({why_not})", flush=True)
  else:
    jax_peer = step_peers.bench_tunix(path, shape, steps, warmup, texts)
    print(
      f"tunix {jax_peer['version']:<7}: {jax_peer['step_s']:.3f} s/step (generate "
      f"{jax_peer['generate_s']:.3f}, rewards+advantages+learn {jax_peer['learn_s']:.3f}); "
      f"GRPOLearner, float32, one AdamW step per rollout",
      flush=True,
    )
    print(
      "  settings   : " + ", ".join(f"{k}={v}" for k, v in jax_peer["settings"].items()),
      flush=True,
    )

  theirs = plain = None
  missing_torch = step_peers.missing("torch", "transformers")
  if missing_torch:
    print(f"TRL and plain PyTorch loop: skipped (not importable: {', '.join(missing_torch)})")
  else:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(
      f"torch {torch.__version__}: {torch.get_num_threads()} threads, float32 parameters, "
      f"CPU capability {torch.backends.cpu.get_cpu_capability()}, oneDNN bf16 GEMM usable "
      f"{mkldnn_bf16}",
      flush=True,
    )
    missing_trl = step_peers.missing("trl", "datasets")
    if FLAGS.skip_trl or missing_trl:
      why = "--skip_trl" if FLAGS.skip_trl else f"not importable: {', '.join(missing_trl)}"
      print(f"TRL: skipped ({why})", flush=True)
    else:
      theirs = step_peers.bench_trl(path, shape, steps, warmup, texts, FLAGS.trl_defaults)
      s = theirs["settings"]
      print(
        f"TRL {theirs['version']:<9}: {theirs['step_s']:.3f} s/step (generate "
        f"{theirs['generate_s']:.3f}, rewards+advantages {theirs['score_s']:.3f}, learn "
        f"{theirs['learn_s']:.3f}, ~{ours['analytic_flops'] / theirs['learn_s'] / 1e9:.0f} "
        f"GFLOP/s by the 6ND estimate); no old-log-prob forward (one optimiser step per "
        f"generation)",
        flush=True,
      )
      print(f"  versions   : {theirs['versions']}", flush=True)
      print("  settings   : " + ", ".join(f"{k}={v}" for k, v in s.items()), flush=True)
      for phase, seen in theirs["observed"].items():
        print(
          f"  first step : {phase}: " + ", ".join(f"{k}={v}" for k, v in seen.items()), flush=True
        )
      print("  why        : " + step_peers.trl_why(s, mkldnn_bf16), flush=True)
    if FLAGS.skip_torch:
      print("torch loop: skipped (--skip_torch)", flush=True)
    else:
      plain = step_peers.bench_torch(path, shape, steps, warmup, prompts)
      print(
        f"torch loop   : {plain['step_s']:.3f} s/step (generate {plain['generate_s']:.3f}, learn "
        f"{plain['learn_s']:.3f}); {plain['versions']}, eager float32, no autocast, no "
        f"gradient checkpointing, torch.optim.AdamW",
        flush=True,
      )
  if theirs:
    print(f"speed-up grpojax / TRL (f32 step time): {theirs['step_s'] / ours['step_s']:.2f}x")
  if jax_peer:
    print(f"speed-up grpojax / tunix (f32 step time): {jax_peer['step_s'] / ours['step_s']:.2f}x")
  if plain:
    print(
      "speed-up grpojax / plain PyTorch loop (f32 step time): "
      f"{plain['step_s'] / ours['step_s']:.2f}x"
    )


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  app.run(main)
