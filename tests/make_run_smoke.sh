#!/usr/bin/env bash
# `make run` starts the node on its embedded defaults and dcmtk's echoscu gets success from the
# default peer (MODALITY at 127.0.0.1), and the OHIF viewer (viewer/ohif, scripts/fetch-viewer.sh)
# is served at / with vcnode's app config, and QIDO-RS answers under /dicomweb. Authentication is on
# by default ([auth] required): QIDO-RS without a token is refused, a reader token made with the
# release binary (`vcnode tokens create`, as the README's quick start says) is accepted, and the
# viewer is reached after signing in with that token on the login page. Only the ports and data_dir are overridden, so the
# test neither collides with a running node nor writes into the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
port=$(scripts/free-port)
http_port=$(scripts/free-port)
VCNODE__NODE__DIMSE_PORT=$port VCNODE__NODE__HTTP_PORT=$http_port VCNODE__NODE__DATA_DIR=$tmp/var setsid make --no-print-directory run >"$tmp/run.log" 2>&1 &
pid=$!
cleanup() { kill -TERM -- -"$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q "listening on" "$tmp/run.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/run.log"; echo "make run exited"; exit 1; }
  sleep 1
done
grep -q "listening on" "$tmp/run.log" || { cat "$tmp/run.log"; echo "make run did not start the node"; exit 1; }
if ! /usr/bin/echoscu -aet MODALITY -aec VCNODE 127.0.0.1 "$port"; then
  cat "$tmp/run.log"; echo "make run: C-ECHO failed"; echo "0 passed, 1 failed"; exit 1
fi
echo "make run: C-ECHO from MODALITY to VCNODE on port $port succeeded"
base="http://127.0.0.1:$http_port"
anonymous=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/dicom+json' "$base/dicomweb/studies" || true)
if [[ $anonymous != "401" ]]; then
  cat "$tmp/run.log"; echo "make run: QIDO-RS without a token answered HTTP $anonymous, not 401"
  echo "1 passed, 1 failed"; exit 1
fi
token=$(VCNODE__NODE__DATA_DIR=$tmp/var ./target/release/vcnode tokens create --name smoke --role reader --config conf/vcnode.toml)
studies=$(curl -fsS -H "Authorization: Bearer $token" -H 'Accept: application/dicom+json' "$base/dicomweb/studies" || true)
if [[ $studies == "[]" ]]; then
  echo "make run: QIDO-RS at $base/dicomweb/studies refuses no token and answers a reader token (no studies yet)"
else
  cat "$tmp/run.log"; echo "make run: QIDO-RS at $base/dicomweb/studies answered: $studies"
  echo "1 passed, 1 failed"; exit 1
fi
jar="$tmp/cookies"
curl -fsS -o /dev/null -c "$jar" --data-urlencode "token=$token" --data-urlencode "next=/" "$base/login" || true
index=$(curl -fsS -b "$jar" "$base/" || true)
app_config=$(curl -fsS "$base/app-config.js" || true)
if grep -q "viewer on http://localhost:$http_port/" "$tmp/run.log" \
  && [[ $index == *'src="/app-config.js"'* ]] && [[ $app_config == *'@vcnode/mammo-le-rc'* ]]; then
  echo "make run: the OHIF viewer is served at $base/ with vcnode's app config"
  echo "3 passed, 0 failed"
else
  cat "$tmp/run.log"; echo "make run: the viewer is not served at $base/ (scripts/fetch-viewer.sh)"
  echo "2 passed, 1 failed"; exit 1
fi
