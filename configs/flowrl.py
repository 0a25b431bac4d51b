"""FlowRL (arXiv 2509.15207) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/flowrl.py --workdir=/tmp/grpojax_flowrl

The run of `configs/default.py` with the objective replaced by the `flowrl` recipe: a trajectory-
balance loss with a learned log Z. The policy gets its log-Z head (the authors' 3-layer MLP on the
mean of the prompt's last hidden states) because the objective reads `log_z`; it trains at the
policy's learning rate (`optim.head_learning_rate` sets its own). The IS weight is the authors'
unclipped one; `objective.is_weight_clip=0.2` clips it as the paper says and
`objective.is_weight_max=10` caps it as a verl port does.

Measured from the default job's warm-started policy (greedy 48.0%, pass@8 82.4%; `--config.model.
checkpoint=<workdir>/policy --config.warm_start.steps=0`), 300 steps: greedy 76.2%, pass@8 89.5%,
entropy 0.600 -> 0.518 (GRPO from the same policy: 75.8%, 90.2%, 0.589 -> 0.467). With one epoch
the IS weight is exactly 1, and with the z-scored log-reward log Z stays near 0 (-0.36 -> -0.13).
Every knob of the recipe is in `config.objective` with the paper's defaults (see
`grpojax/objectives/README.md`); override any with `--config.objective.FIELD=VALUE`.

`--config=configs/flowrl.py:local` shrinks it to a seconds-long smoke run."""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("flowrl"), arg)
