"""Helper of bench/dicomweb.sh: writes the small-instance data set, then measures QIDO-RS and
WADO-RS against two DICOMweb servers (vcnode and Orthanc's plugin) on the same data.

  dicomweb.py generate TEMPLATE OUT_DIR STUDIES
      TEMPLATE: a small LE mammogram written by `vcnode fixture` (so vcnode's ingest accepts it);
      writes STUDIES studies x 4 views (L/R x CC/MLO) over STUDIES/5 patients with names, birth
      dates, study dates spread over 2020-2026, accession numbers and descriptions, and
      OUT_DIR/plan.json naming the values the queries use.
  dicomweb.py measure PLAN BIG_FILE VCNODE_ROOT ORTHANC_ROOT QIDO_REPS WADO_REPS
      PLAN: the plan.json above; BIG_FILE: the 27 MB instance both servers hold.

Timings are curl's (time_total: from the start of the request to the last byte of the body),
one curl per kind of request with a kept-alive connection per server, vcnode and Orthanc
alternating request by request so that both see the same machine load; each kind is sent once to
both before timing. curl, not Python: Python's HTTP client reads a 27 MB answer several times
slower than either server sends it. Python (requests, pydicom) only checks the answers.
"""

import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile

import pydicom
import requests
from pydicom.uid import generate_uid

SURNAMES = [
    "NIELSEN", "HANSEN", "MUELLER", "SCHMIDT", "ROSSI", "RUSSO", "GARCIA", "MARTINEZ", "SMITH",
    "JONES", "DUBOIS", "MOREAU", "NOVAK", "KOWALSKI", "NAGY", "SILVA", "SANTOS", "PEREIRA",
    "JANSEN", "DE VRIES", "LARSEN", "BERG", "VIRTANEN", "KORHONEN", "PAPADOPOULOU", "MURPHY",
    "KELLY", "WALSH", "HORVATH", "POPESCU", "IVANOVA", "PETROVA", "YILMAZ", "KAYA", "COHEN",
    "LEVI", "TANAKA", "SATO", "KIM", "LEE", "NGUYEN", "TRAN", "WANG", "LI", "ZHANG", "SINGH",
    "PATEL", "OKAFOR", "MENSAH", "DIALLO",
]
GIVEN = ["ANNA", "MARIA", "EVA", "SARA", "LAURA", "ELENA", "IDA", "NORA", "CLARA", "HELEN"]
VIEWS = [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
DESCRIPTIONS = ["MG CESM BILATERAL", "MG SCREENING BILATERAL", "MG DIAGNOSTIC"]
STUDIES_PER_PATIENT = 5

# OHIF's study list request (OHIF 3, DicomWebDataSource, first page).
OHIF_INCLUDE = "00081030,00080060,00080090,00100030"


def day(n):
    """The n-th day from 2020-01-01 as a DICOM DA."""
    return (datetime.date(2020, 1, 1) + datetime.timedelta(days=n)).strftime("%Y%m%d")


def generate(template, out, studies):
    os.makedirs(out, exist_ok=True)
    ds = pydicom.dcmread(template)
    patients = studies // STUDIES_PER_PATIENT
    plan = {"studies": studies, "instances": studies * len(VIEWS)}
    state = 0x2545F4914F6CDD1D
    for p in range(patients):
        surname = SURNAMES[p % len(SURNAMES)]
        given = GIVEN[(p // len(SURNAMES)) % len(GIVEN)]
        pid = f"PAT{p:05d}"
        birth = f"{1940 + p % 45}{1 + p % 12:02d}{1 + p % 28:02d}"
        for k in range(STUDIES_PER_PATIENT):
            s = p * STUDIES_PER_PATIENT + k
            state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
            date = day((state >> 33) % 2526)  # 2020-01-01 .. 2026-12-01
            study_uid = generate_uid(entropy_srcs=["vcnode-bench-study", str(s)])
            series_uid = generate_uid(entropy_srcs=["vcnode-bench-series", str(s)])
            for i, (lat, view) in enumerate(VIEWS):
                sop_uid = generate_uid(entropy_srcs=["vcnode-bench-instance", str(s), str(i)])
                ds.PatientName = f"{surname}^{given}"
                ds.PatientID = pid
                ds.PatientBirthDate = birth
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.SOPInstanceUID = sop_uid
                ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
                ds.StudyDate = date
                ds.SeriesDate = date
                ds.AccessionNumber = f"A{s:07d}"
                ds.StudyDescription = DESCRIPTIONS[s % len(DESCRIPTIONS)]
                ds.SeriesDescription = f"LE {len(VIEWS)} views"
                ds.ReferringPhysicianName = f"REFERRER^{GIVEN[s % len(GIVEN)]}"
                ds.StudyID = str(k + 1)
                ds.InstanceNumber = i + 1
                ds.ImageLaterality = lat
                ds.ViewPosition = view
                ds.PatientOrientation = ["P", "L"] if lat == "R" else ["A", "R"]
                ds.save_as(os.path.join(out, f"s{s:05d}-{i}.dcm"), enforce_file_format=True)
            if s == studies // 2:
                plan["study"] = study_uid
                plan["series"] = series_uid
    plan["patient_id"] = f"PAT{patients // 3:05d}"
    plan["name_pattern"] = "NIELS*"
    plan["date_range"] = "20250101-20250131"
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(plan, f, indent=1)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def multipart_parts(content_type, body):
    """The parts of a multipart/related body (enough of RFC 2046 for these two servers)."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if boundary is None:
        raise ValueError(f"no boundary in {content_type!r}")
    delim = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, rest = chunk.partition(b"\r\n\r\n")
        parts.append(rest[:-2] if rest.endswith(b"\r\n") else rest)
    return parts


def curl_times(urls, accept):
    """Sends GET to each URL in order with one curl (kept-alive connections, one per server);
    for each: (HTTP status, seconds from the start of the request to the last byte, bytes)."""
    with tempfile.NamedTemporaryFile("w", suffix=".curl") as k:
        for url in urls:
            k.write(f'url = "{url}"\noutput = "/dev/null"\n')
        k.flush()
        out = subprocess.run(
            ["curl", "-s", "-K", k.name, "-H", f"Accept: {accept}",
             "-w", "%{http_code} %{time_total} %{size_download}\n"],
            check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    if len(rows) != len(urls):
        raise SystemExit(f"curl answered {len(rows)} times for {len(urls)} requests")
    return [(int(c), float(t), int(n)) for c, t, n in rows]


def alternate(roots, path, accept, reps):
    """REPS timed requests for PATH to each root, alternating, after one untimed round."""
    names = list(roots)
    urls = [roots[n] + path for n in names] * (reps + 1)
    rows = curl_times(urls, accept)
    times = {n: [] for n in names}
    for i, (code, t, _) in enumerate(rows):
        name = names[i % len(names)]
        if code != 200:
            raise SystemExit(f"{name}: GET {path}: HTTP {code}")
        if i >= len(names):
            times[name].append(t)
    return times


def measure(plan_path, big_file, vroot, oroot, qido_reps, wado_reps):
    plan = json.load(open(plan_path))
    big = pydicom.dcmread(big_file)
    roots = {"vcnode": vroot, "orthanc": oroot}
    s, se = plan["study"], plan["series"]
    study_uid, series_uid, sop_uid = "0020000D", "0020000E", "00080018"
    queries = [
        ("study list (OHIF)", f"/studies?limit=101&offset=0&fuzzymatching=false&includefield={OHIF_INCLUDE}", None),
        ("studies by PatientID", f"/studies?PatientID={plan['patient_id']}&includefield={OHIF_INCLUDE}", study_uid),
        ("studies by PatientName wildcard", f"/studies?PatientName={plan['name_pattern']}&includefield={OHIF_INCLUDE}", study_uid),
        ("studies by StudyDate range", f"/studies?StudyDate={plan['date_range']}&includefield={OHIF_INCLUDE}", study_uid),
        ("series of one study", f"/studies/{s}/series", series_uid),
        ("instances of one series", f"/studies/{s}/series/{se}/instances", sop_uid),
    ]

    print(f"QIDO-RS over {plan['instances'] + 1} instances in {plan['studies'] + 1} studies; "
          f"{qido_reps} warm requests of each kind per server, alternating")
    print(f"  {'query':34} {'results':>7} | {'vcnode ms':>9} {'p95':>7} | {'Orthanc ms':>10} {'p95':>7} | Orthanc/vcnode")
    ratios = []
    mismatch = []
    for label, path, key in queries:
        # The sanity check: as many results, and the same ones where the answer is not cut by a
        # limit (the order of a limited answer is the server's).
        found = {}
        for name, root in roots.items():
            r = requests.get(root + path, headers={"Accept": "application/dicom+json"})
            if r.status_code != 200:
                raise SystemExit(f"{name}: GET {path}: {r.status_code} {r.headers.get('Warning', '')} {r.text[:300]}")
            answer = r.json() if r.content.strip() else []
            found[name] = sorted(str(a.get(key, {}).get("Value", [None])[0]) for a in answer) if key else len(answer)
        count = len(found["vcnode"]) if key else found["vcnode"]
        if found["vcnode"] != found["orthanc"]:
            ocount = len(found["orthanc"]) if key else found["orthanc"]
            mismatch.append(label)
            count = f"{count}!={ocount}" if count != ocount else f"{count}(!)"
        times = alternate(roots, path, "application/dicom+json", qido_reps)
        vm, om = statistics.median(times["vcnode"]) * 1e3, statistics.median(times["orthanc"]) * 1e3
        ratio = om / vm
        ratios.append(ratio)
        print(f"  {label:34} {count:>7} | {vm:9.2f} {percentile(times['vcnode'], 0.95) * 1e3:7.2f} | "
              f"{om:10.2f} {percentile(times['orthanc'], 0.95) * 1e3:7.2f} | {ratio:6.2f}")
    geo = statistics.geometric_mean(ratios)
    print(f"  QIDO-RS: geometric mean of the median ratios Orthanc/vcnode = {geo:.2f} (above 1: vcnode faster)")

    # WADO-RS: the 27 MB instance, as stored.
    path = (f"/studies/{big.StudyInstanceUID}/series/{big.SeriesInstanceUID}"
            f"/instances/{big.SOPInstanceUID}")
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    size = {}
    for name, root in roots.items():
        r = requests.get(root + path, headers={"Accept": accept})
        if r.status_code != 200:
            raise SystemExit(f"{name}: WADO-RS {path}: {r.status_code} {r.headers.get('Warning', '')}")
        parts = multipart_parts(r.headers["Content-Type"], r.content)
        if len(parts) != 1:
            raise SystemExit(f"{name}: WADO-RS answered {len(parts)} parts, not 1")
        got = pydicom.dcmread(io.BytesIO(parts[0]))
        if got.SOPInstanceUID != big.SOPInstanceUID or got.PixelData != big.PixelData:
            raise SystemExit(f"{name}: WADO-RS answered another instance or other pixels")
        size[name] = len(r.content)
    times = alternate(roots, path, accept, wado_reps)
    vt, ot = statistics.median(times["vcnode"]), statistics.median(times["orthanc"])
    print(f"WADO-RS of one {big.Columns}x{big.Rows} 16-bit instance, as stored (answers of "
          f"{size['vcnode'] / 1e6:.1f} MB from vcnode, {size['orthanc'] / 1e6:.1f} MB from Orthanc, "
          f"pixel data identical to what was sent); {wado_reps} requests per server, alternating")
    print(f"  vcnode  median {vt * 1e3:8.1f} ms  {size['vcnode'] / vt / 1e6:7.1f} MB/s")
    print(f"  Orthanc median {ot * 1e3:8.1f} ms  {size['orthanc'] / ot / 1e6:7.1f} MB/s")
    print(f"  WADO-RS: ratio Orthanc/vcnode of the median times = {ot / vt:.2f} (above 1: vcnode faster)")
    if mismatch:
        raise SystemExit(f"vcnode and Orthanc found different results for: {', '.join(mismatch)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "generate":
        generate(args[0], args[1], int(args[2]))
    elif cmd == "measure":
        measure(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]))
    else:
        raise SystemExit(__doc__)
