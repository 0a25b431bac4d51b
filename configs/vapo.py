"""VAPO (arXiv 2504.05118) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/vapo.py --workdir=/tmp/grpojax_vapo

The run of `configs/default.py` with the objective replaced by the `vapo` recipe
(`grpojax/objectives/vapo.py`): PPO with a value head, GAE advantages on the pre-update values
with the length-adaptive λ_policy (α = 0.05, γ = 1, sparse terminal reward), clip-higher
0.2 / 0.28, the μ = 0.1 NLL on correct samples, the value loss on Monte-Carlo (λ_critic = 1)
targets, token-mean. The policy gets its value head because the objective reads `values`.

Critic warm-up (VAPO's value pretraining): the first `train.critic_warmup_steps` RL steps train
only the heads, on the returns of the warm-started policy, with the decoder bit-identical; then
policy and critic train together. The head has its own learning rate
(`optim.head_learning_rate`). [ours, for this task: 30 warm-up steps of the 300, and a head
rate of 1e-3 for a randomly initialised linear head; the paper recalls about 50 steps and a critic
rate twice the actor's for a critic initialised from a 32B reward model.] The held-out accuracy
and `value/explained_variance` (the critic before each step, on that step's returns) are logged.
Answers here are 3-6 tokens, far below 1/α = 20, so λ_policy is 0: one-step TD advantages.

Measured (from the default job's warm start, greedy 48.0%, pass@8 82.4%; 2-core CPU shared with
other jobs, about 7 minutes): this faithful setting collapses, held-out greedy 0.0%, pass@8 0.0%
after 300 steps (sample accuracy 26% -> 0% by step 80). The linear value head never explains the
returns (`value/explained_variance` -3.5 -> -0.14 over the warm-up, about 0 after), so the TD(0)
advantages are critic noise, which whitening scales to unit size. With a fixed λ_policy
(`--config.objective.adaptive_lambda=False`, λ = 0.95, the paper's decoupled-GAE value) the
advantages are nearly Monte-Carlo (a mean baseline, as the critic still explains little:
`value/explained_variance` -3.5 -> +0.04) and the run improves: greedy 74.6%, pass@8 89.1% after
300 steps (about 4 minutes).

`--config=configs/vapo.py:local` shrinks it to a seconds-long smoke run (one warm-up step)."""

from configs import common


def get_config(arg: str | None = None):
  c = common.base("vapo")
  c.train.critic_warmup_steps = 30
  c.optim.head_learning_rate = 1e-3
  c = common.finish(c, arg)
  if arg == "local":  # two RL steps: one warm-up step, one joint step
    c.train.critic_warmup_steps = 1
  return c
