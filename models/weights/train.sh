#!/usr/bin/env bash
# Reproduces the shipped weights: phantom data → SCPA-UNet and plain U-Net trained the same
# way → evaluation on held-out phantom patients (another seed) → REPORT.md.
# The training set is lesion-enriched (4 lesions per breast, where there is room), because
# enhancing lesions cover about 1% of a breast; the held-out set keeps the phantom's own 0 to 3.
# CPU configuration (no GPU was available), in two stages:
# 1. 512×384 input, widths 8,16,32,64,64, 96×96 crops (80% centred on what the target RC
#    enhances), batch 16, 32 epochs of crops (an epoch holds as many crop pixels as the training
#    images: 240 steps at this size, 7680 in all), the paper's L1 loss and Adam (lr 2e-4, β1
#    0.5), weights of the epoch with the lowest validation L1 (75 minutes for the SCPA-UNet, 43
#    for the U-Net on 2 cores).
# 2. 4 more epochs from those weights with the batch norms frozen on statistics of whole
#    training images, half the crops centred on enhancement, keeping the average of the
#    epochs' weights (9 and 5 minutes). Crops train on crop statistics while inference runs
#    whole images: in stage 1 the validation L1 swung between 0.008 and 0.107 from epoch to
#    epoch on the running statistics alone, and recomputing them from whole images without
#    retraining cost the SCPA-UNet 17 dB of whole-image PSNR. Variants tried on the stage-1
#    weights (4 epochs each; their held-out scores are in the commit message that brought this
#    stage, so these held-out numbers are no longer untouched by choices): lr 2e-4 without
#    averaging (the background level swung between epochs), lr 5e-5 (no ROI gain), 80% centred
#    crops (both models drew more lesions and more false ones: whole-image PSNR fell by 2 dB);
#    50% also gave the lowest validation L1 for both models.
# The paper trains whole 640×512 images, widths 32…256, 200 epochs on a GPU.
# 3600 steps at 256×192 input drew 13 of the 56 held-out lesions, 3600 at 512×384 drew 20 and
# 6000 drew 23 (SCPA-UNet; REPORT.md has this run's numbers), so steps and input size both
# count: lesions of 11 to 25 pixels are hard to tell from glandular texture.
# Whole-image training at the CPU budget (80 epochs, 1840 steps) learned the background but
# never drew a lesion; crops spend the steps where the uptake is. Whether a run ever starts on
# the lesions can depend on the initialization alone (at 256×192 seed 0's SCPA-UNet never did,
# seeds 1 and 2 did within 300 steps, in the same code on the same crops), so stage 1 trains
# seeds 0, 1 and 2 for 2 epochs (480 steps) and continues the one with the lowest validation L1
# on the enhancing pixels. (lr 1e-3 was tried first: the output collapsed to a constant within
# two epochs.)
#   models/weights/train.sh [WORK_DIR]
# Environment: DEVICE (cpu, cuda), ROWS, COLS, CHANNELS, EPOCHS, PROBE_EPOCHS, PATCH (empty:
# whole images, and no stage 2), FROZEN_EPOCHS (0: no stage 2), PRETRAINED (a folder whose
# stage-1 weights stage 2 starts from instead of training them);
# on a GPU the paper's configuration is
#   ROWS=640 COLS=512 CHANNELS=32,64,128,256,256 EPOCHS=200 PROBE_EPOCHS=5 PATCH= DEVICE=cuda.
# SKIP_TRAIN=1 only re-evaluates the weights already in models/weights.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
bin=./target/release/vcnode-lab
# A GPU machine may have no Rust: there, carry a binary built here and put the machine's
# torch/lib on LD_LIBRARY_PATH (see DESIGN.md).
if command -v cargo >/dev/null; then make --no-print-directory release >&2; fi
out=models/weights
rows=${ROWS:-512} cols=${COLS:-384} channels=${CHANNELS:-8,16,32,64,64} epochs=${EPOCHS:-32}
probe=${PROBE_EPOCHS:-2}
device=${DEVICE:-cpu} patch=${PATCH-96}
common=(--rows "$rows" --cols "$cols" --channels "$channels" --epochs "$epochs" --lr 2e-4
        --validation 0.1 --device "$device" --seeds 0,1,2 --probe-epochs "$probe")
if [ -n "$patch" ]; then
  common+=(--patch "$patch" --enhancement-share 0.8 --batch 16)
  samples="${patch}x${patch} crops (80% centred on RC enhancement), batch 16"
else
  common+=(--batch 8)
  samples="whole images, batch 8"
fi
[ -f "$work/train/pairs.csv" ] || "$bin" phantom --out "$work/train" --patients 50 --seed 1 --rows 1664 --columns 1280 --lesions 4
[ -f "$work/heldout/pairs.csv" ] || "$bin" phantom --out "$work/heldout" --patients 12 --seed 2 --rows 1664 --columns 1280
note="Trained by models/weights/train.sh on $device ($(nproc) cores): ${rows}x${cols} input, widths $channels, batch norm, $samples, $epochs epochs (weights of the epoch with the lowest validation L1), restarts: seeds 0-2 trained $probe epochs each, the one with the lowest validation L1 on enhancing pixels continued, L1 loss, Adam lr 2e-4 beta1 0.5."
[ "$device" = cpu ] && note="$note A smaller CPU configuration: the paper trains whole 640x512 images, widths 32-256, 200 epochs on a GPU."
label="vcnode phantom seed 1, 50 patients x 4 views at 1664x1280, 4 lesions per breast (last 10% for validation, which chose epochs and seeds: development data)"
# Stage 2 (crops only): FROZEN_EPOCHS more epochs from stage 1's kept weights, with the batch
# norms frozen on whole-image statistics, half the crops centred on enhancement, and the
# weights averaged over those epochs. PRETRAINED=DIR reuses stage-1 weights already in DIR.
frozen=${FROZEN_EPOCHS:-4}
[ -n "$patch" ] || frozen=0
if [ "$frozen" -gt 0 ]; then pre=${PRETRAINED:-$work/pretrained}; else pre=$out; fi
fine=(--rows "$rows" --cols "$cols" --epochs "$frozen" --frozen-norm-epochs "$frozen" --lr 2e-4
      --validation 0.1 --device "$device" --seed 0 --patch "$patch" --enhancement-share 0.5 --batch 16)
fine_note="Fine-tuned from the stage-1 weights below for $frozen epochs of ${patch}x${patch} crops (50% centred on RC enhancement), batch 16, with the batch norms frozen on statistics of whole training images (what inference uses), keeping the average of those epochs' weights (the average after the epoch with the lowest validation L1), L1 loss, Adam lr 2e-4 beta1 0.5."
if [ -z "${SKIP_TRAIN:-}" ]; then
  for model in scpa-unet unet; do
    if [ "$frozen" -eq 0 ] || [ ! -f "$pre/$model.json" ]; then
      "$bin" train --model "$model" --data "$work/train/pairs.csv" --out "$pre" "${common[@]}" \
        --data-label "$label" --note "$note"
    fi
    if [ "$frozen" -gt 0 ]; then
      "$bin" train --model "$model" --init "$pre/$model.json" --data "$work/train/pairs.csv" --out "$out" \
        "${fine[@]}" --data-label "$label" --note "$fine_note"
    fi
  done
fi
rm -rf "$out/checkpoints" "$out/report"
# Seed 2 chose among the stage-2 variants: development data, never to be called held-out.
"$bin" eval --model "$out/scpa-unet.json" --baseline "$out/unet.json" --data "$work/heldout/pairs.csv" \
  --role development --out "$out/report" --pictures 4 --device "$device" --record
mv "$out/report/REPORT.md" "$out/REPORT.md"
sed -i 's|](pictures/|](report/pictures/|' "$out/REPORT.md"
# Name the data by what it is, not by the temporary folder it was in.
sed -i "s|$work/heldout/pairs.csv|phantom seed 2, 12 patients x 4 views at 1664x1280|" \
  "$out/REPORT.md" "$out/scpa-unet.json" "$out/unet.json"
# Two more held-out sets, generated and scored only after every choice above: the stage-2
# variants were compared on seed 2, so seed 2's differences carry that choice. Seed 3 is as
# small as seed 2 (48 images); seed 4 has four times the patients, for tests with the power to
# tell differences of a few tenths of a dB from the noise of one small set.
for confirm in "3 12" "4 48"; do
  set -- $confirm
  dir="$work/confirm-seed$1"
  [ -f "$dir/pairs.csv" ] || "$bin" phantom --out "$dir" --patients "$2" --seed "$1" --rows 1664 --columns 1280
  rm -rf "$dir-report"
  "$bin" eval --model "$out/scpa-unet.json" --baseline "$out/unet.json" --data "$dir/pairs.csv" \
    --role held-out --out "$dir-report" --pictures 0 --device "$device"
  {
    printf '\n## Confirmation on held-out phantom seed %s (%s patients x 4 views)\n\n' "$1" "$2"
    printf 'Generated and scored after every choice was made on seed 2 above (train.sh compared its stage-2 variants there), so these numbers carry no selection.\n\n'
    sed -n '/^### Whole breast/,/^## Cases/p' "$dir-report/REPORT.md" | sed '/^## Cases/d; s/^## /### /'
  } >> "$out/REPORT.md"
done
