"""Jet-RL (arXiv 2601.14243): one FP8 precision flow for rollout and training.

  python -m grpojax.main --config=configs/jet_rl.py --workdir=/tmp/grpojax_jet_rl

The embedded default run with every decoder projection in FP8 (e4m3 weights per tensor,
activations per token, e5m2 output gradients, float32 accumulation) in the sampler and the
trainer alike, so the sampler's log-probs equal the trainer's and the run stays on-policy. The
naive baseline quantises the rollout only:

  --config.precision.matmul=default --config.precision.rollout_matmul=fp8

and Jet-RL's finer granularity (128x128 weight blocks, 1x128 activation groups) is
`--config.precision.matmul=fp8_block`. `mismatch/*` metrics log the sampler-trainer gap every
step; experiments/precision.md compares the modes (on a CPU FP8 is emulated, not faster).
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("grpo")
  config.precision.matmul = "fp8"
  return common.finish(config, arg)
