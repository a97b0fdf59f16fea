#!/usr/bin/env bash
# A Python with the DICOMweb and imaging peers the tests use: dicomweb-client (a DICOMweb client
# nobody here wrote), pydicom, numpy and Pillow (to compare what vcnode serves with what was
# sent), prometheus-client (Prometheus's own text-format parser, for /metrics) and pynetdicom (a
# DICOM TLS peer: Debian's dcmtk is built without TLS).
# Idempotent. Prints the interpreter's path.
#
#   scripts/fetch-pytools.sh [DIR]      (default: $HOME/.cache/vcnode/pytools)
set -euo pipefail
DEST="${1:-$HOME/.cache/vcnode/pytools}"
packages=("dicomweb-client==0.60.1" "pydicom>=3,<4" "numpy<3" "pillow<12" "requests<3" "prometheus-client==0.26.0" "pynetdicom==3.0.4")
if [ -x "$DEST/bin/python" ] && "$DEST/bin/python" -c 'import dicomweb_client, pydicom, numpy, PIL, requests, prometheus_client, pynetdicom' 2>/dev/null; then
  echo "$DEST/bin/python"; exit 0
fi
echo "installing dicomweb-client, pydicom, numpy, Pillow, prometheus-client and pynetdicom into $DEST (once)" >&2
python3 -m venv "$DEST" >&2
"$DEST/bin/pip" install --quiet "${packages[@]}" >&2
echo "$DEST/bin/python"
