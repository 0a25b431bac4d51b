"""Generated tokens per second: grpojax's jitted sampler vs transformers `generate`.

Both run the same random Qwen2-architecture checkpoint (vocab 512, hidden 256, intermediate 768,
4 layers, 4 heads, 2 kv heads, tied embeddings, float32) on 16 prompts x 8 samples of 24 prompt
tokens, sampling 64 new tokens each (or each length of `--new_tokens`) at temperature 1 with no
early stop. For each length it prints grpojax's compile time (ahead-of-time lowering and
compilation, apart from any run), its decode time per step, and the decode phase's FLOP/s next to
this machine's float32 matmul rate, which bounds what any sampler can reach. Run on a quiet
machine:

  python experiments/bench_sampler.py
  python experiments/bench_sampler.py --new_tokens=64,512,2048
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
flags.DEFINE_list("new_tokens", ["64"], "Generated tokens per row: one run per length.")
flags.DEFINE_bool(
  "smoke", False, "Tiny model and shapes, one timed run of each sampler: checks code paths."
)
FLAGS = flags.FLAGS

# (hidden, intermediate, layers, heads, kv heads, vocab)
MODEL = (256, 768, 4, 4, 2, 512)
SMOKE_MODEL = (64, 128, 2, 4, 2, 512)
# A cache (8 + 24 slots) longer than the cache block: the smoke run reads it block by block.
SMOKE_NEW_TOKENS = (24,)
SMOKE_CACHE_BLOCK = 8


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
    max_position_embeddings=8192,
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


def parse_lengths(values) -> list[int]:
  """`--new_tokens` as positive ints, or a ValueError naming the flag."""
  try:
    lengths = [int(v) for v in values]
  except ValueError:
    lengths = []
  if not lengths or min(lengths) < 2:
    raise ValueError(f"--new_tokens must be integers >= 2, got {','.join(values)}")
  return lengths


def compile_seconds(model, prompts, g: int, n: int) -> float:
  """Seconds to lower and compile `sampling.sample` for `n` new tokens, without running it."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from grpojax import sampling

  graphdef, params = nnx.split(model)
  tokens, mask = sampling.pad_prompts(prompts.tolist(), pad_id=0, bucket=8)
  t = time.perf_counter()
  sampling.sample.lower(
    graphdef,
    params,
    jnp.asarray(tokens),
    jnp.asarray(mask),
    jax.random.key(0),
    method=sampling.Sample(1.0),
    max_new_tokens=n,
    num_samples=g,
    stop_ids=(),
    pad_id=0,
  ).compile()
  return time.perf_counter() - t


def main(_):
  import jax
  import numpy as np

  from grpojax import models, sampling

  smoke = FLAGS.smoke
  dims = SMOKE_MODEL if smoke else MODEL
  p, g, tp = (2, 2, 8) if smoke else (FLAGS.prompts, FLAGS.samples, FLAGS.prompt_len)
  lengths = list(SMOKE_NEW_TOKENS) if smoke else parse_lengths(FLAGS.new_tokens)
  repeats = 1 if smoke else FLAGS.repeats
  path = os.path.join(tempfile.mkdtemp(), "policy")
  make_checkpoint(path, dims)
  model = models.from_pretrained(
    path, cache_block=SMOKE_CACHE_BLOCK if smoke else models.transformer.CACHE_BLOCK
  )

  rs = np.random.RandomState(0)
  prompts = rs.randint(3, dims[-1], (p, tp))
  rows = p * g
  print(
    f"shape: {p} prompts x {g} samples, {tp} prompt tokens, {','.join(map(str, lengths))} new "
    f"tokens; model hidden {dims[0]}, {dims[2]} layers, cache block {model.cache_block}; jax "
    f"{jax.__version__}, devices {jax.devices()}"
  )
  mm = 256 if smoke else 1024
  peak = matmul_rate_flops(mm)
  missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]

  def ours(key_seed, new_tokens):
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

  ours(0, 1)  # the prefill-only variant, which splits prefill from decode
  prefill_s = _median_time(lambda: ours(1, 1), repeats)
  cfg = model.config
  for n in lengths:
    compile_s = compile_seconds(model, prompts, g, n)
    ours(0, n)  # compiles again (the jit cache is apart from ahead-of-time compilation) and warms
    ours_s = _median_time(lambda n=n: ours(1, n), repeats)
    decode_step_s = max(ours_s - prefill_s, 0.0) / (n - 1)
    # Attention reads the filled cache slots: tp + n / 2 of them on average over the decode.
    achieved = decode_flops_per_step(cfg, rows, tp + n // 2) / max(decode_step_s, 1e-9)
    tokens = rows * n
    print(f"-- {n} new tokens")
    print(
      f"grpojax      : {ours_s:.3f} s  ({tokens / ours_s:,.0f} tok/s), compile {compile_s:.1f} s "
      f"(once), prefill {prefill_s * 1e3:.1f} ms, decode {decode_step_s * 1e3:.2f} ms/step"
    )
    theirs_s = None
    if missing:
      print(f"transformers : skipped (not importable: {', '.join(missing)})")
    else:
      theirs_s, versions = bench_transformers(path, prompts, g, n, repeats)
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
