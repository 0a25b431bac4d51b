"""Generated tokens per second: grpojax's jitted sampler vs transformers `generate`.

Both run the same random Qwen2-architecture checkpoint (vocab 512, hidden 256, intermediate 768,
4 layers, 4 heads, 2 kv heads, tied embeddings, float32) on 16 prompts x 8 samples of 24 prompt
tokens, sampling 64 new tokens each at temperature 1 with no early stop. grpojax's compile time is
reported apart; the decode phase's FLOP/s is printed next to this machine's float32 matmul rate,
which bounds what any sampler can reach. Run on a quiet machine:

  python experiments/bench_sampler.py
  python experiments/bench_sampler.py --smoke   # tiny shapes, one run each: checks code paths

The checkpoint is written by `grpojax.models.save_pretrained`. transformers needs the
`reference` extra (torch + transformers); without it only grpojax runs, with a printed note.
"""

import importlib.util
import os
import statistics
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("repeats", 5, "Timed runs of each sampler; medians are reported.")
flags.DEFINE_integer("prompts", 16, "Distinct prompts.")
flags.DEFINE_integer("samples", 8, "Samples per prompt.")
flags.DEFINE_integer("prompt_len", 24, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 64, "Generated tokens per row.")
flags.DEFINE_bool(
  "smoke", False, "Tiny model and shapes, one timed run of each sampler: checks code paths."
)
FLAGS = flags.FLAGS

# (hidden, intermediate, layers, heads, kv heads, vocab)
MODEL = (256, 768, 4, 4, 2, 512)
SMOKE_MODEL = (64, 128, 2, 4, 2, 512)


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def matmul_rate_flops(n: int = 1024):
  """Float32 FLOP/s of an n^3 matmul in XLA on this machine (median of 20)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  return 2 * n**3 / _median_time(lambda: f(a, a).block_until_ready(), 20)


def decode_flops_per_step(cfg, rows: int, cache_len: int) -> float:
  """Matmul FLOPs of one decode step: projections, attention over the cache, unembedding."""
  d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
  proj = d * (cfg.num_heads * h) * 2 + d * (cfg.num_kv_heads * h) * 2 + 3 * d * f
  attention = 2 * cfg.num_heads * h * cache_len
  per_token = 2 * cfg.num_layers * (proj + attention) + 2 * d * cfg.vocab_size
  return rows * per_token


def make_checkpoint(path: str, dims) -> None:
  """Writes a random Qwen2-architecture checkpoint with tied embeddings."""
  from grpojax import models

  d, f, layers, heads, kv, vocab = dims
  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=vocab,
    hidden_size=d,
    intermediate_size=f,
    num_layers=layers,
    num_heads=heads,
    num_kv_heads=kv,
    head_dim=d // heads,
    attention_bias=True,
    tie_word_embeddings=True,
    max_position_embeddings=1024,
  )
  models.save_pretrained(models.init_policy(cfg, seed=0), path)


def bench_transformers(path: str, prompts, g: int, n: int, repeats: int):
  """Median seconds of transformers `generate` on the same weights and rows."""
  import numpy as np
  import torch
  import transformers

  torch.manual_seed(0)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  # Same rows as grpojax: prompts repeated G times, contiguous.
  input_ids = torch.tensor(np.repeat(prompts, g, axis=0))

  def theirs():
    with torch.no_grad():
      return hf_model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,
      )

  theirs()  # warm-up
  return _median_time(theirs, repeats), (
    f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
    f"{transformers.__version__}"
  )


def main(_):
  import jax
  import numpy as np

  from grpojax import models, sampling

  smoke = FLAGS.smoke
  dims = SMOKE_MODEL if smoke else MODEL
  p, g, tp, n = (
    (2, 2, 8, 8) if smoke else (FLAGS.prompts, FLAGS.samples, FLAGS.prompt_len, FLAGS.new_tokens)
  )
  repeats = 1 if smoke else FLAGS.repeats
  path = os.path.join(tempfile.mkdtemp(), "policy")
  make_checkpoint(path, dims)
  model = models.from_pretrained(path)

  rs = np.random.RandomState(0)
  prompts = rs.randint(3, dims[-1], (p, tp))
  rows = p * g
  print(
    f"shape: {p} prompts x {g} samples, {tp} prompt tokens, {n} new tokens; model hidden "
    f"{dims[0]}, {dims[2]} layers; jax {jax.__version__}, devices {jax.devices()}"
  )

  # grpojax: compile once, then time whole generate calls.
  def ours(key_seed, new_tokens=n):
    out = sampling.generate(
      model,
      prompts.tolist(),
      key=jax.random.key(key_seed),
      max_new_tokens=new_tokens,
      num_samples=g,
      temperature=1.0,
      prompt_bucket=8,
    )
    return out.tokens.block_until_ready()

  t = time.perf_counter()
  ours(0)
  compile_s = time.perf_counter() - t
  ours(0, new_tokens=1)  # compile the prefill-only variant used to split prefill from decode
  ours_s = _median_time(lambda: ours(1), repeats)
  prefill_s = _median_time(lambda: ours(1, new_tokens=1), repeats)
  decode_step_s = (ours_s - prefill_s) / (n - 1)

  cfg = model.config
  cache_len = tp + n // 2  # mean cache length over the decode phase (8-aligned)
  achieved = decode_flops_per_step(cfg, rows, cache_len) / decode_step_s
  mm = 256 if smoke else 1024
  peak = matmul_rate_flops(mm)
  tokens = rows * n
  missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
  theirs_s = None
  if not missing:
    theirs_s, versions = bench_transformers(path, prompts, g, n, repeats)
  print(
    f"grpojax      : {ours_s:.3f} s  ({tokens / ours_s:,.0f} tok/s), compile {compile_s:.1f} s "
    f"(once), prefill {prefill_s * 1e3:.1f} ms, decode {decode_step_s * 1e3:.2f} ms/step"
  )
  if theirs_s is None:
    print(f"transformers : skipped (not importable: {', '.join(missing)})")
  else:
    print(
      f"transformers : {theirs_s:.3f} s  ({tokens / theirs_s:,.0f} tok/s), "
      f"{theirs_s / n * 1e3:.2f} ms/token step; {versions}"
    )
  print(
    f"decode FLOP/s: {achieved / 1e9:.1f} GFLOP/s vs float32 {mm}^3 matmul "
    f"{peak / 1e9:.1f} GFLOP/s ({100 * achieved / peak:.0f}% of it)"
  )
  if theirs_s is not None:
    print(f"speed-up grpojax / transformers: {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  app.run(main)
