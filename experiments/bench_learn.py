"""Learn-phase seconds of one RL update on completions of varied length: plain (every row at
`max_new_tokens`) against length-bucketed (`train.length_buckets`), in one run.

The batch: `--rows` rows of `--prompt_len` prompt tokens and completions whose lengths are drawn
uniformly from [`--min_new_tokens`, `--max_new_tokens`] (early stops), on a random
Qwen2-architecture policy (vocab 512, hidden 256, intermediate 768, 4 layers, 4 heads, 2 kv
heads, float32: `bench_step.py`'s model). The update is the trainer's (`rl.step.build_update`,
jitted, state donated): GRPO (group z-score, PPO clip, per-sequence token mean, no KL), one
AdamW step per rollout, `--microbatch_rows` rows per micro-batch. For each bucket count it
prints the median learn time, the compile time, and the ideal: (mean completion length /
max_new_tokens) x the plain learn time, i.e. a learn phase that pays only for real completion
tokens; the target is bucketed <= 1.3 x ideal. `positions` is the fraction of the plain update's
completion positions the bucketed one runs (the sort into micro-batches and the rounding up to
a bucket; `rl.length_buckets.learn_cost_fraction`). The prompt positions are paid in full by
both, so with long prompts the ideal is out of reach by their share.

  python experiments/bench_learn.py                    # 64 rows, lengths in [16, 512]
  python experiments/bench_learn.py --smoke            # tiny shapes: checks the code paths

Indicative only: 2026-12-06, a 2-core AMD EPYC CPU shared with other jobs (load average ~7, so
absolute times are inflated and noisy), jax 0.10.2, float32,
`--rows 32 --max_new_tokens 256 --min_new_tokens 8 --microbatch_rows 4 --buckets 4,8 --steps 2`:

  batch        : 32 rows, prompt 24, completions uniform in [8, 256] (mean 119.7), 4 rows per
                 micro-batch
  plain        : learn 6.042 s, compile 15.5 s
  ideal        : 2.825 s (mean length / max_new_tokens x plain learn)
  buckets 4    : learn 4.000 s, compile 29.5 s, positions 0.62, 1.42x ideal, 1.51x faster
  buckets 8    : learn 3.512 s, compile 50.5 s, positions 0.56, 1.24x ideal, 1.72x faster

The learn time follows the positions run (0.58 of plain for 0.56 of the positions); what is left
to the ideal is the sort's granularity (8 micro-batches here: more, smaller micro-batches get
closer) and the rounding up to a bucket. Compile time grows by about one plain compile per two
buckets.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from grpojax import models, objectives, types
from grpojax.rl import length_buckets, step

flags.DEFINE_integer("rows", 64, "Rows (prompts x samples) in the batch.")
flags.DEFINE_integer("samples", 8, "Samples per prompt (the group size).")
flags.DEFINE_integer("prompt_len", 24, "Prompt tokens per row.")
flags.DEFINE_integer("min_new_tokens", 16, "Shortest completion.")
flags.DEFINE_integer("max_new_tokens", 512, "Longest completion (the padded length N).")
flags.DEFINE_integer("microbatch_rows", 8, "Rows per micro-batch.")
flags.DEFINE_list("buckets", ["4", "8"], "Bucket counts to time (0, the plain update, always).")
flags.DEFINE_integer("steps", 3, "Timed updates per setting; medians are reported.")
flags.DEFINE_bool("smoke", False, "Tiny model and batch, one timed update.")
FLAGS = flags.FLAGS


def model_config(smoke: bool) -> models.ModelConfig:
  width = dict(hidden_size=64, intermediate_size=128, num_layers=2) if smoke else {}
  return models.ModelConfig(
    **{
      "model_type": "qwen2",
      "vocab_size": 512,
      "hidden_size": 256,
      "intermediate_size": 768,
      "num_layers": 4,
      "num_heads": 4,
      "num_kv_heads": 2,
      "head_dim": (64 if smoke else 256) // 4,
      "attention_bias": True,
      "tie_word_embeddings": True,
      **width,
    }
  )


def make_batch(rows, prompt_len, min_new, max_new, seed=0):
  """Rows with completion lengths uniform in [min_new, max_new]; returns (batch, lengths)."""
  rs = np.random.RandomState(seed)
  lengths = rs.randint(min_new, max_new + 1, rows)
  comp = (np.arange(max_new)[None] < lengths[:, None]).astype(np.int32)
  seqs = types.Sequences(
    tokens=jnp.asarray(rs.randint(2, 512, (rows, prompt_len + max_new)), jnp.int32),
    attn_mask=jnp.asarray(np.concatenate([np.ones((rows, prompt_len), np.int32), comp], 1)),
    completion_mask=jnp.asarray(comp),
  )
  batch = step.Batch(
    seqs=seqs,
    sampler_logprobs=jnp.asarray(-2.0 * comp, jnp.float32),
    rewards=jnp.asarray(rs.rand(rows), jnp.float32),
  )
  return batch, lengths


def time_update(graphdef, params, batch, *, num_buckets, rows_per_micro, samples, steps):
  """(median seconds per update, compile seconds) of the jitted, donated update."""
  objective_cfg = objectives.default_config("grpo")
  objective_cfg.kl_coef = 0.0
  objective = objectives.make(objective_cfg, group_size=samples)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-6, b2=0.98))
  cfg = step.UpdateConfig(
    group_size=samples,
    microbatch_rows=rows_per_micro,
    seq_chunk=1024,
    length_buckets=num_buckets,
  )
  update = jax.jit(step.build_update(graphdef, objective, optimizer, cfg), donate_argnums=(0,))

  def fresh_state():
    copy = jax.tree.map(jnp.copy, params)
    return step.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=copy,
      opt_state=optimizer.init(copy),
      objective_state=objective.init(),
      ref_params=None,
      data=None,
    )

  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = update.lower(fresh_state(), batch, key).compile()
  compile_s = time.perf_counter() - start
  state = fresh_state()
  state, metrics = compiled(state, batch, key)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return statistics.median(times), compile_s


def main(argv):
  del argv
  if FLAGS.smoke:
    rows, prompt_len, lo, hi, micro, steps = 8, 4, 2, 32, 2, 1
    bucket_counts = [4]
  else:
    rows, prompt_len, lo = FLAGS.rows, FLAGS.prompt_len, FLAGS.min_new_tokens
    hi, micro, steps = FLAGS.max_new_tokens, FLAGS.microbatch_rows, FLAGS.steps
    bucket_counts = [int(b) for b in FLAGS.buckets]
  samples = min(FLAGS.samples, rows)
  for count in bucket_counts:
    length_buckets.check_num_buckets(count, hi, field="--buckets")
  model = models.init_policy(model_config(FLAGS.smoke), seed=0)
  graphdef, params = nnx.split(model)
  batch, lengths = make_batch(rows, prompt_len, lo, hi)
  print(
    f"batch        : {rows} rows, prompt {prompt_len}, completions uniform in [{lo}, {hi}] "
    f"(mean {lengths.mean():.1f}), {micro} rows per micro-batch, jax {jax.__version__}, "
    f"{jax.devices()[0].platform}"
  )
  kw = dict(rows_per_micro=micro, samples=samples, steps=steps)
  plain_s, plain_compile = time_update(graphdef, params, batch, num_buckets=0, **kw)
  ideal = lengths.mean() / hi * plain_s
  print(f"plain        : learn {plain_s:.3f} s, compile {plain_compile:.1f} s")
  print(f"ideal        : {ideal:.3f} s (mean length / max_new_tokens x plain learn)")
  for count in bucket_counts:
    got_s, got_compile = time_update(graphdef, params, batch, num_buckets=count, **kw)
    positions = length_buckets.learn_cost_fraction(
      lengths, micro, length_buckets.bucket_lengths(hi, count)
    )
    print(
      f"buckets {count:<4} : learn {got_s:.3f} s, compile {got_compile:.1f} s, positions "
      f"{positions:.2f}, {got_s / ideal:.2f}x ideal, {plain_s / got_s:.2f}x faster than plain"
    )


if __name__ == "__main__":
  app.run(main)
