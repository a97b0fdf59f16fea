#!/usr/bin/env bash
# Builds, on a machine with Rust, what bench/gpu.sh runs on a GPU machine without Rust, stripped
# so that it travels (about 40 MB): the release node and lab, the inference bench, the CUDA tests (built
# in release mode, so that they call target/release/vcnode), and the Python wheels the bench
# installs there offline (pynetdicom, pydicom, safetensors, numpy).
#
#   scripts/gpu-carry.sh [DIR]     (default: target/gpu-carry)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/gpu-carry}
: "${LIBTORCH:=$HOME/.cache/vcnode/libtorch-2.11.0}"
export LIBTORCH
rm -rf "$DIR" && mkdir -p "$DIR/wheels"
cargo build --release -p vcnode -p vcnode-lab --bins
# The last line of --message-format=json-render-diagnostics that names an executable, per target.
exe() {
  cargo "$@" --release --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
paths = [m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m.get("executable")]
print(paths[-1])'
}
strip -o "$DIR/vcnode" target/release/vcnode
strip -o "$DIR/vcnode-lab" target/release/vcnode-lab
strip -o "$DIR/inference-bench" "$(exe bench -p vcnode-models --bench inference)"
strip -o "$DIR/precision-test" "$(exe test -p vcnode-lab --test precision)"
strip -o "$DIR/cuda-test" "$(exe test --test cuda)"
pwd -P > "$DIR/built-at"
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 -d "$DIR/wheels" "pynetdicom==3.0.4" pydicom safetensors numpy
du -sh "$DIR"
