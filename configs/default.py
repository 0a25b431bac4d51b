"""The embedded default: GRPO on two-digit addition with a tiny policy, on a CPU in minutes.

  python -m grpojax.main --config=configs/default.py --workdir=/tmp/grpojax_default

A 3-layer, 128-wide Qwen2-architecture policy with a character tokenizer is warm-started for 500
supervised steps on reference solutions (about half of the held-out problems right, greedy),
then trained with 300 GRPO steps (group z-score advantages, PPO clip 0.2, k3 KL β = 0.04, the
loss averaged over each response's tokens and then over responses: seq-mean-token-mean) on 32
prompts x 8 samples each. Held-out greedy
accuracy is printed after the warm start and after RL; the last line reads
`held-out accuracy: warm start X%, after RL Y%, pass@8 Z%`.

`--config=configs/default.py:local` shrinks everything to a seconds-long smoke run.

`sweep()` lists the points `launch/xm_launch.py` (and `launch/local_launch.py --sweep_index`)
run: three seeds at each of three RL learning rates,

  python -m launch.xm_launch --config=configs/default.py --workdir_root=DIR
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("grpo"), arg)


def sweep() -> list[dict]:
  """Override dicts (dotted field -> value), one per job: 3 learning rates x 3 seeds."""
  return [
    {"optim.learning_rate": lr, "seed": seed} for lr in (7.5e-5, 1.5e-4, 3e-4) for seed in (0, 1, 2)
  ]
