#!/usr/bin/env bash
# XViT against a space-only model on the synthetic data's order-only classes, through the CLI:
# both trained with the xvit_synth_tiny recipe (the space-only one with model= overridden), then
# evaluated with 1x1 views; prints overall top-1 and the mean accuracy over the 8 classes that
# differ only in frame order (the space-only model cannot beat 50% on them: each pair is the same
# clip played forwards and backwards, and it has no temporal position).
# Usage: bash benchmarks/order_classes.sh WORKDIR [key=value ...]   (e.g. train.device=cuda)
set -euo pipefail
work=${1:?usage: order_classes.sh WORKDIR [overrides]}; shift
recipe=$(cd "$(dirname "$0")/.." && pwd)/recipes/xvit_synth_tiny.yaml
mkdir -p "$work"; cd "$work"
[ -f synth_data/train.csv ] || tubelet synth synth_data --videos-per-class 40 --frames 16 --size 32
for model in xvit_tiny_p8_8x32 timesformer_space_tiny_p8_8x32; do
  tubelet train "$recipe" model=$model train.progress=false "$@" --out runs/$model > train_$model.log
  tubelet eval runs/$model --data synth_data/val.csv --views 1x1 --out eval_$model > /dev/null
  python3 - "$model" <<'PY'
import json, sys
result = json.load(open(f"eval_{sys.argv[1]}.json"))
order = ["moving_right", "moving_left", "rotating_clockwise", "rotating_anticlockwise",
         "approaching", "receding", "appearing", "disappearing"]
per_class = result["per_class_accuracy"]
print(f"{sys.argv[1]}: top-1 {result['metrics']['top1']:.1f}%, order-only classes {sum(per_class[c] for c in order) / len(order):.1f}%")
PY
done
