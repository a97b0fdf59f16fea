#!/usr/bin/env bash
# End-to-end processing benchmark on CPU with the shipped model: phantom LE mammograms at
# realistic size (3328x2560) are sent with dcmtk's storescu to a running vcnode.
#  - latency: one image at a time, C-STORE sent -> derived instance stored (job done)
#  - throughput: N images in flight at once, until all derived instances are stored
#  - split of the per-image time into prepare (decode + preprocess), inference, postprocess
#    (restore + build the derived instance), encode (write + fsync), from the node's log
# Peer: `vcnode process` on the same files (the same pipeline offline, no DIMSE and no queue),
# measured in the same run; the ratio says what the service around the pipeline costs.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-8}
bin=./target/release/vcnode
lab=./target/release/vcnode-lab
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vcnode-bench-pipeline.XXXXXX")
node_pid=
cleanup() { [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(scripts/free-port)
patients=$(( (N + 4) / 4 ))
"$lab" phantom --out "$tmp/ph" --patients "$patients" --seed 424242 --rows 3328 --columns 2560 >/dev/null
mapfile -t les < <(tail -n +2 "$tmp/ph/pairs.csv" | cut -d, -f1 | sed "s|^|$tmp/ph/|")
first=${les[0]}
batch=("${les[@]:1:$N}")
cat >"$tmp/vcnode.toml" <<TOML
[node]
bind = "127.0.0.1"
dimse_port = $port
http_port = 0
data_dir = "$tmp/var"
[[peers]]
ae_title = "BENCH"
[inference]
device = "cpu"
TOML
VCNODE_LOG=info "$bin" serve --config "$tmp/vcnode.toml" >"$tmp/out" 2>"$tmp/log" &
node_pid=$!
for _ in $(seq 1 300); do grep -q "listening on" "$tmp/out" && break; sleep 0.1; done
done_jobs() { sqlite3 "$tmp/var/vcnode.sqlite" "SELECT COUNT(*) FROM jobs WHERE state = 'done'" 2>/dev/null || echo 0; }
wait_done() { while [ "$(done_jobs)" -lt "$1" ]; do sleep 0.05; done; }
now() { date +%s.%N; }

t0=$(now); /usr/bin/storescu -aet BENCH -aec VCNODE 127.0.0.1 "$port" "$first"; wait_done 1; t1=$(now)
/usr/bin/storescu -aet BENCH -aec VCNODE 127.0.0.1 "$port" "${batch[@]}"; wait_done $((N + 1)); t2=$(now)
t3=$(now); VCNODE__INFERENCE__DEVICE=cpu "$bin" process --config "$tmp/vcnode.toml" --out "$tmp/offline" "${batch[@]}" >/dev/null; t4=$(now)
python3 - "$tmp/log" "$N" "$t0" "$t1" "$t2" "$t3" "$t4" <<'PY'
import re, sys, statistics as st
log, n = sys.argv[1], int(sys.argv[2])
t0, t1, t2, t3, t4 = map(float, sys.argv[3:8])
stages = {k: [] for k in ("prepare_ms", "inference_ms", "postprocess_ms", "encode_ms", "total_ms")}
for line in open(log):
    if "derived instance stored" in line:
        clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
        for k in stages:
            m = re.search(k + r"=(\d+)", clean)
            if m: stages[k].append(int(m.group(1)))
print(f"latency, one image 3328x2560 (C-STORE sent -> derived stored): {(t1 - t0) * 1000:.0f} ms")
print(f"throughput, {n} images in flight: {n / (t2 - t1):.2f} images/s")
print("per-image stages (mean ms over all jobs): " + ", ".join(
    f"{k[:-3]} {st.mean(v):.0f}" for k, v in stages.items() if v))
offline = n / (t4 - t3)
print(f"peer: vcnode process offline on the same {n} images: {offline:.2f} images/s "
      f"(process start and model load included)")
print(f"ratio node/offline throughput: {(n / (t2 - t1)) / offline:.2f} (1 = the service adds nothing)")
PY
