"""IntroLLM (arXiv 2602.13035): a learned per-token temperature on the built-in arithmetic task.

  python -m grpojax.main --config=configs/introllm.py --workdir=/tmp/grpojax_introllm

The run of `configs/default.py` with two changes. The sampler draws each token's temperature from
the policy's temperature head (Linear D -> D/2, GELU, Linear -> 1 on the hidden state; built
because the objective reads it): τ = τ_min + (τ_max − τ_min)·u, u ~ Beta(1 + κm, 1 + κ(1 − m)),
m = sigmoid(head), with τ in [0.5, 1.5] and κ = 8 (`rollout.temperature_policy`; the
parameterisation is grpojax's reading, see `grpojax/sampling/head_temperature.py`). The `introllm`
objective trains the token policy with GRPO at the sampled temperatures and the temperature policy
with a PPO-clip policy gradient on log p(τ) under the same advantages, alternating every
`objective.alternate_every` RL steps (1; 0 trains both every step). `temperature/mean` in the
metrics is the mean sampled temperature of each step; held-out pass@k samples with the learned
temperatures too.

`--config=configs/introllm.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  c = common.base("introllm")
  c.rollout.temperature_policy.enabled = True
  return common.finish(c, arg)
