#!/usr/bin/env bash
# Provision a CPU libtorch 2.11.0 (what tch =0.24.0 expects) from the Python package index, because
# the official libtorch zip host is not reachable from our build machines. Idempotent: a complete
# cache dir is left alone. Prints the libtorch dir on stdout.
#
#   scripts/fetch-libtorch.sh [DIR]      (default: ${VCNODE_LIBTORCH:-$HOME/.cache/vcnode/libtorch-2.11.0})
#
# libtorch_cuda.so is deliberately left out, so torch-sys links the CPU libraries only; on a GPU
# machine vcnode loads libtorch_cuda.so at run time (scripts/setup.sh fetches it there; see
# models/src/device.rs and `vcnode doctor`).
set -euo pipefail
TORCH_VERSION=2.11.0
DEST="${1:-${VCNODE_LIBTORCH:-$HOME/.cache/vcnode/libtorch-$TORCH_VERSION}}"
STAMP="$DEST/.complete"
if [ -f "$STAMP" ]; then echo "$DEST"; exit 0; fi

PY=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/vcnode-libtorch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching torch $TORCH_VERSION wheels (about 545 MB) into $work" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work" "torch==$TORCH_VERSION" "nvidia-cuda-runtime==13.0.96.*" "nvidia-cuda-cupti==13.0.85.*" >&2

rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/lib" "$DEST.tmp/include"
"$PY" - "$work" "$DEST.tmp" <<'PY'
import sys, zipfile, glob, os, shutil
work, dest = sys.argv[1], sys.argv[2]
want_torch = {"libc10.so", "libtorch_cpu.so", "libtorch.so", "libgomp.so.1", "libshm.so"}
want_cuda = {"libcudart.so.13", "libcupti.so.13"}
for whl in glob.glob(os.path.join(work, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            name = info.filename
            base = os.path.basename(name)
            if name.startswith("torch/include/") and not name.endswith("/"):
                out = os.path.join(dest, "include", name[len("torch/include/"):])
            elif name.startswith("torch/lib/") and base in want_torch:
                out = os.path.join(dest, "lib", base)
            elif "/cu13/lib/" in name and base in want_cuda:
                out = os.path.join(dest, "lib", base)
            else:
                continue
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
missing = (want_torch | want_cuda) - set(os.listdir(os.path.join(dest, "lib")))
if missing:
    sys.exit(f"libtorch wheels lacked {sorted(missing)}")
PY
echo "$TORCH_VERSION" > "$DEST.tmp/build-version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
touch "$STAMP"
echo "$DEST"
