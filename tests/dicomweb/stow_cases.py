"""STOW-RS into vcnode, good and bad requests (tests/dicomweb_stow.rs runs this).

Usage: stow_cases.py BASE_URL FIXTURE_DIR REPORT_JSON

BASE_URL is vcnode's DICOMweb root (http://127.0.0.1:PORT/dicomweb). FIXTURE_DIR holds
le-*.dcm (low-energy mammograms of one study), ct.dcm (a CT instance) and other-study.dcm (an
LE image of another study). Stores with Python's dicomweb-client (a client nobody here wrote)
and, where a client would refuse to send it, with raw HTTP; checks each answer against
PS3.18 10.5.3 and that the node keeps serving after each bad request. Writes REPORT_JSON with
what was stored, for the Rust side to check against the node's database.
"""
import glob
import io
import json
import os
import subprocess
import sys

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from common import check, fail

BASE, FIXTURES, REPORT = sys.argv[1], sys.argv[2], sys.argv[3]
PART10_TYPE = 'multipart/related; type="application/dicom"; boundary="{}"'
BOUNDARY = "vcnode-test-3f1d"

REFERENCED, FAILED, RETRIEVE_URL = "00081199", "00081198", "00081190"
FAILURE_REASON, ERROR_COMMENT, SOP_INSTANCE = "00081197", "00000902", "00081155"


statuses = []
session = requests.Session()
session.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
client = DICOMwebClient(url=BASE, session=session)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sop_of(ds):
    return str(ds.SOPInstanceUID)


def ref_of(item):
    return str(item.ReferencedSOPInstanceUID)


def multipart(parts, content_types=None, close=True):
    """A multipart/related body as dicomweb-client writes it; `close=False` leaves it unended."""
    out = io.BytesIO()
    for i, part in enumerate(parts):
        ct = content_types[i] if content_types else "application/dicom"
        out.write(f"\r\n--{BOUNDARY}\r\nContent-Type: {ct}\r\n\r\n".encode())
        out.write(part)
    if close:
        out.write(f"\r\n--{BOUNDARY}--".encode())
    return out.getvalue()


def post(body, content_type=PART10_TYPE.format(BOUNDARY), path="/studies"):
    return requests.post(BASE + path, data=body, headers={"Content-Type": content_type}, timeout=60)


def items(answer, tag):
    return (answer.get(tag) or {}).get("Value") or []


def value(item, tag):
    v = (item.get(tag) or {}).get("Value") or [None]
    return v[0]


def failures(rsp):
    """(SOP Instance UID or None, Failure Reason, Error Comment) of each failed instance."""
    check(rsp.headers.get("Content-Type") == "application/dicom+json",
          f"answer must be application/dicom+json, got {rsp.headers.get('Content-Type')}")
    return [(value(i, SOP_INSTANCE), value(i, FAILURE_REASON), value(i, ERROR_COMMENT))
            for i in items(rsp.json(), FAILED)]


les = sorted(glob.glob(os.path.join(FIXTURES, "le-*.dcm")))
check(len(les) >= 5, f"need 5 LE fixtures, found {len(les)}")
le_ds = [pydicom.dcmread(p) for p in les]
ct_path = os.path.join(FIXTURES, "ct.dcm")
other_path = os.path.join(FIXTURES, "other-study.dcm")
study = str(le_ds[0].StudyInstanceUID)


def instance_url(ds):
    return f"{BASE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def serving(what):
    """After a bad request the node still stores: a duplicate of a stored instance is 200. This
    request is small, so dicomweb-client sends it whole, with a Host header without the port:
    the RetrieveURL still names the port the node listens on."""
    statuses.clear()
    answer = client.store_instances([le_ds[0]])
    check(statuses[-1] == 200, f"after {what}: a good store got {statuses[-1]}")
    check([ref_of(i) for i in answer.ReferencedSOPSequence] == [sop_of(le_ds[0])],
          f"after {what}: the good store is not referenced")
    url = answer.ReferencedSOPSequence[0].RetrieveURL
    check(url == instance_url(le_ds[0]), f"after {what}: RetrieveURL {url}")


# 1. Three LE images by dicomweb-client: 200, each referenced with its RetrieveURL.
statuses.clear()
answer = client.store_instances(le_ds[:3])
check(statuses == [200], f"store of 3 LE images: statuses {statuses}")
check("FailedSOPSequence" not in answer, "no instance may fail")
refs = answer.ReferencedSOPSequence
check(sorted(ref_of(i) for i in refs) == sorted(sop_of(d) for d in le_ds[:3]), "referenced instances")
for item, ds in zip(sorted(refs, key=ref_of), sorted(le_ds[:3], key=sop_of)):
    check(str(item.ReferencedSOPClassUID) == str(ds.SOPClassUID), "referenced SOP class")
    check(item.RetrieveURL == instance_url(ds), f"instance RetrieveURL {item.RetrieveURL} != {instance_url(ds)}")
check(answer.RetrieveURL == f"{BASE}/studies/{study}", f"study RetrieveURL {answer.RetrieveURL}")

# 2. A duplicate store is fine (200, referenced), as a duplicate C-STORE is a success.
serving("a first store")

# 3. To the study's own URL: stored; another study's instance there fails with A900.
statuses.clear()
answer = client.store_instances([le_ds[3]], study_instance_uid=study)
check(statuses == [200], f"store to /studies/{{study}}: {statuses}")
rsp = post(multipart([read(other_path)]), path=f"/studies/{study}")
check(rsp.status_code == 409, f"another study's instance to /studies/{{study}}: {rsp.status_code} {rsp.text}")
(uid, reason, comment), = failures(rsp)
check(uid == sop_of(pydicom.dcmread(other_path)) and reason == 0xA900 and "Study" in comment,
      f"another study's instance: {uid} {reason} {comment}")
serving("another study's instance")
rsp = post(multipart([read(les[0])]), path="/studies/1.2.bad..uid")
check(rsp.status_code == 400 and "Study Instance UID" in rsp.text, f"bad study UID in the path: {rsp.status_code} {rsp.text}")

# 4. A mix with a CT instance (SOP class the node does not accept): 202 with a FailedSOPSequence.
ct = pydicom.dcmread(ct_path)
statuses.clear()
answer = client.store_instances([le_ds[4], ct])
check(statuses == [202], f"mixed store: {statuses}")
check([ref_of(i) for i in answer.ReferencedSOPSequence] == [sop_of(le_ds[4])], "mixed: stored one")
(failed,) = answer.FailedSOPSequence
check(str(failed.ReferencedSOPInstanceUID) == sop_of(ct) and failed.FailureReason == 0x0122,
      f"CT: reason {failed.FailureReason:#06x}")

# 5. All bad: 409 (dicomweb-client raises on it), with the reason per instance.
statuses.clear()
try:
    client.store_instances([ct])
    fail("a store of only a CT instance must fail")
except requests.HTTPError as e:
    check(e.response.status_code == 409, f"CT only: {e.response.status_code}")
    (uid, reason, comment), = failures(e.response)
    check(uid == sop_of(ct) and reason == 0x0122 and "SOP Class" in comment, f"CT: {uid} {reason} {comment}")
serving("a CT instance")

# 6. Not multipart at all: 415 with a reason.
rsp = post(read(les[0]), content_type="application/dicom")
check(rsp.status_code == 415 and "multipart/related" in rsp.text, f"not multipart: {rsp.status_code} {rsp.text}")
check("299" in rsp.headers.get("Warning", ""), "415 carries a Warning: 299 with the reason")
serving("a body that is not multipart")

# 7. Metadata parts (type=application/dicom+xml, or a +json part): 415.
rsp = post(multipart([b"<NativeDicomModel/>"], ["application/dicom+xml"]),
           content_type=f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}')
check(rsp.status_code == 415 and "application/dicom" in rsp.text, f"dicom+xml: {rsp.status_code} {rsp.text}")
rsp = post(multipart([b"[]"], ["application/dicom+json"]))
check(rsp.status_code == 415 and "application/dicom+json" in rsp.text, f"dicom+json part: {rsp.status_code} {rsp.text}")
serving("metadata parts")

# 8. A part that is not DICOM: that instance fails with C000 and says why.
rsp = post(multipart([b"this is not a DICOM file\n" * 20]))
check(rsp.status_code == 409, f"not DICOM: {rsp.status_code} {rsp.text}")
(uid, reason, comment), = failures(rsp)
check(uid is None and reason == 0xC000 and "DICOM" in comment, f"not DICOM: {uid} {reason} {comment}")
serving("a part that is not DICOM")

# 9. A truncated part (the file cut in its pixel data), in a well-formed body: C000 for it.
cut = read(les[5])
rsp = post(multipart([cut[: len(cut) // 2]]))
check(rsp.status_code == 409, f"truncated part: {rsp.status_code} {rsp.text}")
(uid, reason, comment), = failures(rsp)
check(uid == sop_of(le_ds[5]) and reason == 0xC000 and comment, f"truncated part: {uid} {reason} {comment}")
serving("a truncated part")

# 10. A truncated body (no closing boundary, the part cut short): 400.
rsp = post(multipart([cut[: len(cut) // 2]], close=False))
check(rsp.status_code == 400 and "multipart" in rsp.text, f"truncated body: {rsp.status_code} {rsp.text}")
rsp = post(b"\r\n--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n")
check(rsp.status_code == 400, f"truncated headers: {rsp.status_code} {rsp.text}")
rsp = post(b"", content_type=f"multipart/related; type=application/dicom; boundary={BOUNDARY}")
check(rsp.status_code == 400, f"empty body: {rsp.status_code} {rsp.text}")
serving("a truncated body")

# 11. Larger than [dicomweb] max_request_mb (2 MiB here): 413, before the body is read. curl
# (Expect: 100-continue) waits for the answer instead of writing a body the node will not read.
big = os.path.join(os.path.dirname(REPORT), "too-large.body")
with open(big, "wb") as f:
    f.write(multipart([read(p) for p in les] * 2))
out = subprocess.run(["curl", "-s", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}",
                      "-H", "Content-Type: " + PART10_TYPE.format(BOUNDARY),
                      "--data-binary", "@" + big, BASE + "/studies"], capture_output=True, text=True)
check(out.stdout == "413", f"too large: {out.stdout} {out.stderr}")
serving("a request that is too large")
rsp = post(multipart([b"x"] * 10_001))
check(rsp.status_code == 413 and "parts" in rsp.text, f"10001 parts: {rsp.status_code} {rsp.text}")
serving("a request of too many parts")

# 12. One instance larger than storage.max_instance_mb (1 MiB here): it fails on its own (A700),
# the instance after it in the same request is stored.
big_path = os.path.join(FIXTURES, "big.dcm")
rsp = post(multipart([read(big_path), read(les[1])]))
check(rsp.status_code == 202, f"an instance too large: {rsp.status_code} {rsp.text}")
(uid, reason, comment), = failures(rsp)
check(uid == sop_of(pydicom.dcmread(big_path)) and reason == 0xA700 and "max_instance_mb" in comment,
      f"an instance too large: {uid} {reason} {comment}")
check([value(i, SOP_INSTANCE) for i in items(rsp.json(), REFERENCED)] == [sop_of(le_ds[1])],
      "the instance after the one too large is stored")
serving("an instance too large")

# 13. Compressed and deflated encodings the node decodes are stored as they came; one it does
# not offer at C-STORE negotiation fails with C122 (Referenced Transfer Syntax not supported).
compressed = {}
for name in ("ts-jpeg-ls.dcm", "ts-deflated.dcm"):
    ds = pydicom.dcmread(os.path.join(FIXTURES, name))
    compressed[sop_of(ds)] = str(ds.file_meta.TransferSyntaxUID)
statuses.clear()
answer = client.store_instances([pydicom.dcmread(os.path.join(FIXTURES, n)) for n in ("ts-jpeg-ls.dcm", "ts-deflated.dcm")])
check(statuses == [200], f"JPEG-LS and deflated: {statuses}")
check(sorted(ref_of(i) for i in answer.ReferencedSOPSequence) == sorted(compressed), "both stored")
unsupported = pydicom.dcmread(os.path.join(FIXTURES, "ts-unsupported.dcm"))
check(str(unsupported.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.51", "the fixture is JPEG 12-bit")
rsp = post(multipart([read(os.path.join(FIXTURES, "ts-unsupported.dcm"))]))
check(rsp.status_code == 409, f"JPEG 12-bit: {rsp.status_code} {rsp.text}")
(uid, reason, comment), = failures(rsp)
check(uid == sop_of(unsupported) and reason == 0xC122 and "Transfer Syntax" in comment,
      f"JPEG 12-bit: {uid} {reason} {comment}")
serving("an unsupported transfer syntax")

# 14. The raw Part 10 file, unquoted type: stored; the Rust side compares the stored data set.
rsp = post(multipart([read(les[5])]), content_type=f"multipart/related; type=application/dicom; boundary={BOUNDARY}")
check(rsp.status_code == 200, f"raw store: {rsp.status_code} {rsp.text}")

stored = sorted({sop_of(d) for d in le_ds[:6]} | set(compressed))
with open(REPORT, "w") as f:
    json.dump({"stored": stored, "compressed": compressed, "raw": {"sop": sop_of(le_ds[5]), "file": les[5]},
               "refused": [sop_of(ct), sop_of(pydicom.dcmread(other_path)), sop_of(pydicom.dcmread(big_path)),
                            sop_of(unsupported)]}, f)
print("stow cases passed")
