#!/usr/bin/env bash
# A Python with PyTorch 2.11.0 (the version behind tch =0.24.0), safetensors and numpy, for the
# PyTorch-eager peer of `make bench` (bench/pytorch_eager.py); on a GPU machine also where the
# node loads libtorch_cuda.so from (scripts/setup.sh runs this there). Elsewhere only the benchmark
# needs it, so `make test` never fetches it. PyPI's Linux torch wheel pulls the CUDA libraries (about 3 GB);
# it imports and runs on CPU-only machines too. Idempotent. Prints the interpreter's path.
#
#   scripts/fetch-pytorch.sh [DIR]      (default: $HOME/.cache/vcnode/pytorch-2.11.0)
set -euo pipefail
DEST="${1:-$HOME/.cache/vcnode/pytorch-2.11.0}"
if [ -x "$DEST/bin/python" ] && "$DEST/bin/python" -c 'import torch, safetensors, numpy' 2>/dev/null; then
  echo "$DEST/bin/python"; exit 0
fi
echo "installing torch 2.11.0, safetensors and numpy into $DEST (about 3 GB, once)" >&2
python3 -m venv "$DEST" >&2
"$DEST/bin/pip" install --quiet "torch==2.11.0" safetensors numpy >&2
echo "$DEST/bin/python"
