#!/usr/bin/env bash
# How the shipped weights were made while the full protocol of train.sh (four arms trained from
# scratch on phantom v2 with several seeds) waits for the CPU hours or a GPU: the phantom v1
# CPU weights of SCPA-UNet and U-Net are fine-tuned on phantom v2, each manifest gets the
# guard's profile of its training data, the development set (seed 2) chooses the default
# (choose.py) and the pooled held-out set (seeds 3-5) is scored once. REPORT.md's first
# section, written by hand, says what these weights are.
#
#   INIT_DIR=DIR models/weights/finetune.sh WORK_DIR
#
# INIT_DIR holds the phantom v1 weights to start from: models/weights as of commit 2ea29be
# (e.g. `git worktree add /tmp/v1 2ea29be`, then INIT_DIR=/tmp/v1/models/weights).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: models/weights/finetune.sh WORK_DIR}
mkdir -p "$work" && work=$(cd "$work" && pwd)
lab=./target/release/vcnode-lab
if command -v cargo >/dev/null; then make --no-print-directory release >&2; fi
out=models/weights
init=${INIT_DIR:?set INIT_DIR to the phantom v1 weights (see above)}
. models/weights/data.sh
phantom_data_sets "$work"
label="vcnode-lab phantom v2 seed 1, 50 patients x 4 views at ${phantom_rows}x${phantom_cols}, 4 lesions per breast (the last 10% validate: development data)"
common=(--data "$work/data/train/pairs.csv" --preset cpu --enhancement-share 0.5
        --seed 0 --validation 0.1 --half --device cpu --data-label "$label")
for m in scpa-unet unet; do
  [ -f "$work/ship/$m.json" ] || "$lab" train --model $m --init "$init/$m.json" --out "$work/ship" "${common[@]}" \
    --epochs 6 --frozen-norm-epochs 6 --note "Fine-tuned on phantom v2 from the weights below (trained on phantom v1): 6 epochs of 96x96 crops (50% centred on RC enhancement), batch 16, batch norms frozen on statistics of whole phantom v2 training images, keeping the average of the epochs' weights, L1 loss, Adam lr 2e-4 beta1 0.5, on cpu. Not yet retrained from scratch on phantom v2 (models/weights/train.sh)."
done
models=(scpa-unet unet)
for m in "${models[@]}"; do "$lab" calibrate --model "$work/ship/$m.json" --data "$work/data/train/pairs.csv"; done
rm -rf "$work/eval-dev" "$work/eval-unet"
"$lab" eval --model "$work/ship/scpa-unet.json" --baseline "$work/ship/unet.json" \
  --data "$work/data/development/pairs.csv" --role development --out "$work/eval-dev" \
  --pictures 0 --device cpu --record
python3 models/weights/choose.py "$work/eval-dev/eval.json"
"$lab" eval --model "$work/ship/scpa-unet.json" --baseline "$work/ship/unet.json" --data "$work/data/held-out/pairs.csv" \
  --role held-out --out "$work/eval-unet" --pictures 4 --device cpu --record
echo "weights, manifests and evaluations in $work; copy them to $out and write REPORT.md's first section"
