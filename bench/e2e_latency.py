#!/usr/bin/env python3
"""End-to-end latency and throughput of a vcnode: from the C-STORE of an LE image by a
modality to the derived synthetic RC acknowledged by the PACS it is routed to.

  e2e_latency.py --vcnode BIN --images DIR [--device cuda|cpu] [--model MANIFEST]
                 [--count 20] [--senders 4] [--per-sender 10] [--out RESULTS.json]

The modality and the PACS are pynetdicom (a storage SCU and a storage SCP in this process);
the node runs as `vcnode serve` with its own data_dir. DIR holds LE images (`vcnode fixture`),
each with its own SOP Instance UID; one warms the node up, `--count` are sent one at a time
(a new association each, as a modality sends an exam image by image) and timed from the start
of the association to the derived instance's arrival at the PACS (p50, p95), then `--senders`
modalities send `--per-sender` images each at once (one association each) for the sustained
throughput. Used by bench/gpu.sh; runs on a CPU too (smaller images) to check the script.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, evt

SENDER = "MODALITY"


class Pacs:
    """A storage SCP that notes when each derived instance arrives, by its source LE UID."""

    def __init__(self):
        self.arrived = {}
        self.cond = threading.Condition()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        self.port = self.server.server_address[1]

    def on_store(self, event):
        now = time.perf_counter()
        ds = event.dataset
        src = None
        if "SourceImageSequence" in ds and len(ds.SourceImageSequence):
            src = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        with self.cond:
            self.arrived.setdefault(src, now)
            self.cond.notify_all()
        return 0x0000

    def wait(self, uids, limit):
        deadline = time.perf_counter() + limit
        with self.cond:
            while not all(u in self.arrived for u in uids):
                left = deadline - time.perf_counter()
                if left <= 0:
                    missing = [u for u in uids if u not in self.arrived]
                    raise SystemExit(f"{len(missing)} derived instance(s) did not arrive within {limit} s")
                self.cond.wait(left)
            return [self.arrived[u] for u in uids]


def start_node(args, work, pacs_port):
    config = os.path.join(work, "vcnode.toml")
    with open(config, "w") as f:
        f.write(
            f"""
[node]
bind = "127.0.0.1"
dimse_port = 0
http_port = 0
data_dir = "{work}/var"
[[peers]]
ae_title = "{SENDER}"
[inference]
device = "{args.device}"
model = "{args.model}"
max_batch = {args.max_batch}
[[destinations]]
name = "pacs"
kind = "dimse"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
[[routes]]
from_ae = "{SENDER}"
to = ["pacs"]
"""
        )
    log = open(os.path.join(work, "node.log"), "w")
    node = subprocess.Popen([args.vcnode, "serve", "--config", config], stdout=subprocess.PIPE, stderr=log, text=True)
    for line in node.stdout:
        m = re.search(r" listening on ([\d.]+):(\d+)", line)
        if m:
            return node, int(m.group(2))
    raise SystemExit(f"vcnode did not start; see {work}/node.log")


def send(port, paths):
    """One association, the files in order; the time each C-STORE started."""
    ae = AE(ae_title=SENDER)
    ae.requested_contexts = StoragePresentationContexts[:120]
    started = []
    t0 = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="VCNODE")
    if not assoc.is_established:
        raise SystemExit("association rejected")
    for i, p in enumerate(paths):
        ds = dcmread(p)
        started.append(t0 if i == 0 else time.perf_counter())
        status = assoc.send_c_store(ds)
        if not status or status.Status != 0:
            raise SystemExit(f"C-STORE failed: {status}")
    assoc.release()
    return started


def pct(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vcnode", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "../models/weights/scpa-unet.json"))
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--per-sender", type=int, default=10)
    ap.add_argument("--limit", type=float, default=600.0, help="seconds to wait for results")
    ap.add_argument("--out")
    a = ap.parse_args()
    a.model = os.path.abspath(a.model)

    files = sorted(os.path.join(a.images, f) for f in os.listdir(a.images) if f.endswith(".dcm"))
    need = 1 + a.count + a.senders * a.per_sender
    if len(files) < need:
        raise SystemExit(f"{a.images} holds {len(files)} images; {need} are needed")
    uid = {p: dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files[:need]}
    rows = dcmread(files[0], stop_before_pixels=True).Rows
    cols = dcmread(files[0], stop_before_pixels=True).Columns

    pacs = Pacs()
    work = tempfile.mkdtemp(prefix="vcnode-e2e-")
    node, port = start_node(a, work, pacs.port)
    try:
        warm = files[0]
        send(port, [warm])
        pacs.wait([uid[warm]], a.limit)

        latencies = []
        for p in files[1 : 1 + a.count]:
            (t0,) = send(port, [p])
            (t1,) = pacs.wait([uid[p]], a.limit)
            latencies.append(t1 - t0)

        rest = files[1 + a.count : need]
        groups = [rest[i :: a.senders] for i in range(a.senders)]
        starts = [None] * a.senders

        def modality(i):
            starts[i] = send(port, groups[i])[0]

        threads = [threading.Thread(target=modality, args=(i,)) for i in range(a.senders)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        arrivals = pacs.wait([uid[p] for p in rest], a.limit)
        wall = max(arrivals) - t0
    finally:
        node.terminate()
        node.wait(timeout=60)
        pacs.server.shutdown()

    result = {
        "image": f"{cols}x{rows}",
        "device": a.device,
        "model": os.path.basename(a.model),
        "latency_s": {
            "n": len(latencies),
            "p50": round(statistics.median(latencies), 3),
            "p95": round(pct(latencies, 0.95), 3),
            "mean": round(statistics.mean(latencies), 3),
            "max": round(max(latencies), 3),
        },
        "throughput": {
            "senders": a.senders,
            "images": len(rest),
            "wall_s": round(wall, 2),
            "images_per_s": round(len(rest) / wall, 2),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
