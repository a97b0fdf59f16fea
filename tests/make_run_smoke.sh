#!/usr/bin/env bash
# `make run` starts the node on its embedded defaults and dcmtk's echoscu gets success from the
# default peer (MODALITY at 127.0.0.1). Only the port and data_dir are overridden, so the test
# neither collides with a running node nor writes into the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
port=$(scripts/free-port)
VCNODE__NODE__DIMSE_PORT=$port VCNODE__NODE__DATA_DIR=$tmp/var setsid make --no-print-directory run >"$tmp/run.log" 2>&1 &
pid=$!
cleanup() { kill -TERM -- -"$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$tmp/run.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/run.log"; echo "make run exited"; exit 1; }
  sleep 1
done
grep -q "listening on" "$tmp/run.log" || { cat "$tmp/run.log"; echo "make run did not start the node"; exit 1; }
if /usr/bin/echoscu -aet MODALITY -aec VCNODE 127.0.0.1 "$port"; then
  echo "make run: C-ECHO from MODALITY to VCNODE on port $port succeeded"
  echo "1 passed, 0 failed"
else
  cat "$tmp/run.log"; echo "make run: C-ECHO failed"; echo "0 passed, 1 failed"; exit 1
fi
