"""Per-device memory of Qwen2.5-7B- and 32B-shaped GRPO steps on a v5p-64 slice and on 8 x H100.

Nothing is run on an accelerator and no weight is allocated: `grpojax.dry_run.compile_only`
compiles the trainer's executables, the sampler's prefill and decode and the one RL update
(`train.build`'s `update`: scoring, micro-batch gradients, clipping and AdamW), for abstract
(`nnx.eval_shape`) models and reports XLA's per-device `memory_analysis()`. Writes the tables to
experiments/scaling.md:

  pip install --no-deps --target DIR libtpu==0.0.42.1   # the libtpu jax[tpu] 0.10.2 pins
  python experiments/scaling.py --libtpu_path=DIR        # everything
  python experiments/scaling.py --targets=h100x8 --models=qwen2.5-7b --no-verify
  python experiments/scaling.py --smoke   # one tiny point on 4 fake CPU devices, table printed

(With the earlier sampler / score / grad / update executables the full run took ~45 min on 2
cores and the h100x8 7B run ~5 min.)

Layouts (data, fsdp, tensor): v5p-64 (1, 32, 1) and (1, 8, 4); h100x8 (1, 8, 1), (1, 4, 2) and
(2, 4, 1). Each point is compiled with remat "none" (all three executables) and "full" (update
only: remat changes only the training forward, which lives in the update; `--no-remat_full`
leaves these points out).

Targets (each point runs in a child process, re-exec'd with the right environment):

* v5p-64: 32 JAX devices. Google names v5p slices by TensorCores; a v5p chip has two, driven as
  one megacore device, so v5p-64 is a 2x4x4 slice of 32 chips with 95 GiB of HBM each. Compiled
  by the real TPU compiler ahead of time (`jax.experimental.topologies`, libtpu on the host, no
  TPU attached) when libtpu imports (pass `--libtpu_path`), else by XLA:CPU on 32 fake devices.
* h100x8: 8 H100 80 GB cards (81,559 MiB = 79.6 GiB each, as nvidia-smi reports), compiled by
  XLA:CPU on 8 fake devices (`--xla_force_host_platform_device_count=8`): there is no ahead-of-
  time GPU target without GPUs. The CPU compiler upcasts bfloat16 arithmetic to float32 and
  fuses and schedules differently, so its temp bytes are indicative only.

Workload: 64 prompts x 8 samples, prompts of 512 tokens, 1,024 new tokens (cache length 1,536),
2 micro-batch rows per batch shard, log-prob chunks of 1,024 tokens, GRPO with KL β = 0.04 (so
a reference copy is resident), AdamW. `model.dtype = "bfloat16"` is the compute dtype; the
parameters, gradients and AdamW moments stay float32 (`models.abstract_pretrained`'s default
param_dtype), and the sampler's KV cache is bfloat16. The resident memory is `compile_only`'s:
parameters + AdamW moments + reference + the sampler's copy (the micro-batch gradient sum lives
in the update's temp bytes). `--smoke` replaces all of this with a tiny
model and batch (`MODELS["tiny"]`, `SHAPES["smoke"]`) on the 4-device `cpu4` target.

Depth. Compiling 28 or 64 unrolled layers for every point takes too long on 2 cores, so each point
is compiled at `--layers` (default 1 and 2) decoder layers and every byte count is extrapolated
linearly to the real depth. Parameters and KV cache are exactly linear in depth; `--verify`
compiles a few points at more layers (and one at the full 28 layers on XLA:CPU) and the report
prints extrapolated against compiled.

Activation constraint. Every layout is compiled with each decoder layer's output hidden states
pinned to the batch sharding (`Decoder.activation_sharding`, which `train.build` sets whenever
the batch is split; `compile_only(pin_activations=...)`), and the first layout also without it
(`--no-unconstrained` skips that): without the constraint XLA's sharding propagation keeps the
FSDP-sharded weights in place and gathers the activations instead.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Target:
  """Hardware to compile for.

  Attributes:
    devices: JAX devices (chips for v5p megacore, cards for H100).
    hbm_gib: memory per device, GiB.
    layouts: (data, fsdp, tensor) meshes to compile.
    tpu_topology: `get_topology_desc` arguments for an ahead-of-time TPU compile, or None.
  """

  devices: int
  hbm_gib: float
  layouts: tuple[tuple[int, int, int], ...]
  tpu_topology: dict | None = None


TARGETS = {
  "v5p-64": Target(
    devices=32,
    hbm_gib=95.0,
    layouts=((1, 32, 1), (1, 8, 4)),
    tpu_topology=dict(
      platform="tpu",
      topology_name="v5p:2x4x4",
      chip_config_name="megacore",
      chips_per_host_bounds=(2, 2, 1),
      num_slices=1,
    ),
  ),
  "h100x8": Target(devices=8, hbm_gib=81559 / 1024, layouts=((1, 8, 1), (1, 4, 2), (2, 4, 1))),
  # --smoke only: 4 fake CPU devices with a nominal 1 GiB each.
  "cpu4": Target(devices=4, hbm_gib=1.0, layouts=((1, 2, 2),)),
}
DEFAULT_TARGETS = ("v5p-64", "h100x8")

# Qwen2.5 shapes (config.json of the released checkpoints): untied embeddings, q/k/v biases.
_QWEN25 = dict(vocab_size=152064, head_dim=128)
MODELS = {
  "qwen2.5-7b": dict(
    _QWEN25,
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
  ),
  "qwen2.5-32b": dict(
    _QWEN25,
    hidden_size=5120,
    intermediate_size=27648,
    num_layers=64,
    num_heads=40,
    num_kv_heads=8,
  ),
  # --smoke only.
  "tiny": dict(
    vocab_size=256,
    head_dim=16,
    hidden_size=64,
    intermediate_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
  ),
}
DEFAULT_MODELS = ("qwen2.5-7b", "qwen2.5-32b")
SHAPES = {
  "full": dict(
    prompts=64, samples=8, prompt_len=512, new_tokens=1024, rows_per_shard=2, logprob_chunk=1024
  ),
  "smoke": dict(
    prompts=2, samples=2, prompt_len=8, new_tokens=8, rows_per_shard=1, logprob_chunk=16
  ),
}
EXECUTABLES = ("prefill", "decode", "update")
RESIDENT = ("params", "opt_state", "ref_params", "sampler_params")


# --- the child: one point, compiled at several depths -----------------------------------------


def _model_config(name: str, layers: int):
  from grpojax import models

  return models.ModelConfig(
    model_type="qwen2",
    attention_bias=True,
    tie_word_embeddings=False,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    bos_token_id=151643,
    eos_token_id=151645,
    **(MODELS[name] | dict(num_layers=layers)),
  )


def _run_config(checkpoint: str, axes, remat: str, shape: dict):
  from configs import default

  c = default.get_config()
  c.model.checkpoint = checkpoint  # a directory holding only config.json: shapes, no weights
  c.model.dtype = "bfloat16"
  c.model.remat = remat
  c.warm_start.steps = 0
  ro = c.rollout
  ro.prompts_per_step, ro.samples_per_prompt = shape["prompts"], shape["samples"]
  ro.max_prompt_len, ro.max_new_tokens = shape["prompt_len"], shape["new_tokens"]
  c.reward.overlong.max_len = shape["new_tokens"]
  c.train.microbatch_rows = shape["rows_per_shard"] * axes[0] * axes[1]
  c.train.logprob_chunk = shape["logprob_chunk"]
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = axes
  return c


def worker(spec: dict) -> dict:
  """Compiles one point at each depth in `spec["layers"]`; returns the reports by depth."""
  import jax

  from grpojax import dry_run
  from grpojax.parallel import mesh as mesh_lib

  target = TARGETS[spec["target"]]
  if spec["backend"] == "tpu":
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(**target.tpu_topology).devices
  else:
    devices = jax.devices()
  assert len(devices) == target.devices, (len(devices), target.devices)
  axes = tuple(spec["axes"])
  mesh = mesh_lib.make_mesh(dict(zip(("data", "fsdp", "tensor"), axes, strict=True)), devices)
  out = {"device_kind": devices[0].device_kind, "by_layers": {}}
  for layers in spec["layers"]:
    with tempfile.TemporaryDirectory() as ckpt:
      with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(_model_config(spec["model"], layers).to_hf_dict(), f)
      t = time.perf_counter()
      rep = dry_run.compile_only(
        _run_config(ckpt, axes, spec["remat"], SHAPES[spec["shape"]]),
        mesh,
        executables=spec["executables"],
        pin_activations=spec["constrain"],
      )
      rep["compile_s"] = time.perf_counter() - t
    out["by_layers"][str(layers)] = rep
  return out


# --- the parent: points, children, extrapolation, markdown ------------------------------------


def _libtpu_importable(path: str) -> bool:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (path, REPO) if p))
  code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('libtpu') is None)"
  return subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def _child_env(target: Target, backend: str, libtpu_path: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (libtpu_path, REPO, env.get("PYTHONPATH")) if p)
  if backend == "tpu":
    # An ahead-of-time compile: no TPU, no metadata server, one pretend host; several such
    # processes at once (libtpu otherwise takes a lock file per host).
    env.update(
      TPU_SKIP_MDS_QUERY="1",
      TPU_ACCELERATOR_TYPE="v5p-64",
      TPU_WORKER_HOSTNAMES="localhost",
      ALLOW_MULTIPLE_LIBTPU_LOAD="1",
    )
  else:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={target.devices}"
  return env


def run_point(spec: dict, env: dict, timeout_s: int) -> dict:
  """Runs `worker(spec)` in a child process; raises with its stderr's tail on failure."""
  res = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)],
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout_s,
    cwd=REPO,
  )
  lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
  if res.returncode or not lines:
    raise RuntimeError(f"point {spec} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT ") :])


def _key(spec: dict) -> str:
  return json.dumps({k: spec[k] for k in sorted(spec)}, sort_keys=True)


def _linear(by_layers: dict, depth: int, get) -> float:
  """Value at `depth` from the two smallest compiled depths, a + b·layers."""
  (l1, r1), (l2, r2) = sorted(((int(k), v) for k, v in by_layers.items()))[:2]
  v1, v2 = get(r1), get(r2)
  return max(v1 + (v2 - v1) * (depth - l1) / (l2 - l1), 0.0)  # sizes are never negative


def extrapolate(by_layers: dict, depth: int) -> dict:
  """A compile_only-like report at `depth` layers from reports at two smaller depths."""
  first = next(iter(by_layers.values()))
  out = {}
  for name in EXECUTABLES:
    if name in first:
      out[name] = {
        f: _linear(by_layers, depth, lambda r, n=name, f=f: r[n][f])
        for f in (
          "argument_bytes",
          "output_bytes",
          "temp_bytes",
          "alias_bytes",
          "peak_bytes",
          "transient_bytes",
        )
        if f in first[name]
      }
  out["resident"] = {
    f: _linear(by_layers, depth, lambda r, f=f: r["resident"][f]) for f in (*RESIDENT, "total")
  }
  return out


def step_peak(report: dict) -> tuple[float, str]:
  """resident total + the largest transient (see grpojax.dry_run's docstring)."""
  worst = max((n for n in EXECUTABLES if n in report), key=lambda n: report[n]["transient_bytes"])
  return report["resident"]["total"] + report[worst]["transient_bytes"], worst


def kv_cache_bytes(model: str, target_axes, shape: dict, dtype_bytes: int = 2):
  """The sampler's KV cache, total and per device: 2 (k, v) · L · B · K · H · S · bytes.

  B = P·G rows are split over data x fsdp; K over tensor when tensor divides it.
  """
  m = MODELS[model]
  rows = shape["prompts"] * shape["samples"]
  s = shape["prompt_len"] + shape["new_tokens"]
  total = 2 * m["num_layers"] * rows * m["num_kv_heads"] * m["head_dim"] * s * dtype_bytes
  data, fsdp, tensor = target_axes
  per = total / (data * fsdp) / (tensor if m["num_kv_heads"] % tensor == 0 else 1)
  return total, per


def _points(args):
  """Every layout with constrained activations, plus the first layout as the code stands."""
  for target in args.targets:
    for model in args.models:
      for i, axes in enumerate(TARGETS[target].layouts):
        for constrain in (False, True) if i == 0 and args.unconstrained else (True,):
          base = dict(
            target=target,
            model=model,
            axes=list(axes),
            constrain=constrain,
            layers=args.layers,
            shape=args.shape,
          )
          yield dict(base, remat="none", executables=list(EXECUTABLES))
          # remat changes only the saved activations of the training forward
          if constrain and args.remat_full:
            yield dict(base, remat="full", executables=["update"])


def _verify_points(args):
  """Deeper compiles of one point per target, to check the linear extrapolation."""
  for target in args.targets:
    base = dict(
      target=target,
      model=args.models[0],
      axes=list(TARGETS[target].layouts[0]),
      constrain=True,
      remat="none",
      executables=list(EXECUTABLES),
      shape=args.shape,
    )
    yield dict(base, layers=[args.layers[1] * 2])
    if target == "h100x8" and args.models[0] == "qwen2.5-7b":
      # XLA:CPU compiles all 28 layers in a couple of minutes.
      yield dict(base, layers=[MODELS["qwen2.5-7b"]["num_layers"]])


def write_markdown(path: str, args, results: dict, backends: dict) -> None:
  """The tables of experiments/scaling.md from the cached results, in `args.unit` (GiB or MiB)."""
  unit = {"GiB": GIB, "MiB": 2**20}[args.unit]
  size = lambda x: f"{x / unit:.1f}"
  arg_temp_peak = lambda r: "/".join(size(r[f"{k}_bytes"]) for k in ("argument", "temp", "peak"))
  lines = [
    "| model | target | data,fsdp,tensor | act. constraint | remat | prefill arg/temp/peak "
    "| decode arg/temp/peak | update temp/peak | resident (params+opt+ref+sampler) "
    "| step peak | fits |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for spec in _points(args):
    if spec["remat"] != "none":
      continue
    base = results[_key(spec)]
    variants = [("none", base)]
    if spec["constrain"] and args.remat_full:
      variants.append(("full", results[_key(dict(spec, remat="full", executables=["update"]))]))
    for remat, update_src in variants:
      depth = MODELS[spec["model"]]["num_layers"]
      rep = extrapolate(base["by_layers"], depth)
      rep["update"] = extrapolate(update_src["by_layers"], depth)["update"]
      peak, worst = step_peak(rep)
      res = rep["resident"]
      hbm = TARGETS[spec["target"]].hbm_gib
      u = rep["update"]
      lines.append(
        f"| {spec['model']} | {spec['target']} ({backends[spec['target']]}) "
        f"| {','.join(map(str, spec['axes']))} | {'yes' if spec['constrain'] else 'no'} | {remat} "
        f"| {arg_temp_peak(rep['prefill'])} | {arg_temp_peak(rep['decode'])} "
        f"| {size(u['temp_bytes'])}/{size(u['peak_bytes'])} "
        f"| {size(res['total'])} = "
        + "+".join(size(res[k]) for k in RESIDENT)
        + f" | {size(peak)} ({worst}) | {'yes' if peak <= hbm * GIB else 'no'} |"
      )
  table = "\n".join(lines)

  kv = [
    "| model | target | data,fsdp,tensor | KV cache total | per device (formula) "
    "| sampler state per device (compiled: prefill output) | decode temp per device (compiled) |",
    "|---|---|---|---|---|---|---|",
  ]
  for spec in _points(args):
    if spec["remat"] != "none" or not spec["constrain"]:
      continue
    total, per = kv_cache_bytes(spec["model"], spec["axes"], SHAPES[spec["shape"]])
    rep = extrapolate(results[_key(spec)]["by_layers"], MODELS[spec["model"]]["num_layers"])
    kv.append(
      f"| {spec['model']} | {spec['target']} | {','.join(map(str, spec['axes']))} "
      f"| {size(total)} | {size(per)} | {size(rep['prefill']['output_bytes'])} "
      f"| {size(rep['decode']['temp_bytes'])} |"
    )

  ver = [
    "| target | model | data,fsdp,tensor | layers | executable | temp compiled "
    "| temp extrapolated | peak compiled | peak extrapolated |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for spec in _verify_points(args) if args.verify else ():
    deep = results.get(_key(spec))
    if deep is None:
      continue
    layers = spec["layers"][0]
    base = results[_key(dict(spec, layers=args.layers))]
    rep = extrapolate(base["by_layers"], layers)
    actual = deep["by_layers"][str(layers)]
    for name in EXECUTABLES:
      ver.append(
        f"| {spec['target']} | {spec['model']} | {','.join(map(str, spec['axes']))} "
        f"| {layers} | {name} | {size(actual[name]['temp_bytes'])} "
        f"| {size(rep[name]['temp_bytes'])} | {size(actual[name]['peak_bytes'])} "
        f"| {size(rep[name]['peak_bytes'])} |"
      )

  kept = _read_kept(path)  # before "w" truncates the file
  with open(path, "w") as f:
    f.write(
      "<!-- tables generated by experiments/scaling.py; the notes between the markers "
      "are written by hand and kept by reruns -->\n"
    )
    f.write(_KEEP_START + "\n" + kept + _KEEP_END + "\n\n")
    f.write(f"## Per-device memory ({args.unit}), extrapolated to the full depth\n\n{table}\n\n")
    f.write("## Sampler KV cache\n\n" + "\n".join(kv) + "\n\n")
    if args.verify:
      f.write("## Linear-in-depth check\n\n" + "\n".join(ver) + "\n")


_KEEP_START, _KEEP_END = "<!-- notes: start -->", "<!-- notes: end -->"


def _read_kept(path: str) -> str:
  """The hand-written notes of an existing scaling.md, so that a rerun only replaces tables."""
  if not os.path.exists(path):
    return ""
  text = open(path).read()
  if _KEEP_START not in text or _KEEP_END not in text:
    return ""
  return text.split(_KEEP_START, 1)[1].split(_KEEP_END, 1)[0].lstrip("\n")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS), type=lambda s: s.split(","))
  ap.add_argument("--models", default=",".join(DEFAULT_MODELS), type=lambda s: s.split(","))
  ap.add_argument("--shape", default="full", choices=sorted(SHAPES), help="the batch (SHAPES)")
  ap.add_argument(
    "--layers",
    default="1,2",
    type=lambda s: [int(x) for x in s.split(",")],
    help="the two depths each point is compiled at",
  )
  ap.add_argument(
    "--unconstrained",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="also compile the first layout without the activation constraint, as "
    "the model code stands",
  )
  ap.add_argument(
    "--verify",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="compile deeper points to check the linear extrapolation",
  )
  ap.add_argument(
    "--libtpu_path",
    default="",
    help="a directory holding the libtpu package (pip install --target DIR "
    "libtpu==<the version jax[tpu] pins>) for real TPU compiles of v5p-64",
  )
  ap.add_argument(
    "--cache",
    default=os.path.join(tempfile.gettempdir(), "grpojax_scaling.json"),
    help="results by point; a rerun compiles only the points missing here",
  )
  ap.add_argument("--out", default=os.path.join(REPO, "experiments", "scaling.md"))
  ap.add_argument("--unit", default="GiB", choices=("GiB", "MiB"), help="of the tables")
  ap.add_argument("--timeout_s", type=int, default=3600)
  ap.add_argument("--jobs", type=int, default=2, help="points compiled at once")
  ap.add_argument(
    "--remat_full",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="also compile the update of each constrained point with remat 'full' (default: yes, "
    "but no with --smoke)",
  )
  ap.add_argument(
    "--smoke",
    action="store_true",
    help="one tiny point (model 'tiny', shape 'smoke') on the 4-device cpu4 target, written to "
    "a temporary directory and printed",
  )
  ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args._worker:
    print("RESULT " + json.dumps(worker(json.loads(args._worker))), flush=True)
    return
  if args.smoke:
    tmp = tempfile.mkdtemp(prefix="scaling_smoke_")
    args.targets, args.models, args.shape = ["cpu4"], ["tiny"], "smoke"
    args.layers, args.unconstrained, args.unit = [1, 2], False, "MiB"
    args.cache, args.out = os.path.join(tmp, "cache.json"), os.path.join(tmp, "scaling.md")
  if args.remat_full is None:
    args.remat_full = not args.smoke
  if len(args.layers) != 2 or args.layers[0] >= args.layers[1]:
    ap.error("--layers takes two increasing depths, e.g. 2,4")
  tpu = bool(args.libtpu_path) and _libtpu_importable(args.libtpu_path)
  backends = {
    t: "TPU compiler" if TARGETS[t].tpu_topology and tpu else "XLA:CPU" for t in args.targets
  }
  results = json.load(open(args.cache)) if os.path.exists(args.cache) else {}
  specs = list(_points(args)) + (list(_verify_points(args)) if args.verify else [])
  t0 = time.perf_counter()
  todo = [s for s in specs if _key(s) not in results]
  backend_of = lambda spec: "tpu" if backends[spec["target"]] == "TPU compiler" else "cpu"
  # Slow (TPU) and fast (XLA:CPU) points interleaved, so that lanes finish together.
  tpu, cpu = ([s for s in todo if backend_of(s) == b] for b in ("tpu", "cpu"))
  lanes = [(tpu + cpu)[i :: args.jobs] for i in range(args.jobs)]
  lock, failures, done = threading.Lock(), [], []

  def lane(specs):
    for spec in specs:
      t = time.perf_counter()
      try:
        out = run_point(
          dict(spec, backend=backend_of(spec)),
          _child_env(TARGETS[spec["target"]], backend_of(spec), args.libtpu_path),
          args.timeout_s,
        )
      except (RuntimeError, subprocess.TimeoutExpired) as e:
        with lock:
          failures.append(f"{spec}: {e}")
        print(f"FAILED {spec}:\n{e}", flush=True)
        continue
      with lock:
        results[_key(spec)] = out
        done.append(spec)
        print(
          f"[{len(done)}/{len(todo)}] {spec['target']} {spec['model']} {spec['axes']} "
          f"remat={spec['remat']} constrain={spec['constrain']} layers={spec['layers']}: "
          f"{time.perf_counter() - t:.0f} s",
          flush=True,
        )
        with open(args.cache, "w") as f:
          json.dump(results, f)

  # Children are separate processes: the threads only wait for them.
  threads = [threading.Thread(target=lane, args=(specs,)) for specs in lanes if specs]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if failures:
    sys.exit(f"{len(failures)} point(s) failed; the others are cached in {args.cache}")
  write_markdown(args.out, args, results, backends)
  print(f"wrote {args.out} ({(time.perf_counter() - t0) / 60:.1f} min)")
  if not args.remat_full:
    print("remat full: not compiled (pass --remat_full to add it)")
  if args.smoke:
    print(open(args.out).read().split(_KEEP_END, 1)[1].strip())


if __name__ == "__main__":
  if importlib.util.find_spec("grpojax") is None:
    sys.path.insert(0, REPO)
  main()
