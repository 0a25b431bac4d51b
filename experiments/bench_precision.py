"""bf16 vs FP8 matmuls: sampler throughput and RL update time, side by side in one run.

  python experiments/bench_precision.py --size=1.5b     # on a GPU (H100: FP8 tensor cores)
  python experiments/bench_precision.py --size=tiny     # anywhere (CPU emulates FP8: slower)
  python experiments/bench_precision.py --smoke         # a few seconds on a CPU: code paths only

A random Qwen2-shaped policy in bfloat16 is timed three ways with identical inputs: "bf16"
(default matmuls), "fp8" (e4m3 weights per tensor, activations per token, e5m2 gradients) and
"fp8_block" (128x128 weight blocks, 1x128 activation groups). Each mode builds its policy with
`models.init_policy(..., precision=PrecisionPolicy(matmul=mode))`; the sampler runs the
sampler's copy as the trainer makes it (`precision.sampler_policy`, `models.policy_graphdef`,
`precision.sampler_params`: FP8 kernels quantised once). Reported: median wall time of the
jitted sampler (`sampling.sample`: prefill + decode of `--new_tokens`) and of one RL update on
`--micro_rows` rows (`rl.step.build_update`, the trainer's update: one micro-batch's forward and
backward of the GRPO objective, global-norm clipping and AdamW), each after one warm-up call, and
each mode's ratio to bf16. The update replaces the earlier "grad" column (a bare micro-batch
gradient, which no longer exists as a function of its own), so its times include the optimiser
step; the H100 figures in experiments/precision.md were measured with the gradient alone.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import models, objectives, precision, sampling, types
from grpojax.rl import step

SIZES = {  # (hidden, intermediate, layers, heads, kv heads, vocab)
  "smoke": (64, 128, 1, 4, 2, 256),
  "tiny": (256, 768, 4, 4, 2, 512),
  "0.5b": (896, 4864, 24, 14, 2, 151936),
  "1.5b": (1536, 8960, 28, 12, 2, 151936),
  "7b": (3584, 18944, 28, 28, 4, 152064),
}


def _time(fn, repeats):
  jax.block_until_ready(fn())  # compile + warm up
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t0)
  return statistics.median(out)


def _time_mode(cfg, mode, prompts, prompt_mask, batch, objective, args):
  """(sampler seconds, update seconds) of one precision mode."""
  model = models.init_policy(
    cfg,
    seed=0,
    dtype=jnp.bfloat16,
    param_dtype=jnp.bfloat16,
    precision=precision.PrecisionPolicy(matmul=mode),
  )
  graphdef, params = nnx.split(model)
  # The sampler runs the trainer's copy as the trainer makes it: FP8 kernels quantised once.
  sample_policy = precision.sampler_policy(model.precision)
  sample_graphdef = models.policy_graphdef(model, sample_policy)
  sample_params = jax.jit(
    lambda p: precision.sampler_params(p, sample_policy, compute_dtype=model.dtype)
  )(params)
  n = args.new_tokens

  def sample():
    # No stop tokens: every row decodes all new tokens.
    return sampling.sample(
      sample_graphdef,
      sample_params,
      prompts,
      prompt_mask,
      jax.random.key(0),
      method=sampling.Sample(1.0),
      max_new_tokens=n,
      num_samples=args.samples,
      stop_ids=(),
      pad_id=0,
    ).tokens

  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-6))
  update_cfg = step.UpdateConfig(
    group_size=args.samples, microbatch_rows=args.micro_rows, temperature=1.0, seq_chunk=1024
  )
  # Donated, as in the trainer: the state is not held twice (AdamW's moments double it).
  update = jax.jit(
    step.build_update(graphdef, objective, optimizer, update_cfg), donate_argnums=(0,)
  )
  state = step.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    objective_state=objective.init(),
    ref_params=None,
    data=None,
  )
  sample_s = _time(sample, args.repeats)

  def learn():
    nonlocal state
    state, metrics = update(state, batch, jax.random.key(1))
    return metrics["loss"]

  # AdamW's moments start in the bfloat16 of the parameters and come out of the first update in
  # float32, so the second call compiles again: both calls are warm-up.
  jax.block_until_ready(learn())
  return sample_s, _time(learn, args.repeats)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--samples", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=128)
  ap.add_argument("--new_tokens", type=int, default=256)
  ap.add_argument("--micro_rows", type=int, default=16, help="a multiple of --samples")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--modes", default="default,fp8,fp8_block")
  ap.add_argument(
    "--smoke",
    action="store_true",
    help="size 'smoke', 2x2 samples, 8 + 8 tokens, update on 4 rows, one timed call",
  )
  args = ap.parse_args()
  if args.smoke:
    args.size, args.prompts, args.samples, args.prompt_len = "smoke", 2, 2, 8
    args.new_tokens, args.micro_rows, args.repeats = 8, 4, 1
  if args.micro_rows % args.samples:
    ap.error("--micro_rows must be a multiple of --samples (whole groups per update)")
  d, f, layers, heads, kv, vocab = SIZES[args.size]
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
    tie_word_embeddings=False,
  )
  print(
    f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), size {args.size}, "
    f"{args.prompts}x{args.samples} samples, prompt {args.prompt_len}, "
    f"{args.new_tokens} new tokens, update on {args.micro_rows} rows"
  )
  rs = np.random.RandomState(0)
  prompts = jnp.asarray(rs.randint(3, vocab, (args.prompts, args.prompt_len)), jnp.int32)
  prompt_mask = jnp.ones_like(prompts)
  rows, n = args.micro_rows, args.new_tokens
  length = args.prompt_len + n
  batch = step.Batch(
    seqs=types.Sequences(
      tokens=jnp.asarray(rs.randint(3, vocab, (rows, length)), jnp.int32),
      attn_mask=jnp.ones((rows, length), jnp.int32),
      completion_mask=jnp.ones((rows, n), jnp.int32),
    ),
    sampler_logprobs=jnp.full((rows, n), -2.0),
    rewards=jnp.asarray(rs.rand(rows), jnp.float32),
  )
  obj_config = objectives.default_config("grpo")
  obj_config.kl_coef = 0.0
  objective = objectives.make(obj_config, group_size=args.samples)
  results = [
    (mode, *_time_mode(cfg, mode, prompts, prompt_mask, batch, objective, args))
    for mode in args.modes.split(",")
  ]
  base_s, base_u = results[0][1], results[0][2]
  tokens = args.prompts * args.samples * n
  print(f"{'mode':<10}{'sample s':>10}{'tok/s':>12}{'vs bf16':>9}{'update s':>10}{'vs bf16':>9}")
  for mode, ts, tu in results:
    name = "bf16" if mode == "default" else mode
    print(
      f"{name:<10}{ts:>10.3f}{tokens / ts:>12.0f}{base_s / ts:>8.2f}x{tu:>10.3f}"
      f"{base_u / tu:>8.2f}x"
    )


if __name__ == "__main__":
  main()
