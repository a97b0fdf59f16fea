#!/usr/bin/env bash
# The whole mission on one machine: a local Orthanc (with DICOMweb) and vcnode on free ports;
# phantom LE studies sent with dcmtk's storescu; the synthetic RC series arriving in Orthanc.
# Prints the Orthanc URL of each derived series and writes PNG previews to var/demo/previews.
# Keeps both running until Ctrl-C (DEMO_EXIT=1: stop when done).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/vcnode
lab=./target/release/vcnode-lab
demo=${DEMO_DIR:-var/demo}
rm -rf "$demo" && mkdir -p "$demo/previews"
http=$(scripts/free-port); dicom=$(scripts/free-port); node=$(scripts/free-port)
. scripts/lib.sh

write_orthanc_config "$demo/orthanc.json" vcnode-demo "$PWD/$demo/orthanc" "$http" "$dicom"
/usr/sbin/Orthanc "$demo/orthanc.json" >"$demo/orthanc.log" 2>&1 &
pids+=($!)
cat >"$demo/vcnode.toml" <<TOML
[node]
bind = "127.0.0.1"
dimse_port = $node
data_dir = "$demo/vcnode"
[[peers]]
ae_title = "MODALITY"
host = "127.0.0.1"
[[destinations]]
name = "orthanc"
kind = "dimse"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = $dicom
[[routes]]
from_ae = "MODALITY"
to = ["orthanc"]
TOML
"$bin" serve --config "$demo/vcnode.toml" >"$demo/vcnode.out" 2>"$demo/vcnode.log" &
pids+=($!)
for _ in $(seq 1 200); do
  grep -q "listening on" "$demo/vcnode.out" 2>/dev/null && curl -sf "http://127.0.0.1:$http/system" >/dev/null && break
  sleep 0.1
done
echo "Orthanc: http://127.0.0.1:$http/app/explorer.html   vcnode: VCNODE@127.0.0.1:$node"

"$lab" phantom --out "$demo/phantom" --patients "${DEMO_PATIENTS:-2}" --seed 7 >/dev/null
mapfile -t les < <(tail -n +2 "$demo/phantom/pairs.csv" | cut -d, -f1 | sed "s|^|$demo/phantom/|")
echo "sending ${#les[@]} low-energy images with storescu …"
/usr/bin/storescu -aet MODALITY -aec VCNODE 127.0.0.1 "$node" "${les[@]}"
want=${#les[@]}
t0=$(date +%s)
until [ "$(sqlite3 "$demo/vcnode/vcnode.sqlite" "SELECT COUNT(*) FROM exports WHERE state = 'done'")" -ge "$want" ]; do
  sleep 0.5
  if [ $(( $(date +%s) - t0 )) -gt 600 ]; then "$bin" jobs --config "$demo/vcnode.toml"; exit 1; fi
done
echo "all $want synthetic RC instances are in Orthanc ($(( $(date +%s) - t0 )) s after the last C-STORE)"
python3 - "$http" "$demo/previews" <<'PY'
import json, sys, urllib.request
port, out = sys.argv[1], sys.argv[2]
get = lambda p: urllib.request.urlopen(f"http://127.0.0.1:{port}{p}").read()
for sid in json.loads(get("/series")):
    s = json.loads(get(f"/series/{sid}"))
    desc = s["MainDicomTags"].get("SeriesDescription", "")
    if not desc.startswith("AI SYNTHETIC RC"):
        continue
    print(f"{desc}\n  http://127.0.0.1:{port}/app/explorer.html#series?uuid={sid}")
    for iid in s["Instances"]:
        path = f"{out}/{iid}.png"
        open(path, "wb").write(get(f"/instances/{iid}/preview"))
        print(f"  preview: {path}")
PY
"$bin" jobs --config "$demo/vcnode.toml" | tail -1
if [ -z "${DEMO_EXIT:-}" ]; then echo "Ctrl-C to stop"; wait; fi
