"""Goldilocks (arXiv 2602.14868): GRPO on prompts a teacher finds neither too easy nor too hard.

  python -m grpojax.main --config=configs/goldilocks.py --workdir=/tmp/grpojax_goldilocks

The run of `configs/default.py` with the prompt source replaced by a candidate pool
(`grpojax/rl/curricula.py`): each step the next 128 problems of the stream are scored by a
teacher, a 2-layer MLP on the current policy's mean-pooled prompt hidden states predicting the
success probability p̂, and the 32 of highest utility √(p̂(1 − p̂)) are trained on; the teacher
learns online by SGD on the MSE between p̂ and observed group accuracies replayed from a buffer.
The teacher's architecture, the pool size and the selection ratio are ours (the paper's are not
public). Each step logs `goldilocks/p_hat_corr` (p̂ against observed accuracy of the chosen
prompts), `goldilocks/teacher_mse` and `rollout/informative_groups` (compare with the default's).

Measured from the default job's warm-started policy (greedy 48.0%, pass@8 82.4%), 300 steps:
greedy 70.3%, pass@8 87.5%, entropy 0.555 -> 0.449, informative groups 89.5% of the batch (GRPO
from the same policy: 75.8%, 90.2%, 88.4%); p̂ correlates weakly with the observed accuracy of the
chosen prompts (0.15 on average over the logged steps). At this scale GRPO's batches are already
almost all informative, so selection has little to add.

`--config=configs/goldilocks.py:local` shrinks it to a seconds-long smoke run."""

from configs import common


def get_config(arg: str | None = None):
  c = common.base("grpo")
  c.curriculum.name = "goldilocks"
  c.curriculum.pool_size = 128
  if arg == "local":
    c.curriculum.pool_size = 8
    c.curriculum.teacher_batch = 8
  return common.finish(c, arg)
