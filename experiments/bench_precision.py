"""bf16 vs FP8 matmuls: sampler throughput and RL gradient-step time, side by side in one run.

  python experiments/bench_precision.py --size=1.5b     # on a GPU (H100: FP8 tensor cores)
  python experiments/bench_precision.py --size=tiny     # anywhere (CPU emulates FP8: slower)

A random Qwen2-shaped policy in bfloat16 is timed three ways with identical inputs: "bf16"
(default matmuls), "fp8" (e4m3 weights per tensor, activations per token, e5m2 gradients) and
"fp8_block" (128x128 weight blocks, 1x128 activation groups); the sampler reads the FP8
kernels quantised once, as the trainer's rollout copy does. Reported: median wall time of the
jitted sampler (prefill + decode of `--new_tokens`) and of one micro-batch gradient of the GRPO
objective, each after one warm-up call, and each mode's ratio to bf16.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import objectives, sampling
from grpojax.models import config as config_lib
from grpojax.models import transformer
from grpojax.precision import policy
from grpojax.rl import sequences, steps

SIZES = {  # (hidden, intermediate, layers, heads, kv heads, vocab)
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


def _time_mode(cfg, mode, prompts, prompt_mask, seqs, batch, objective, args):
  """(sampler seconds, gradient seconds) of one precision mode."""
  model = transformer.Decoder(cfg, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  policy.set_matmul(model, mode)
  graphdef, params = nnx.split(model)
  # The sampler runs the trainer's copy as the trainer makes it: FP8 kernels quantised once.
  sample_graphdef, convert = policy.rollout_converter(model)
  sample_params = jax.jit(convert)(params)
  sp = sampling.SamplingParams(temperature=1.0)
  n = args.new_tokens

  def sample():
    # No stop tokens: every row decodes all new tokens.
    return sampling.generate_padded(
      sample_graphdef,
      sample_params,
      prompts,
      prompt_mask,
      jax.random.key(0),
      max_new_tokens=n,
      num_samples=args.samples,
      params=sp,
      stop_ids=(),
      pad_id=0,
    ).tokens

  fns = steps.build(
    graphdef,
    objective,
    optax.sgd(0.0),
    temperature=1.0,
    compute_entropy=False,
    seq_chunk=1024,
    vocab_chunk=None,
  )
  grad = lambda: fns.grad(params, seqs, batch, objective.init(), jax.random.key(1))[0]
  return _time(sample, args.repeats), _time(grad, args.repeats)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--samples", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=128)
  ap.add_argument("--new_tokens", type=int, default=256)
  ap.add_argument("--micro_rows", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--modes", default="default,fp8,fp8_block")
  args = ap.parse_args()
  d, f, layers, heads, kv, vocab = SIZES[args.size]
  cfg = config_lib.ModelConfig(
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
    f"{args.new_tokens} new tokens, grad on {args.micro_rows} rows"
  )
  rs = np.random.RandomState(0)
  prompts = jnp.asarray(rs.randint(3, vocab, (args.prompts, args.prompt_len)), jnp.int32)
  prompt_mask = jnp.ones_like(prompts)
  length = args.prompt_len + args.new_tokens
  seqs = sequences.Sequences(
    tokens=jnp.asarray(rs.randint(3, vocab, (args.micro_rows, length)), jnp.int32),
    attn_mask=jnp.ones((args.micro_rows, length), jnp.int32),
    completion_mask=jnp.ones((args.micro_rows, args.new_tokens), jnp.int32),
  )
  n = args.new_tokens
  batch = objectives.LossBatch(
    old_logprobs=jnp.full((args.micro_rows, n), -2.0),
    sampler_logprobs=jnp.full((args.micro_rows, n), -2.0),
    ref_logprobs=None,
    advantages=jnp.asarray(rs.randn(args.micro_rows, 1).repeat(n, 1), jnp.float32),
    mask=seqs.completion_mask,
    rewards=jnp.zeros((args.micro_rows,)),
    max_len=n,
  )
  obj_config = objectives.default_config("grpo")
  obj_config.kl.coef = 0.0
  objective = objectives.make(obj_config)
  rows = [
    (mode, *_time_mode(cfg, mode, prompts, prompt_mask, seqs, batch, objective, args))
    for mode in args.modes.split(",")
  ]
  base_s, base_g = rows[0][1], rows[0][2]
  tokens = args.prompts * args.samples * n
  print(f"{'mode':<10}{'sample s':>10}{'tok/s':>12}{'vs bf16':>9}{'grad s':>10}{'vs bf16':>9}")
  for mode, ts, tg in rows:
    name = "bf16" if mode == "default" else mode
    print(
      f"{name:<10}{ts:>10.3f}{tokens / ts:>12.0f}{base_s / ts:>8.2f}x{tg:>10.3f}"
      f"{base_g / tg:>8.2f}x"
    )


if __name__ == "__main__":
  main()
