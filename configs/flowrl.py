"""FlowRL (arXiv 2509.15207) on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/flowrl.py --workdir=/tmp/grpojax_flowrl

The run of `configs/default.py` with the objective replaced by the `flowrl` recipe: a trajectory-
balance loss with a learned log Z. The policy gets its log-Z head (the authors' 3-layer MLP on the
mean of the prompt's last hidden states) because the objective reads `log_z`; it trains at the
policy's learning rate (`optim.head_learning_rate` sets its own). Its outcome on this task has not
been measured yet. Every knob of the recipe is in `config.objective` with the paper's defaults (see
`grpojax/objectives/README.md`); override any with `--config.objective.FIELD=VALUE`.

`--config=configs/flowrl.py:local` shrinks it to a seconds-long smoke run."""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("flowrl"), arg)
