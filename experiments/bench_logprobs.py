"""Peak memory and time of chunked vs naive per-token log-probs, forward + backward, on CPU.

Training needs the gradient of a per-token loss with respect to both the hidden states and the
unembedding, so each variant is `jax.value_and_grad(Σ w·log π(y), argnums=(hidden, unembed))`:

  naive:   logits = h @ U  [N, V] float32, log_softmax, gather.
  chunked: grpojax.models.logprobs.token_logprobs_and_entropy (compute_entropy=False).

Peak memory is reported two ways: XLA's compiled memory analysis (temp + argument + output
bytes of the jitted program) and the process's peak-RSS growth over its resident size once the
inputs exist. Each variant runs in its own fresh subprocess, one after the other (two timed jobs
at once slow each other down), so the RSS peaks do not mix. Time is the median of `--repeats`
runs after a compile and a warm-up run; the median process CPU time (all threads) is printed
too, as it varies less than wall time when other jobs share the cores.

Default shape: Qwen2-0.5B's head (D 896, V 151,936), B 4 x T 2048 = 8,192 tokens, float32. The
naive program needs ~15 GiB there (5 GiB of logits, its softmax and its gradient); it is skipped,
with a message, when the machine has less memory available than XLA's estimate plus a margin,
and `--tokens` shrinks the problem.

Measured 2026-11 on the 2-core, 24 GiB CPU machine, quiet, `--repeats=2`:

  seq_chunk 8192, vocab_chunk 4096 (the defaults):
    XLA peak      naive 14.98 GiB   chunked 1.50 GiB   ratio 0.100
    peak RSS      naive 14.88 GiB   chunked 1.49 GiB   ratio 0.100
    median time   naive 54.6 s      chunked 51.3 s     ratio 0.94 (CPU time ratio 1.00)

Earlier runs while other jobs shared the cores (load average 4-7; runs varied by up to 25%):
  defaults: median time naive 76.8 s, chunked 91.1 s, ratio 1.19
  seq_chunk 256, vocab_chunk None (one [256, V] block; each chunk adds a [D, V] dU partial):
    XLA peak      naive 14.98 GiB   chunked 1.72 GiB   ratio 0.115
    median time   naive 77.3 s      chunked 261.8 s    ratio 3.4 (an interleaved 2,048-token
                  probe put its CPU time at 1.45x naive, the vocabulary-major one at 1.18x)

These figures predate the current `token_logprobs_and_entropy` (it has since learnt per-token
temperatures); rerun the script for current ones.

Chunked work is four logits-sized matmuls (forward, recompute, dh, dU) against naive's three,
so ~1.1-1.3x is the expected range; the naive program makes up part of it by streaming its
5 GiB arrays through memory several times.

  python experiments/bench_logprobs.py                  # both variants, default shape
  python experiments/bench_logprobs.py --tokens=2048    # smaller
  python experiments/bench_logprobs.py --seq_chunk=512 --vocab_chunk=32768
  python experiments/bench_logprobs.py --smoke          # 256 tokens, D 64, V 1,024: code paths
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

_GIB = 2**30


def _rss_bytes():
  """Current resident set size of this process, from /proc."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  return 0


def _available_bytes():
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  return 0


def _run_variant(args):
  """Runs one variant in this process; returns a dict of measurements."""
  import jax
  import jax.numpy as jnp

  from grpojax.models import logprobs

  batch = args.batch
  if args.tokens % batch:
    raise ValueError(f"--tokens ({args.tokens}) must be a multiple of --batch ({batch}).")
  length = args.tokens // batch
  k_h, k_u, k_y, k_w = jax.random.split(jax.random.key(0), 4)
  hidden_btd = jax.random.normal(k_h, (batch, length, args.dim), jnp.float32)
  unembed_dv = jax.random.normal(k_u, (args.dim, args.vocab), jnp.float32) / args.dim**0.5
  targets_bt = jax.random.randint(k_y, (batch, length), 0, args.vocab)
  weights_bt = jax.random.normal(k_w, (batch, length), jnp.float32)
  jax.block_until_ready((hidden_btd, unembed_dv, targets_bt, weights_bt))

  if args.variant == "naive":

    def loss(hidden_btd, unembed_dv, targets_bt, weights_bt):
      n = batch * length
      logits_nv = (
        hidden_btd.reshape(n, args.dim) @ unembed_dv
      )  # 2-D matmul: faster backward on XLA:CPU
      lp_n = logprobs.logprobs_from_logits(logits_nv, targets_bt.reshape(n))
      return jnp.sum(weights_bt.reshape(n) * lp_n)

  else:

    def loss(hidden_btd, unembed_dv, targets_bt, weights_bt):
      lp_bt, _ = logprobs.token_logprobs_and_entropy(
        hidden_btd,
        unembed_dv,
        targets_bt,
        seq_chunk=args.seq_chunk,
        vocab_chunk=args.vocab_chunk,
        compute_entropy=False,
      )
      return jnp.sum(weights_bt * lp_bt)

  # All inputs are jit arguments, not closed-over constants (XLA would constant-fold them for
  # seconds).
  step = jax.value_and_grad(loss, argnums=(0, 1))
  inputs = (hidden_btd, unembed_dv, targets_bt, weights_bt)
  start = time.perf_counter()
  compiled = jax.jit(step).lower(*inputs).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  xla = {
    "temp": mem.temp_size_in_bytes,
    "argument": mem.argument_size_in_bytes,
    "output": mem.output_size_in_bytes,
    "alias": mem.alias_size_in_bytes,
  }
  xla_peak = xla["temp"] + xla["argument"] + xla["output"] - xla["alias"]
  result = {"variant": args.variant, "xla": xla, "xla_peak": xla_peak, "compile_s": compile_s}
  needed = xla["temp"] + xla["output"] + _GIB
  if needed > _available_bytes():
    result["skipped"] = (
      f"needs ~{needed / _GIB:.1f} GiB, only {_available_bytes() / _GIB:.1f} GiB available; "
      "use --tokens to shrink"
    )
    return result

  rss_before = _rss_bytes()
  times, cpu_times = [], []
  out = None
  for i in range(args.repeats + 1):
    del out  # Free the previous gradients before the next run allocates its own.
    start, cpu_start = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(compiled(*inputs))
    if i:  # The first run is a warm-up (it also faults in fresh pages).
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
    else:
      first_s = time.perf_counter() - start
  # ru_maxrss is in KiB on Linux; the peak may predate rss_before only by compile, which is small.
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  result.update(
    first_s=first_s,
    times=times,
    median_s=statistics.median(times),
    median_cpu_s=statistics.median(cpu_times),
    rss_delta=max(peak_rss - rss_before, 0),
    loss=float(out[0]),
  )
  return result


def _spawn(args, variant):
  """Runs `variant` in a fresh Python process and returns its measurements."""
  cmd = [sys.executable, os.path.abspath(__file__), "--_worker", f"--variant={variant}"]
  for name in ("tokens", "batch", "dim", "vocab", "seq_chunk", "repeats"):
    cmd.append(f"--{name}={getattr(args, name)}")
  if args.vocab_chunk is not None:
    cmd.append(f"--vocab_chunk={args.vocab_chunk}")
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    return {"variant": variant, "error": proc.stderr.strip().splitlines()[-1:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_gib(x):
  return f"{x / _GIB:8.3f}" if x is not None else "     n/a"


def _report(args, results):
  print(
    f"tokens {args.tokens} (B {args.batch} x T {args.tokens // args.batch}), D {args.dim}, "
    f"V {args.vocab}, float32, value_and_grad wrt hidden and unembedding; chunked: "
    f"seq_chunk {args.seq_chunk}, vocab_chunk {args.vocab_chunk}"
  )
  print(f"{'':24s}{'naive':>14s}{'chunked':>14s}")
  rows = [
    ("XLA temp GiB", lambda r: _fmt_gib(r["xla"]["temp"])),
    ("XLA argument GiB", lambda r: _fmt_gib(r["xla"]["argument"])),
    ("XLA output GiB", lambda r: _fmt_gib(r["xla"]["output"])),
    ("XLA peak GiB", lambda r: _fmt_gib(r["xla_peak"])),
    ("peak RSS delta GiB", lambda r: _fmt_gib(r.get("rss_delta"))),
    ("compile s", lambda r: f"{r['compile_s']:8.2f}"),
    ("warm-up run s", lambda r: f"{r['first_s']:8.2f}" if "first_s" in r else "     n/a"),
    ("median s", lambda r: f"{r['median_s']:8.2f}" if "median_s" in r else "     n/a"),
    ("median CPU s", lambda r: f"{r['median_cpu_s']:8.2f}" if "median_cpu_s" in r else "n/a"),
    ("runs s", lambda r: " ".join(f"{t:.1f}" for t in r.get("times", []))),
    ("loss", lambda r: f"{r['loss']:.4f}" if "loss" in r else "n/a"),
  ]
  naive, chunked = results["naive"], results["chunked"]
  for name, fmt in rows:
    cells = [fmt(r) if "xla" in r else "error" for r in (naive, chunked)]
    print(f"{name:24s}{cells[0]:>14s}{cells[1]:>14s}")
  for r in (naive, chunked):
    for key in ("skipped", "error"):
      if key in r:
        print(f"{r['variant']}: {key}: {r[key]}")
  if "xla" in naive and "xla" in chunked:
    print(
      f"ratio XLA peak   chunked/naive: {chunked['xla_peak'] / naive['xla_peak']:.3f}"
      f"  (target <= 0.125)"
    )
  if naive.get("rss_delta") and chunked.get("rss_delta"):
    print(f"ratio RSS delta  chunked/naive: {chunked['rss_delta'] / naive['rss_delta']:.3f}")
  if "median_cpu_s" in naive and "median_cpu_s" in chunked:
    print(f"ratio CPU time   chunked/naive: {chunked['median_cpu_s'] / naive['median_cpu_s']:.3f}")
  if "median_s" in naive and "median_s" in chunked:
    print(
      f"ratio time       chunked/naive: {chunked['median_s'] / naive['median_s']:.3f}"
      f"  (target <= 1.2)"
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, default=8192, help="B*T tokens")
  parser.add_argument("--batch", type=int, default=4, help="B (T = tokens / B)")
  parser.add_argument("--dim", type=int, default=896, help="hidden size D")
  parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V")
  parser.add_argument("--seq_chunk", type=int, default=None, help="default: the module's")
  parser.add_argument(
    "--vocab_chunk", type=int, default=None, help="default: the module's if --seq_chunk is unset"
  )
  parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
  parser.add_argument("--variants", default="naive,chunked", help="which to run")
  parser.add_argument(
    "--smoke",
    action="store_true",
    help="tiny shapes and one timed run (256 tokens, D 64, V 1024, chunks 64 x 256)",
  )
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._worker:
    print(json.dumps(_run_variant(args)))
    return
  if args.smoke:
    args.tokens, args.dim, args.vocab, args.repeats = 256, 64, 1024, 1
    args.seq_chunk, args.vocab_chunk = 64, 256
  from grpojax.models import logprobs  # Only for the defaults; the workers import JAX.

  if args.seq_chunk is None:
    args.seq_chunk = logprobs.DEFAULT_SEQ_CHUNK
    if args.vocab_chunk is None:
      args.vocab_chunk = logprobs.DEFAULT_VOCAB_CHUNK
  results = {"naive": {"variant": "naive"}, "chunked": {"variant": "chunked"}}
  for variant in args.variants.split(","):
    results[variant] = _spawn(args, variant)
    print(f"[{variant} done]", file=sys.stderr, flush=True)
  _report(args, results)


if __name__ == "__main__":
  main()
