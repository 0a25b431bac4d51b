"""LAD (arXiv 2602.20132), experimental, on the built-in two-digit arithmetic task.

  python -m grpojax.main --config=configs/lad.py --workdir=/tmp/grpojax_lad

The run of `configs/default.py` with the objective replaced by the `lad` recipe: the policy's
ratio π_θ/π_old is matched to the advantage-induced target exp(Â/η) by the Jensen–Shannon
f-divergence of the paper's practical objective (Lemma 3.2 / Eq. 8), 1/η = 4, no clip, no KL,
no entropy bonus. The per-token reading and the token-mean aggregation are ours (see
`grpojax/objectives/distribution_losses.py`). Expect about the default's run time.

`--config=configs/lad.py:local` shrinks it to a seconds-long smoke run.
"""

from configs import common


def get_config(arg: str | None = None):
  return common.finish(common.base("lad"), arg)
