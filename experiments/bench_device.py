"""One GRPO step on an accelerator, broken down like NeMo-RL's performance tables: generate,
score, learn and weight sync, with generation tokens/s per chip and the learn phase's MFU.

The policy is a random Qwen2 of Qwen2.5-0.5B's or Qwen2.5-1.5B's shape (`--model`; vocab 151,936,
tied embeddings), written once as a bf16 Hugging Face checkpoint by `models.save_pretrained`
(no network) and trained in bfloat16 compute with float32 parameters and AdamW state. The run is
`train.build(config, mesh)`, the builder the trainer uses, on `configs.common.base('grpo')` at the
bench's shape (GRPO without a reference model, `kl_coef=0`), with the bench's id tokenizer and a
reward of the fraction of even token ids. The sampler has no stop ids, so every row samples all
`--new_tokens` tokens. Each step is timed in four phases, in the trainer's order:

* weight sync: `program.to_sampler(params)`, the sampler's copy of the parameters (its layout,
  its compute dtype);
* generate: `rollout.sample_groups` with the trainer's sampler, less the time in the reward;
* score: the reward function over the decoded completions (host side);
* learn: `program.update`, the one jitted RL update (its own old-log-prob forward, the loss, the
  backward pass and the AdamW step over `--microbatch_rows`-row micro-batches).

MFU counts model FLOPs only: 6 x (matmul parameters, the tied LM head included) per trained token
plus 12 x layers x heads x head_dim x (mean attended length) for causal attention (arXiv
2204.02311, appendix B), over the learn time and the chip's dense bf16 peak (a table by device
kind, `--peak_tflops` overrides). The decode bound is the HBM bytes one decode step must read
(the sampler's weights and the filled KV cache) over the chip's bandwidth (`--hbm_tbps`).

On one H100 (or any single GPU or TPU host; rows are split over all local chips):

  python experiments/bench_device.py --model=1.5b && python experiments/bench_device.py --model=0.5b
  python experiments/bench_device.py --smoke    # CPU, tiny shape, seconds: checks code paths

Medians over `--steps` steps after `--warmup` untimed ones; the first step's extra time is
reported as compile time.
"""

import dataclasses
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_enum("model", "1.5b", ["0.5b", "1.5b"], "Qwen2.5 shape of the random policy.")
flags.DEFINE_integer("prompts", 32, "Prompts per step.")
flags.DEFINE_integer("samples", 8, "Samples per prompt (the GRPO group).")
flags.DEFINE_integer("prompt_len", 128, "Prompt tokens.")
flags.DEFINE_integer("new_tokens", 512, "Generated tokens per row (no early stop).")
flags.DEFINE_integer("microbatch_rows", 8, "Rows per micro-batch of the update.")
flags.DEFINE_enum("remat", "none", ["none", "full", "dots", "dots_all"], "Trainer remat.")
flags.DEFINE_integer("steps", 3, "Timed steps; medians are reported.")
flags.DEFINE_integer("warmup", 1, "Untimed steps first (the first one compiles).")
flags.DEFINE_float("peak_tflops", 0.0, "Dense bf16 TFLOP/s per chip (0: from the table).")
flags.DEFINE_float("hbm_tbps", 0.0, "HBM TB/s per chip (0: from the table).")
flags.DEFINE_bool("smoke", False, "Tiny shape, one warm-up and one timed step, on CPU.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """A Qwen2 shape (tied embeddings, q/k/v biases)."""

  hidden: int
  intermediate: int
  layers: int
  heads: int
  kv_heads: int
  head_dim: int
  vocab: int


MODELS = {
  "0.5b": ModelShape(896, 4864, 24, 14, 2, 64, 151936),  # Qwen2.5-0.5B
  "1.5b": ModelShape(1536, 8960, 28, 12, 2, 128, 151936),  # Qwen2.5-1.5B
}
SMOKE_MODEL = ModelShape(64, 128, 2, 4, 2, 16, 512)

# Dense bf16 TFLOP/s and HBM TB/s per chip from the vendors' data sheets, by a substring of
# `jax.Device.device_kind` (the first match wins, so the specific names come first).
PEAKS = (
  ("H100 PCIe", 756.0, 2.0),
  ("H100 NVL", 835.0, 3.9),
  ("H100", 989.0, 3.35),  # SXM
  ("H200", 989.0, 4.8),
  ("H800", 989.0, 3.35),
  ("GH200", 989.0, 4.0),
  ("B200", 2250.0, 8.0),
  ("A100-SXM4-40GB", 312.0, 1.555),
  ("A100", 312.0, 2.039),
  ("L4", 121.0, 0.3),
  ("TPU v4", 275.0, 1.2),
  ("TPU v5 lite", 197.0, 0.819),  # v5e
  ("TPU v5", 459.0, 2.765),  # v5p
  ("TPU v6 lite", 918.0, 1.64),  # Trillium
)
EOS, PAD = 1, 0


def chip_peaks(device_kind: str) -> tuple[float, float] | None:
  """(dense bf16 FLOP/s, HBM bytes/s) of one chip of `device_kind`, or None if not in the table."""
  for name, tflops, tbps in PEAKS:
    if name.lower() in device_kind.lower():
      return tflops * 1e12, tbps * 1e12
  return None


def matmul_params(m: ModelShape) -> int:
  """Parameters that take part in matmuls: q/k/v/o and MLP kernels, and the tied embedding once
  (as the LM head; the input lookup is a gather)."""
  attn = m.hidden * (m.heads + 2 * m.kv_heads) * m.head_dim + m.heads * m.head_dim * m.hidden
  return m.layers * (attn + 3 * m.hidden * m.intermediate) + m.vocab * m.hidden


def learn_flops_per_token(m: ModelShape, mean_context: float) -> float:
  """Model FLOPs of one trained token (forward + backward): 6 x matmul parameters + 12 x layers
  x heads x head_dim x mean attended context."""
  return 6 * matmul_params(m) + 12 * m.layers * m.heads * m.head_dim * mean_context


def decode_bytes_per_step(m: ModelShape, rows: int, filled: float, weight_bytes: int) -> float:
  """HBM bytes one decode step reads at least: every weight once and the filled bf16 KV cache
  (`filled` slots per row on average)."""
  kv = rows * m.layers * 2 * m.kv_heads * m.head_dim * filled * 2
  return weight_bytes + kv


class _IdTokenizer:
  """Ids <-> decimal text ("17 4 255"); no EOS, so the sampler never stops early."""

  pad_id, bos_id, eos_ids = PAD, None, ()

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str) -> list[int]:
    return [int(t) for t in text.split()]

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    del skip_special_tokens
    return " ".join(map(str, ids))


def make_checkpoint(path: str, m: ModelShape, max_len: int) -> None:
  """Writes a random Qwen2 checkpoint of shape `m` in bfloat16 (EOS 1, no BOS)."""
  import jax.numpy as jnp

  from grpojax import models

  cfg = models.ModelConfig(
    model_type="qwen2",
    vocab_size=m.vocab,
    hidden_size=m.hidden,
    intermediate_size=m.intermediate,
    num_layers=m.layers,
    num_heads=m.heads,
    num_kv_heads=m.kv_heads,
    head_dim=m.head_dim,
    attention_bias=True,
    tie_word_embeddings=True,
    max_position_embeddings=max(max_len, 1024),
    eos_token_id=EOS,
  )
  models.save_pretrained(models.init_policy(cfg, seed=0), path, dtype=jnp.bfloat16)


def run_config(path: str, total_steps: int):
  """`configs.common.base('grpo')` at the bench's shape, bf16 compute."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import configs.common  # the repository's config fragments (not an installed package)

  c = configs.common.base("grpo")
  c.model.checkpoint, c.model.dtype, c.model.remat = path, "bfloat16", FLAGS.remat
  ro = c.rollout
  ro.prompts_per_step, ro.samples_per_prompt = FLAGS.prompts, FLAGS.samples
  ro.max_prompt_len, ro.max_new_tokens, ro.temperature = FLAGS.prompt_len, FLAGS.new_tokens, 1.0
  c.reward.overlong.max_len = FLAGS.new_tokens
  c.objective.kl_coef = 0.0
  c.train.steps, c.train.microbatch_rows = total_steps, FLAGS.microbatch_rows
  c.warm_start.steps = 0
  c.optim.update(learning_rate=1e-6, warmup_steps=0, schedule="constant", weight_decay=0.0)
  return c


def build_program(config, vocab: int, reward_seconds: list[float]):
  """`train.build`'s program with the bench's prompts, tokenizer and timed reward, and the
  trainer's sampler without stop ids."""
  import numpy as np
  from flax import nnx

  from grpojax import train
  from grpojax.parallel import mesh as mesh_lib
  from grpojax.rl import rollout
  from grpojax.tasks import example

  mesh = mesh_lib.mesh_from_config(config.mesh)
  program = train.build(config, mesh)
  tok = _IdTokenizer(vocab)
  rs = np.random.RandomState(0)
  texts = [
    " ".join(map(str, rs.randint(2, vocab, config.rollout.max_prompt_len))) for _ in range(64)
  ]

  def even_fraction(text, ex):
    del ex
    t = time.perf_counter()
    ids = tok.encode(text)
    reward = sum(1 for i in ids if i % 2 == 0) / max(len(ids), 1)
    reward_seconds.append(time.perf_counter() - t)
    return reward

  task = example.Task(
    name="even_ids",
    train=lambda i: example.Example(prompt=texts[i % len(texts)], answer="", solution=""),
    heldout=(),
    reward_fn=even_fraction,
  )
  run = dataclasses.replace(
    program.run, tokenizer=tok, task=task, encode_prompt=lambda ex: tok.encode(ex.prompt)
  )
  graphdef, shardings, _ = train._sampler_copy(run, program.layout, config, nnx.state(run.model))
  sampler = rollout.make_sampler(graphdef, config, tok, param_shardings=shardings, mesh=mesh)
  return program._replace(run=run, sampler=sampler)


def time_steps(program, config, steps: int, warmup: int, reward_seconds: list[float]):
  """Runs `warmup + steps` RL steps phase by phase; returns per-step phase times (seconds), the
  bytes of the sampler's copy on the first chip and the last update's metrics."""
  import jax
  import numpy as np
  from flax import nnx

  from grpojax.rl import curricula, rollout

  state = program.init_state(nnx.state(program.run.model))
  key = jax.random.key(config.seed)
  source = curricula.bind(program.source, None)
  edit = rollout.group_edit(config)
  records, weight_bytes, metrics = [], 0, {}
  for i in range(warmup + steps):
    key_i = jax.random.fold_in(key, i)
    t0 = time.perf_counter()
    sampler_params = jax.block_until_ready(program.to_sampler(state.params))
    t1 = time.perf_counter()
    del reward_seconds[:]
    ro = rollout.sample_groups(
      program.run,
      program.layout,
      program.sampler,
      sampler_params,
      config,
      source,
      state.data,
      jax.random.fold_in(key_i, 0),
      edit,
    )
    jax.block_until_ready(ro.batch)
    t2 = time.perf_counter()
    # What one chip holds (all of it when the sampler's copy is replicated, a shard when split).
    chip = jax.devices()[0]
    weight_bytes = sum(
      s.data.nbytes
      for x in jax.tree.leaves(sampler_params)
      for s in x.addressable_shards
      if s.device == chip
    )
    del sampler_params
    state = state._replace(data=ro.data)
    state, metrics = program.update(state, ro.batch, key_i)
    nonfinite = float(metrics["update/nonfinite"])  # waits for the update
    t3 = time.perf_counter()
    if nonfinite:
      raise FloatingPointError(f"step {i}: non-finite update ({metrics})")
    lengths = np.asarray(jax.device_get(ro.batch.seqs.completion_mask)).sum(axis=1)
    if lengths.min() != config.rollout.max_new_tokens:
      raise RuntimeError(f"step {i}: completions stopped early (lengths {sorted(set(lengths))})")
    score = sum(reward_seconds)
    records.append(
      dict(sync=t1 - t0, generate=t2 - t1 - score, score=score, learn=t3 - t2, step=t3 - t0)
    )
  return records, weight_bytes, metrics


def peak_memory_gib(device) -> float | None:
  """The device's peak bytes in use so far, in GiB (None where the backend does not say)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return stats["peak_bytes_in_use"] / 2**30


def main(argv):
  del argv
  import jax
  from flax import nnx

  if FLAGS.smoke:
    FLAGS.prompts, FLAGS.samples, FLAGS.prompt_len, FLAGS.new_tokens = 2, 4, 8, 8
    FLAGS.microbatch_rows, FLAGS.steps, FLAGS.warmup = 4, 1, 1
  m = SMOKE_MODEL if FLAGS.smoke else MODELS[FLAGS.model]
  name = "tiny" if FLAGS.smoke else FLAGS.model
  devices = jax.devices()
  chips, kind = len(devices), devices[0].device_kind
  table = chip_peaks(kind)
  peak_flops = FLAGS.peak_tflops * 1e12 or (table[0] if table else 0.0)
  hbm = FLAGS.hbm_tbps * 1e12 or (table[1] if table else 0.0)
  rows, n = FLAGS.prompts * FLAGS.samples, FLAGS.prompt_len + FLAGS.new_tokens
  print(
    f"device: {chips} x {kind} ({jax.default_backend()}), jax {jax.__version__}; peak "
    + (
      f"{peak_flops / 1e12:.0f} TFLOP/s bf16, {hbm / 1e12:.2f} TB/s HBM per chip"
      if peak_flops
      else "unknown (set --peak_tflops and --hbm_tbps)"
    )
    + (" (from --peak_tflops/--hbm_tbps)" if FLAGS.peak_tflops or FLAGS.hbm_tbps else ""),
    flush=True,
  )
  print(
    f"model: random Qwen2 {name} (hidden {m.hidden}, {m.layers} layers, {m.heads} heads, "
    f"{m.kv_heads} kv heads, vocab {m.vocab}), bf16 compute, f32 params and AdamW; "
    f"{FLAGS.prompts} prompts x {FLAGS.samples} samples, {FLAGS.prompt_len} prompt + "
    f"{FLAGS.new_tokens} new tokens, micro-batches of {FLAGS.microbatch_rows} rows, "
    f"remat {FLAGS.remat}",
    flush=True,
  )
  path = os.path.join(tempfile.mkdtemp(), "policy")
  t = time.perf_counter()
  make_checkpoint(path, m, n)
  config = run_config(path, FLAGS.warmup + FLAGS.steps)
  reward_seconds: list[float] = []
  program = build_program(config, m.vocab, reward_seconds)
  print(f"checkpoint written and program built in {time.perf_counter() - t:.1f} s", flush=True)
  # The MFU's parameter count must be the built model's: its 2-D parameters are the kernels and
  # the tied embedding (biases and norm scales are 1-D).
  built = sum(
    x.size for x in jax.tree.leaves(nnx.state(program.run.model, nnx.Param)) if x.ndim == 2
  )
  if built != matmul_params(m):
    raise AssertionError(f"matmul parameters: model {built:,} vs formula {matmul_params(m):,}")
  records, weight_bytes, _ = time_steps(program, config, FLAGS.steps, FLAGS.warmup, reward_seconds)
  med = {k: statistics.median(r[k] for r in records[FLAGS.warmup :]) for k in records[0]}
  compile_s = records[0]["step"] - med["step"]

  gen_tokens = rows * FLAGS.new_tokens
  gen_rate = gen_tokens / med["generate"] / chips
  # The update trains on every position of every row (prompt tokens included in the forward).
  mean_context = (n + 1) / 2
  learn_flops = learn_flops_per_token(m, mean_context) * rows * n
  mfu = learn_flops / med["learn"] / chips / peak_flops if peak_flops else None
  # The mean decode step attends prompt + half the new tokens; bytes are per chip (rows split).
  bound_bytes = decode_bytes_per_step(
    m, rows // chips, FLAGS.prompt_len + FLAGS.new_tokens / 2, weight_bytes
  )
  decode_step = med["generate"] / FLAGS.new_tokens
  bound_step = bound_bytes / hbm if hbm else None
  mem = peak_memory_gib(devices[0])

  fmt = lambda x, spec: "n/a" if x is None else format(x, spec)
  print(
    "| model | chips | rows x new tokens | step s | generate s | score s | learn s | "
    "weight sync s | gen tok/s/chip | learn MFU | peak GiB/chip |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  print(
    f"| {name} | {chips} x {kind} | {rows} x {FLAGS.new_tokens} | {med['step']:.3f} | "
    f"{med['generate']:.3f} | {med['score']:.3f} | {med['learn']:.3f} | {med['sync']:.3f} | "
    f"{gen_rate:,.0f} | {fmt(mfu and 100 * mfu, '.1f')}% | {fmt(mem, '.1f')} |",
    flush=True,
  )
  print(
    f"share of step: generate {100 * med['generate'] / med['step']:.0f}%, score "
    f"{100 * med['score'] / med['step']:.0f}%, learn {100 * med['learn'] / med['step']:.0f}%, "
    f"weight sync {100 * med['sync'] / med['step']:.0f}%; compile {compile_s:.1f} s (first step)"
  )
  print(
    f"learn: {learn_flops / 1e12:.3g} model TFLOP per step ({rows * n:,} tokens), "
    f"{learn_flops / med['learn'] / chips / 1e12:.3g} TFLOP/s per chip, MFU "
    f"{fmt(mfu and 100 * mfu, '.1f')}%"
  )
  print(
    f"decode: {1e3 * decode_step:.2f} ms per step at {rows // chips} rows per chip; HBM bound "
    f"{fmt(bound_step and 1e3 * bound_step, '.3g')} ms ({bound_bytes / 1e9:.3g} GB read per "
    f"step: sampler weights {weight_bytes / 1e9:.3g} GB + mean KV cache), "
    f"{fmt(bound_step and decode_step / bound_step, '.1f')}x the bound"
  )


if __name__ == "__main__":
  app.run(main)
