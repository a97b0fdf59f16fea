#!/usr/bin/env bash
# C-STORE ingest benchmark: dcmtk's storescu sends N realistic mammograms (3328x4096, 16-bit,
# 12 stored, ~27 MB each, Explicit VR LE) over loopback, in one association, to
#   (a) vcnode (release build) and (b) dcmtk's storescp, measured in the same run, alternating,
# for R rounds. Prints instances/s, MB/s and the ratio vcnode/storescp per round and the median.
# Note: vcnode fsyncs every file and commits a SQLite transaction before acknowledging;
# storescp writes without fsync, so the ratio is against a peer that promises less.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-16}
R=${BENCH_ROUNDS:-3}
PDU=131072
bin=./target/release/vcnode
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vcnode-bench.XXXXXX")
. scripts/lib.sh

echo "generating $N mammograms of 3328x4096 ..."
"$bin" fixture --out "$tmp/src" --count "$N" --rows 4096 --columns 3328
bytes=$(du -cb "$tmp"/src/*.dcm | tail -1 | cut -f1)

# vcnode
vport=$(scripts/free-port)
cat >"$tmp/vcnode.toml" <<TOML
[node]
bind = "127.0.0.1"
dimse_port = $vport
http_port = 0
data_dir = "$tmp/vcnode"
max_pdu_length = $PDU
[[peers]]
ae_title = "BENCH"
[inference]
device = "cpu"
TOML
VCNODE_LOG=warn "$bin" serve --config "$tmp/vcnode.toml" >"$tmp/vcnode.out" 2>"$tmp/vcnode.log" &
pids+=($!)
# storescp
sport=$(scripts/free-port)
mkdir -p "$tmp/storescp"
/usr/bin/storescp --aetitle STORESCP --max-pdu $PDU --output-directory "$tmp/storescp" "$sport" >"$tmp/storescp.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "listening on" "$tmp/vcnode.out" 2>/dev/null && /usr/bin/echoscu -aec STORESCP 127.0.0.1 "$sport" 2>/dev/null && break
  sleep 0.1
done

send() { # called-ae port -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/storescu -aet BENCH -aec "$1" --max-pdu $PDU 127.0.0.1 "$2" "$tmp"/src/*.dcm >"$tmp/scu.log" 2>&1 \
    || { cat "$tmp/scu.log"; exit 1; }
  t1=$(date +%s.%N)
  grep -q "Store Response (.*[Ee]rror\|Refused" "$tmp/scu.log" && { cat "$tmp/scu.log"; exit 1; }
  python3 -c "print($t1 - $t0)"
}

ratios=()
for r in $(seq 1 "$R"); do

  tv=$(send VCNODE "$vport")
  ts=$(send STORESCP "$sport")
  rm -rf "$tmp"/storescp/*
  line=$(python3 - "$N" "$bytes" "$tv" "$ts" <<'PY'
import sys
n, b, tv, ts = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{n/tv:.2f} {b/tv/1e6:.1f} {n/ts:.2f} {b/ts/1e6:.1f} {ts/tv:.3f}")
PY
)
  read -r vi vm si sm ratio <<<"$line"
  echo "round $r: vcnode $vi inst/s $vm MB/s | storescp $si inst/s $sm MB/s | ratio vcnode/storescp $ratio"
  ratios+=("$ratio")
  # Make the next round store again: drop what vcnode holds (it answers duplicates without writing).
  kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
  rm -rf "$tmp/vcnode"
  VCNODE_LOG=warn "$bin" serve --config "$tmp/vcnode.toml" >"$tmp/vcnode.out" 2>"$tmp/vcnode.log" &
  pids[0]=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$tmp/vcnode.out" 2>/dev/null && break; sleep 0.1; done
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "ingest of $N x $((bytes / N / 1000000)) MB mammograms over loopback: median ratio vcnode/storescp = $median (above 1: vcnode faster)"
