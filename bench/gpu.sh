#!/usr/bin/env bash
# The GPU measurements of issue 16 in one run, on a machine with an NVIDIA GPU and a CUDA
# torch 2.11 (a Python that imports it), with binaries built elsewhere (scripts/gpu-carry.sh
# builds and strips them into target/gpu-carry/). Everything lands in one folder:
#
#   bench/gpu.sh [OUT]        (default: bench-gpu-<date>; DEVICE=cpu runs the non-GPU parts only,
#                              to check this script on a machine without a GPU)
#
#   doctor.txt      what vcnode finds: driver, GPU, CUDA runtime, the device and precision used
#   tests.txt       the CUDA tests: bf16 against f32 (models/lab/tests/precision.rs) and the derived
#                   image made on CUDA against the CPU one (tests/cuda.rs)
#   inference.txt   the paper's SCPA-UNet at 640x512, batch 1 and 8, f32 and bf16: tch against
#                   PyTorch eager and torch.compile, same card, same run
#   e2e.json        C-STORE of a 3328x4096 LE image to the derived instance acknowledged by a
#                   storage SCP (p50, p95 over COUNT images), and throughput with 4 senders
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
DEVICE=${DEVICE:-cuda}
COUNT=${COUNT:-20}
CARRY=${CARRY:-target/gpu-carry}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

# libtorch: the binaries were linked against torch 2.11's CPU libraries; here they come from the
# local PyTorch's torch/lib, which also holds libtorch_cuda.so.
TORCH_LIB=${TORCH_LIB:-$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VCNODE_TORCH_LIB="$TORCH_LIB"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1 | tee "$OUT/torch.txt" || true

# The test binaries find the node and the weights by the paths they were built at.
BUILT_AT=$(cat "$CARRY/built-at")
if [ "$(pwd -P)" != "$BUILT_AT" ] && [ ! -e "$BUILT_AT" ]; then
  mkdir -p "$(dirname "$BUILT_AT")" && ln -s "$(pwd -P)" "$BUILT_AT"
fi
mkdir -p target/release
cp "$CARRY/vcnode" target/release/vcnode
cp "$CARRY/vcnode-lab" target/release/vcnode-lab
VCNODE=$(pwd)/target/release/vcnode

cfg="$OUT/doctor.toml"
printf '[inference]\ndevice = "%s"\n' "$DEVICE" > "$cfg"
"$VCNODE" doctor --config "$cfg" | tee "$OUT/doctor.txt" || true

if [ "$DEVICE" = cuda ]; then
  {
    VCNODE_TEST_DEVICE=cuda "$CARRY/precision-test" bf16 --include-ignored --nocapture --test-threads 1 2>&1
    "$CARRY/cuda-test" --nocapture --test-threads 1 2>&1
  } | tee "$OUT/tests.txt"
  # The PyTorch peer needs safetensors and numpy beside torch.
  "$PY" -c 'import safetensors, numpy' 2>/dev/null || "$PY" -m pip install --quiet --no-index --find-links "$CARRY/wheels" safetensors numpy 2>&1 | tail -1 || true
  VCNODE_BENCH_DEVICE=cuda VCNODE_BENCH_PYTHON="$PY" VCNODE_BENCH_SCRIPT=bench/pytorch_eager.py \
    VCNODE_BENCH_MANIFEST=models/weights/scpa-unet.json "$CARRY/inference-bench" --bench 2>&1 | tee "$OUT/inference.txt"
fi

# End to end: pynetdicom as the modality and as the PACS (no Orthanc on a bare GPU machine).
"$PY" -c 'import pynetdicom' 2>/dev/null || "$PY" -m pip install --quiet --no-index --find-links "$CARRY/wheels" pynetdicom pydicom
images="$OUT/images"
if [ "$DEVICE" = cuda ]; then rows=4096 cols=3328; else rows=1024 cols=832; fi
senders=4 per=10
[ "$DEVICE" = cuda ] || { COUNT=3; per=1; }
"$VCNODE" fixture --out "$images" --count $((1 + COUNT + senders * per)) --rows $rows --columns $cols >/dev/null
"$PY" bench/e2e_latency.py --vcnode "$VCNODE" --images "$images" --device "$DEVICE" --count "$COUNT" \
  --senders $senders --per-sender $per --out "$OUT/e2e.json" 2>&1 | tail -25
rm -rf "$images"
echo "results in $OUT"
