#!/usr/bin/env bash
# The OHIF viewer that vcnode serves at / : the prebuilt single-page app of npm's @ohif/app
# (its package/dist), unpacked into viewer/ohif (not committed: about 200 MB). vcnode replaces
# its app-config.js with one pointing at its own /dicomweb and a mammography hanging protocol.
# Idempotent.
#
#   scripts/fetch-viewer.sh [DIR]      (default: viewer/ohif in the checkout)
set -euo pipefail
VERSION=3.13.2
DEST="${1:-$(cd "$(dirname "$0")/.." && pwd)/viewer/ohif}"
if [ -f "$DEST/.ohif-$VERSION" ]; then exit 0; fi
command -v npm >/dev/null || { echo "npm is needed to fetch the OHIF viewer" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching OHIF viewer @ohif/app@$VERSION (about 50 MB, once)" >&2
(cd "$tmp" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tar -xzf "$tmp"/ohif-app-"$VERSION".tgz -C "$tmp" package/dist
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/package/dist" "$DEST"
touch "$DEST/.ohif-$VERSION"
