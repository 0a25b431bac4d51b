#!/bin/bash
# RL from the same warm-started checkpoint in each precision mode; see experiments/precision.md.
#   python -m grpojax.main --config=configs/default.py --workdir=$ROOT/warm --config.train.steps=0
#   bash experiments/precision_modes.sh $ROOT [steps]
# Smoke run (about a minute on 2 cores): makes its own 2-step warm start with
# configs/default.py:local, then runs every mode for one RL step of that config.
#   bash experiments/precision_modes.sh --smoke [ROOT]
set -e
CONFIG=configs/default.py
if [ "$1" = "--smoke" ]; then
  ROOT=${2:-$(mktemp -d)}
  STEPS=1
  CONFIG=configs/default.py:local
  mkdir -p "$ROOT"
  python -m grpojax.main --config=$CONFIG --workdir="$ROOT/warm" --config.train.steps=0 \
    > "$ROOT/warm.log" 2>&1
else
  ROOT=${1:?usage: precision_modes.sh ROOT [steps] | precision_modes.sh --smoke [ROOT]}
  STEPS=${2:-150}
fi
COMMON="--config=$CONFIG --config.model.checkpoint=$ROOT/warm/policy \
  --config.warm_start.steps=0 --config.train.steps=$STEPS --config.eval.every=50"
run() { name=$1; shift; python -m grpojax.main $COMMON --workdir=$ROOT/$name "$@" \
  > $ROOT/$name.log 2>&1; echo "$name: $(tail -1 $ROOT/$name.log)"; }
run f32
run bf16 --config.model.dtype=bfloat16
run fp8_naive --config.precision.rollout_matmul=fp8
run fp8_unified --config.precision.matmul=fp8
run nvfp4_lora --config.precision.base_format=nvfp4 --config.precision.lora.rank=16 \
  --config.precision.aqn.enabled=True --config.optim.learning_rate=2e-3
echo "runs in $ROOT; report: python experiments/precision_report.py --root=$ROOT"
