#!/usr/bin/env bash
# One-time setup of a fresh Debian machine: the system packages the build and the tests use,
# then libtorch. Safe to run again.
#   dcmtk        real DIMSE peers (storescu, echoscu, storescp) and converters
#   dicom3tools  dciodvfy, the DICOM validator
#   libgdcm-tools gdcmconv (JPEG 2000)
#   cmake        builds CharLS (JPEG-LS) for dicom-pixeldata
#   orthanc, orthanc-dicomweb  a real PACS for the delivery tests (started by the tests)
#   python3-venv the PyTorch peer of `make bench` (scripts/fetch-pytorch.sh) and the DICOMweb
#                client of the tests (scripts/fetch-pytools.sh)
#   chromium     headless browser for the viewer test (OHIF served by vcnode)
#   nodejs, npm  fetch OHIF (npm @ohif/app) and drive chromium in the viewer test (playwright-core)
# Then libtorch, the tests' Python tools and the OHIF viewer (npm); on a machine with an NVIDIA
# driver also torch 2.11's CUDA libraries (see below).
set -euo pipefail
packages=(dcmtk dicom3tools libgdcm-tools cmake sqlite3 curl orthanc orthanc-dicomweb python3-venv chromium)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node.js (>= 18) and npm fetch the OHIF viewer and run the viewer test's browser driver; a
# Node.js installed otherwise (e.g. NodeSource's, which bundles npm) is used as it is.
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
"$(dirname "$0")/fetch-libtorch.sh" >/dev/null
"$(dirname "$0")/fetch-pytools.sh" >/dev/null
"$(dirname "$0")/fetch-viewer.sh"
# A GPU: the node links the CPU libtorch and loads libtorch_cuda.so at run time
# (models/src/device.rs); it comes, with the nvidia-* libraries it links against, from PyPI's
# torch 2.11 wheel, installed by fetch-pytorch.sh into ~/.cache/vcnode/pytorch-2.11.0, where the
# node looks for it (and where `make bench` finds its PyTorch peer). No driver: nothing more.
if [ -e /proc/driver/nvidia/version ] || nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA driver found: fetching torch 2.11's CUDA libraries (about 3 GB, once)"
  "$(dirname "$0")/fetch-pytorch.sh" >/dev/null
fi
echo "setup complete"
