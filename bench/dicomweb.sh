#!/usr/bin/env bash
# DICOMweb benchmark (issue 14): vcnode (release build) and Orthanc with its DICOMweb plugin
# (Debian's orthanc + orthanc-dicomweb, default settings) hold the same data, loaded in the same
# run, and answer the same requests:
#   - QIDO-RS over STUDIES x 4 small LE images (64x64, STUDIES/5 patients with names, birth dates,
#     study dates over 2020-2026) plus one full-size mammogram: OHIF's study list, studies by
#     PatientID, by a PatientName wildcard, by a StudyDate range, the series of one study, the
#     instances of one series; QIDO_REPS warm requests of each, median and p95 per server, and the
#     ratio Orthanc/vcnode of the medians (above 1: vcnode faster); both must find as many results;
#   - WADO-RS of the 3328x4096 16-bit instance (27 MB, Explicit VR LE) as stored
#     (transfer-syntax=*), WADO_REPS times: median time, MB/s and the ratio; both answers must hold
#     the pixel data that was sent.
# The data reach both servers by C-STORE (dcmtk's storescu, one association each, in parallel);
# the load times are printed too. TCP_NODELAY=1 makes dcmtk (storescu, and Orthanc's DICOM
# server) disable Nagle's algorithm, which Debian's build leaves on: with it, every small
# instance waits for a delayed ACK (40-90 ms each instead of about 1 ms). vcnode runs without a
# model (`[inference] model = ""`): its LE jobs queue and wait, so no inference competes with
# the requests. Timings are curl's, client-side, on kept-alive connections, alternating servers
# request by request; see bench/dicomweb.py.
# Knobs: BENCH_STUDIES (2500), BENCH_QIDO_REPS (30), BENCH_WADO_REPS (10), VCNODE_BIN, TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${BENCH_STUDIES:-2500}
QIDO_REPS=${BENCH_QIDO_REPS:-30}
WADO_REPS=${BENCH_WADO_REPS:-10}
bin=${VCNODE_BIN:-./target/release/vcnode}
py=$(scripts/fetch-pytools.sh)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vcnode-bench-dicomweb.XXXXXX")
. scripts/lib.sh

echo "generating $((STUDIES * 4)) small LE images in $STUDIES studies and one 3328x4096 mammogram ..."
"$bin" fixture --out "$tmp/template" --count 1 --rows 64 --columns 64
"$py" bench/dicomweb.py generate "$tmp/template/mg-00001.dcm" "$tmp/small" "$STUDIES"
mv "$tmp/small/plan.json" "$tmp/plan.json"
"$bin" fixture --out "$tmp/big" --count 1 --rows 4096 --columns 3328
big=$(ls "$tmp"/big/*.dcm)

# Orthanc, as the tests start it (tests/common/mod.rs).
ohttp=$(scripts/free-port); odicom=$(scripts/free-port)
mkdir -p "$tmp/orthanc"
write_orthanc_config "$tmp/orthanc.json" vcnode-bench "$tmp/orthanc" "$ohttp" "$odicom"
TCP_NODELAY=1 /usr/sbin/Orthanc "$tmp/orthanc.json" >"$tmp/orthanc.log" 2>&1 &
pids+=($!)

# vcnode, without a model: received LE images queue jobs that wait.
vhttp=$(scripts/free-port); vdicom=$(scripts/free-port)
cat >"$tmp/vcnode.toml" <<TOML
[node]
bind = "127.0.0.1"
dimse_port = $vdicom
http_port = $vhttp
data_dir = "$tmp/vcnode"
[[peers]]
ae_title = "BENCH"
[inference]
device = "cpu"
model = ""
# Orthanc here runs on its defaults, without credentials: vcnode too (requests are still
# audited as by a principal; the token lookup, one indexed SELECT, is left out).
[auth]
required = false
TOML
VCNODE_LOG=warn "$bin" serve --config "$tmp/vcnode.toml" >"$tmp/vcnode.out" 2>"$tmp/vcnode.log" &
pids+=($!)

for _ in $(seq 1 300); do
  grep -q "listening on" "$tmp/vcnode.out" 2>/dev/null && curl -sf "http://127.0.0.1:$ohttp/system" >/dev/null && break
  sleep 0.1
done
grep -q "listening on" "$tmp/vcnode.out" || { echo "vcnode did not start:"; cat "$tmp/vcnode.log"; exit 1; }
curl -sf "http://127.0.0.1:$ohttp/system" >/dev/null || { echo "Orthanc did not start:"; cat "$tmp/orthanc.log"; exit 1; }
version() { curl -sf "http://127.0.0.1:$ohttp$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Version"])'; }
echo "vcnode $("$bin" --version | awk '{print $NF}') ($bin); Orthanc $(version /system) with its DICOMweb plugin $(version /plugins/dicom-web), default settings"

load() { # label called-ae port -> prints seconds; storescu's log in $tmp/scu-<label>.log
  local t0 t1 log="$tmp/scu-$1.log"
  t0=$(date +%s.%N)
  TCP_NODELAY=1 /usr/bin/storescu -aet BENCH -aec "$2" +sd +sp '*.dcm' 127.0.0.1 "$3" "$tmp/small" "$big" >"$log" 2>&1 \
    || { echo "storescu to $1 failed:"; tail -20 "$log"; return 1; }
  t1=$(date +%s.%N)
  if grep -q "Store Response (.*[Ee]rror\|Refused\|Failed" "$log"; then
    echo "storescu to $1: a store failed:"; grep -m5 "Error\|Refused\|Failed" "$log"; return 1
  fi
  python3 -c "print(f'{$t1 - $t0:.1f}')"
}
echo "loading $((STUDIES * 4 + 1)) instances into both by C-STORE (one storescu each, in parallel) ..."
load vcnode VCNODE "$vdicom" >"$tmp/t-vcnode" &
lv=$!
load orthanc ORTHANC "$odicom" >"$tmp/t-orthanc" &
lo=$!
wait $lv || { cat "$tmp/t-vcnode"; exit 1; }
wait $lo || { cat "$tmp/t-orthanc"; exit 1; }
want=$((STUDIES * 4 + 1))
have_o=$(curl -sf "http://127.0.0.1:$ohttp/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])')
have_v=$(sqlite3 "$tmp/vcnode/vcnode.sqlite" "SELECT COUNT(*) FROM instances")
echo "  vcnode: $have_v instances in $(cat "$tmp/t-vcnode") s; Orthanc: $have_o instances in $(cat "$tmp/t-orthanc") s"
[ "$have_v" -eq "$want" ] && [ "$have_o" -eq "$want" ] || { echo "expected $want instances in each"; exit 1; }

"$py" bench/dicomweb.py measure "$tmp/plan.json" "$big" \
  "http://127.0.0.1:$vhttp/dicomweb" "http://127.0.0.1:$ohttp/dicom-web" "$QIDO_REPS" "$WADO_REPS"
