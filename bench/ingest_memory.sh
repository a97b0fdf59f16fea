#!/usr/bin/env bash
# Ingest memory benchmark (issue 13, item 6): SENDERS calling AE titles x ASSOCS concurrent
# associations each (default 4 x 8 = 32, one dcmtk storescu per association) send real-size
# mammograms (3328x4096, 16 bits allocated, ~27 MB each, Explicit VR LE) over loopback to
#   (a) vcnode (release build, processing on, as shipped), then
#   (b) dcmtk's storescp --fork (one child process per association), in the same run.
# Reports:
#   - vcnode's peak resident memory: VmHWM of the process from /proc/PID/status, read after the
#     ingest and PROCESS_S more seconds of processing (the workers hold full-size images too);
#   - the memory bound the design guarantees, computed from the configuration the node was
#     started with (node.max_associations, node.max_pdu_length, jobs.workers), with its terms;
#   - storescp's peak for comparison: the sum of VmRSS over the storescp parent and its forked
#     children, and the largest child's VmHWM, sampled every 20 ms (children exit; a sample can
#     miss a short-lived peak, so these are lower bounds);
#   - the ingest ratio vcnode/storescp (wall time for all associations; above 1: vcnode faster).
# vcnode fsyncs every file and commits a SQLite row before acknowledging; storescp does not.
#
# The bound: baseline + max_associations x (3 x max_pdu_length + PER_ASSOCIATION) + workers x PER_JOB.
#   baseline        vcnode's resident memory when idle after start-up (binary, libtorch, model),
#                   measured in this run before any association;
#   3 x max_pdu_length  what the SCP holds per association while a PDU arrives: its read buffer,
#                   dicom-ul's decoded copy and the fragment being spooled (scp/src/scp.rs); data
#                   sets stream to a spool file, so the instance size does not enter;
#   PER_ASSOCIATION the spool write buffer (64 KiB) and the command set cap (16 KiB)
#                   (env BOUND_PER_ASSOCIATION_BYTES);
#   PER_JOB         bytes one worker holds for one image: the file, its decoded pixels, the
#                   windowed and restored float images and the derived instance, about 24 bytes
#                   per pixel (env BOUND_PER_JOB_BYTES, or BOUND_PER_JOB_BYTES_PER_PIXEL).
# Connections still negotiating add at most node.max_pending_associations x 64 KiB (none here).
set -euo pipefail
cd "$(dirname "$0")/.."
SENDERS=${BENCH_SENDERS:-4}
ASSOCS=${BENCH_ASSOCIATIONS_PER_SENDER:-8}
PER_ASSOC=${BENCH_FILES_PER_ASSOCIATION:-2}
PROCESS_S=${BENCH_PROCESS_S:-30}
ROWS=4096
COLUMNS=3328
PER_ASSOCIATION_BYTES=${BOUND_PER_ASSOCIATION_BYTES:-81920}
PER_JOB_BYTES_PER_PIXEL=${BOUND_PER_JOB_BYTES_PER_PIXEL:-24}
PER_JOB_BYTES=${BOUND_PER_JOB_BYTES:-$((ROWS * COLUMNS * PER_JOB_BYTES_PER_PIXEL))}
bin=./target/release/vcnode
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vcnode-bench-memory.XXXXXX")
. scripts/lib.sh

associations=$((SENDERS * ASSOCS))
n=$((associations * PER_ASSOC))
echo "generating $n mammograms of ${COLUMNS}x${ROWS} ..."
"$bin" fixture --out "$tmp/src" --count "$n" --rows "$ROWS" --columns "$COLUMNS"
bytes=$(du -cb "$tmp"/src/*.dcm | tail -1 | cut -f1)
mapfile -t files < <(ls "$tmp"/src/*.dcm)

vport=$(scripts/free-port)
sport=$(scripts/free-port)
peers=""
for s in $(seq 1 "$SENDERS"); do peers+=$'[[peers]]\nae_title = "SENDER'"$s"$'"\n'; done
# Only what differs from the embedded defaults (conf/vcnode.toml); the bound is computed from
# the merged values, so a key added here is taken into account.
cat >"$tmp/vcnode.toml" <<TOML
[node]
bind = "127.0.0.1"
dimse_port = $vport
http_port = 0
data_dir = "$tmp/vcnode"
$peers
[inference]
device = "cpu"
TOML
read -r max_assoc max_pdu workers < <(python3 - conf/vcnode.toml "$tmp/vcnode.toml" <<'PY'
import sys, tomllib
merged = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for section, values in tomllib.load(f).items():
            if isinstance(values, dict):
                merged.setdefault(section, {}).update(values)
# The node applies VCNODE__SECTION__KEY from the environment last; so does the bound.
import os
for k, v in os.environ.items():
    parts = k.split("__")
    if parts[0] == "VCNODE" and len(parts) == 3:
        merged.setdefault(parts[1].lower(), {})[parts[2].lower()] = int(v) if v.isdigit() else v
print(merged["node"]["max_associations"], merged["node"]["max_pdu_length"], merged["jobs"]["workers"])
PY
)
if [ "$associations" -gt "$max_assoc" ]; then
  echo "BENCH_SENDERS x BENCH_ASSOCIATIONS_PER_SENDER = $associations exceeds node.max_associations = $max_assoc" >&2
  exit 1
fi

rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# Samples a process and its descendants until killed: writes to $2 the peak of their summed
# VmRSS (kB) and the largest VmHWM (kB) seen among the descendants (one per association with
# storescp --fork). Children exit, so both are sampled, every 20 ms.
sample_tree() {
  python3 - "$1" "$2" <<'PY' &
import os, sys, time
root, out = int(sys.argv[1]), sys.argv[2]
peak_sum = peak_child = 0
def status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
def tree(pid):
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out += tree(int(c))
    except OSError:
        pass
    return out
while os.path.exists(f"/proc/{root}"):
    pids = tree(root)
    total = sum(status(p, "VmRSS:") for p in pids)
    child = max([status(p, "VmHWM:") for p in pids[1:]] or [0])
    if total > peak_sum or child > peak_child:
        peak_sum, peak_child = max(peak_sum, total), max(peak_child, child)
        with open(out, "w") as f:
            f.write(f"{peak_sum} {peak_child}\n")
    time.sleep(0.02)
PY
  pids+=($!)
}

# All associations at once; prints the wall time in seconds. $1 called AE, $2 port.
send_all() {
  local t0 t1 s a k
  rm -f "$tmp"/scu-*.log
  t0=$(date +%s.%N)
  local scus=()
  for s in $(seq 1 "$SENDERS"); do
    for a in $(seq 1 "$ASSOCS"); do
      k=$(( ((s - 1) * ASSOCS + a - 1) * PER_ASSOC ))
      /usr/bin/storescu -v -aet "SENDER$s" -aec "$1" 127.0.0.1 "$2" "${files[@]:$k:$PER_ASSOC}" \
        >"$tmp/scu-$s-$a.log" 2>&1 &
      scus+=($!)
    done
  done
  local failed=0
  for p in "${scus[@]}"; do wait "$p" || failed=1; done
  t1=$(date +%s.%N)
  local ok
  ok=$(cat "$tmp"/scu-*.log | grep -c "Received Store Response (Success)" || true)
  if [ "$failed" -ne 0 ] || [ "$ok" -ne "$n" ]; then
    echo "$1: $ok of $n stores acknowledged; first failing storescu log:" >&2
    grep -L "Received Store Response (Success)" "$tmp"/scu-*.log | head -1 | xargs -r cat >&2
    grep -l "Error\|Failed\|Refused" "$tmp"/scu-*.log | head -1 | xargs -r cat >&2
    exit 1
  fi
  python3 -c "print($t1 - $t0)"
}

# (a) vcnode
VCNODE_LOG=warn "$bin" serve --config "$tmp/vcnode.toml" >"$tmp/vcnode.out" 2>"$tmp/vcnode.log" &
vpid=$!
pids+=("$vpid")
for _ in $(seq 1 300); do grep -q "listening on" "$tmp/vcnode.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$tmp/vcnode.out" || { cat "$tmp/vcnode.log"; exit 1; }
sleep 1
idle_kb=$(rss_kb "$vpid" VmRSS)
echo "sending: $SENDERS senders x $ASSOCS associations x $PER_ASSOC files to vcnode ..."
tv=$(send_all VCNODE "$vport")
ingest_hwm_kb=$(rss_kb "$vpid" VmHWM)
sleep "$PROCESS_S"
hwm_kb=$(rss_kb "$vpid" VmHWM)
jobs_done=$(sqlite3 "$tmp/vcnode/vcnode.sqlite" "SELECT COUNT(*) FROM jobs WHERE state = 'done'" 2>/dev/null || echo "?")
kill "$vpid"; wait "$vpid" 2>/dev/null || true
rm -rf "$tmp/vcnode"

# (b) storescp, one child per association
mkdir -p "$tmp/storescp"
/usr/bin/storescp --fork --aetitle STORESCP --output-directory "$tmp/storescp" "$sport" >"$tmp/storescp.log" 2>&1 &
spid=$!
pids+=("$spid")
for _ in $(seq 1 100); do /usr/bin/echoscu -aec STORESCP 127.0.0.1 "$sport" 2>/dev/null && break; sleep 0.1; done
sample_tree "$spid" "$tmp/storescp.peak"
echo "sending: the same to storescp --fork ..."
ts=$(send_all STORESCP "$sport")
sleep 0.5
read -r storescp_peak_kb storescp_child_kb < <(cat "$tmp/storescp.peak" 2>/dev/null || echo 0 0)

python3 - <<PY
mb = lambda b: b / 1e6
n, size, tv, ts = $n, $bytes, $tv, $ts
idle, ingest_hwm, hwm = $idle_kb * 1024, $ingest_hwm_kb * 1024, $hwm_kb * 1024
sp, sc = $storescp_peak_kb * 1024, $storescp_child_kb * 1024
max_assoc, max_pdu, workers = $max_assoc, $max_pdu, $workers
per_assoc, per_job = $PER_ASSOCIATION_BYTES, $PER_JOB_BYTES
bound = idle + max_assoc * (3 * max_pdu + per_assoc) + workers * per_job
print(f"ingest of {n} x {mb(size / n):.0f} MB mammograms, $SENDERS senders x $ASSOCS associations at once:")
print(f"  vcnode   {n / tv:6.2f} inst/s {mb(size) / tv:7.1f} MB/s")
print(f"  storescp {n / ts:6.2f} inst/s {mb(size) / ts:7.1f} MB/s (--fork)")
print(f"  ratio vcnode/storescp = {ts / tv:.3f} (above 1: vcnode faster)")
print(f"memory:")
print(f"  vcnode peak RSS (VmHWM): {mb(hwm):.0f} MB after ingest and $PROCESS_S s of processing "
      f"({mb(ingest_hwm):.0f} MB when the last association ended; {'$jobs_done'} jobs done); idle after start {mb(idle):.0f} MB")
print(f"  storescp peak RSS, sampled every 20 ms: {mb(sp):.0f} MB summed over the parent and its children;"
      f" largest child (one association) {mb(sc):.0f} MB")
print(f"  bound = baseline {mb(idle):.0f} MB + max_associations {max_assoc} x (max_pdu_length {max_pdu} B"
      f" x 3 + per-association {per_assoc} B) + workers {workers} x per-job {per_job} B = {mb(bound):.0f} MB")
print(f"  vcnode's peak above its idle baseline, per concurrent association: {mb((hwm - idle) / $associations):.1f} MB"
      f" (the workers' images included; one image is {mb(size / n):.1f} MB)")
verdict = "under" if hwm <= bound else "OVER"
print(f"  vcnode peak {mb(hwm):.0f} MB is {verdict} the bound {mb(bound):.0f} MB ({hwm / bound:.2f} of it)")
PY
