#!/usr/bin/env bash
# The OHIF viewer that vcnode serves at / : the prebuilt single-page app of npm's @ohif/app
# (its package/dist), unpacked into viewer/ohif (not committed: about 200 MB). vcnode serves
# its own app config (viewer/app-config.js, compiled in) instead of the one in the dist: it
# points OHIF at vcnode's /dicomweb and registers the mammography hanging protocol.
# Then the viewer test's browser driver (tests/viewer: playwright-core, pinned by its
# package-lock.json; it drives Debian's chromium, it downloads no browser).
# Idempotent.
#
#   scripts/fetch-viewer.sh [DIR]      (default: viewer/ohif in the checkout)
set -euo pipefail
VERSION=3.13.2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/viewer/ohif}"
command -v npm >/dev/null || { echo "npm is needed to fetch the OHIF viewer" >&2; exit 1; }
driver="$ROOT/tests/viewer"
want=$(node -p "require('$driver/package.json').dependencies['playwright-core']")
have=$(node -p "require('$driver/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  (cd "$driver" && npm ci --silent --no-audit --no-fund)
fi
# Gzipped copies of the files the viewer loads at start (about 45 MB, 10 MB gzipped) beside
# them: vcnode sends them to browsers that accept gzip (not the ONNX runtime under ort/, which
# only some AI tools load).
precompress() {
  find "$DEST" -maxdepth 1 -type f \( -name '*.js' -o -name '*.css' -o -name '*.wasm' -o -name '*.html' \) \
    ! -name app-config.js -size +1k -exec gzip -k -f -6 {} +
  touch "$DEST/.gzip-$VERSION"
}
if [ -f "$DEST/.ohif-$VERSION" ]; then
  [ -f "$DEST/.gzip-$VERSION" ] || precompress
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching OHIF viewer @ohif/app@$VERSION (about 50 MB, once)" >&2
(cd "$tmp" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tar -xzf "$tmp"/ohif-app-"$VERSION".tgz -C "$tmp" package/dist
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/package/dist" "$DEST"
precompress
touch "$DEST/.ohif-$VERSION"
