"""QeRL (arXiv 2510.11696): a frozen NVFP4 base, LoRA adapters, Adaptive Quantization Noise.

  python -m grpojax.main --config=configs/default.py --workdir=/tmp/warm --config.train.steps=0
  python -m grpojax.main --config=configs/qerl.py --workdir=/tmp/grpojax_qerl \
    --config.model.checkpoint=/tmp/warm/policy

QeRL starts from a trained checkpoint (first line: the default run's supervised warm start,
exported as a Hugging Face checkpoint). Every decoder projection is quantised to NVFP4 (e2m1
values, an e4m3 scale per 16 inputs, a float32 tensor scale) and frozen; rank-16 LoRA adapters
(alpha 16) on all seven projections are the only trained parameters. The rollout model's
RMSNorm scales get N(0, σ²) noise with σ decaying geometrically from 1e-2 to 1e-4 over 10
stages, the first noise-free. The loss is QeRL's DAPO mode (token-mean, clip-higher 0.28,
β = 0). On top of it this config turns on DAPO's dynamic sampling (`rollout.refill`, groups
judged by correctness), which QeRL's TRL-based setup does not use [ours]. The learning
rate is ours for this 128-wide policy (QeRL uses 1e-5 at 7B). The export in
`policy/` has the adapters merged into full weights.

Measured (experiments/precision.md, GRPO loss, 150 steps): 54.7% → 88.7% held-out accuracy,
against 58.6% → 90.6% for full float32 fine-tuning.
"""

from configs import common


def get_config(arg: str | None = None):
  config = common.base("dapo")
  config.warm_start.steps = 0
  config.precision.base_format = "nvfp4"
  config.precision.lora.rank = 16
  config.precision.lora.alpha = 16.0
  config.precision.aqn.enabled = True
  config.optim.learning_rate = 2e-3
  config.rollout.refill.enabled = True  # DAPO's dynamic sampling; no overlong shaping (answers
  # here are a few tokens long)
  return common.finish(config, arg)
