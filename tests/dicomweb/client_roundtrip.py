"""The DICOMweb acceptance round trip with Python's dicomweb-client (tests/dicomweb.rs runs it).

  client_roundtrip.py store   BASE_URL FIXTURE_DIR STATE_JSON
  client_roundtrip.py derived BASE_URL STATE_JSON

`store`: gives the LE images in FIXTURE_DIR (study-a-*.dcm, study-b-*.dcm) patients of their own,
stores them by STOW-RS, finds them by QIDO-RS (PatientID, a StudyDate range, a wildcard
PatientName, limit/offset), retrieves them by WADO-RS (the data set byte for byte as sent, and
every element through the client) and checks `rendered` against the decoded image under its
window. `derived` (once the node has processed them): finds the derived series of study A by
QIDO-RS, marked as AI-generated, retrieves it and checks its `rendered` PNG the same way.
"""
import glob
import io
import json
import os
import sys

import numpy as np
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from common import check, fail, multipart_parts

PATIENTS = {
    "a": {"PatientID": "VCN-A", "PatientName": "DOE^JANE", "StudyDate": "20261126"},
    "b": {"PatientID": "VCN-B", "PatientName": "ROE^ANN", "StudyDate": "20250310"},
}


def encode(ds):
    """The Part 10 bytes dicomweb-client sends for a data set (its own encoding)."""
    with io.BytesIO() as b:
        pydicom.dcmwrite(b, ds)
        return b.getvalue()


def data_set_of(part10):
    """What follows the file meta group: the data set, which the node must keep byte for byte."""
    check(part10[128:132] == b"DICM", "not a Part 10 file")
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def ds_of(json_item):
    return pydicom.Dataset.from_json(json_item)


def uids(results, keyword):
    return sorted(str(getattr(ds_of(r), keyword)) for r in results)


def windowed(ds, center=None, width=None):
    """The decoded image under its window (PS3.3 C.11.2.1.2.1, linear), as 8-bit grey."""
    x = ds.pixel_array.astype(np.float64)
    x = x * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)
    c = first(ds.WindowCenter) if center is None else center
    w = first(ds.WindowWidth) if width is None else width
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    y = np.clip(y, 0, 255)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255.0 - y
    return y


def check_rendered(png, expected, what):
    check(png[1:4] == b"PNG", f"{what}: rendered is not a PNG")
    img = Image.open(io.BytesIO(png))
    arr = np.asarray(img).astype(np.float64)
    if arr.ndim == 3:
        check(np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]),
              f"{what}: a grey image renders grey")
        arr = arr[..., 0]
    if img.mode.startswith("I"):
        arr = arr / 257.0
    check(arr.shape == expected.shape, f"{what}: rendered {arr.shape}, image {expected.shape}")
    diff = np.abs(arr - expected)
    check(diff.max() <= 2.0 and diff.mean() <= 0.5,
          f"{what}: rendered pixels differ from the windowed image (max {diff.max()}, mean {diff.mean():.3f})")


def raw_instance(base, study, series, sop):
    """WADO-RS of one instance as bytes, the part exactly as the node sent it."""
    rsp = requests.get(f"{base}/studies/{study}/series/{series}/instances/{sop}",
                       headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=60)
    check(rsp.status_code == 200, f"WADO-RS instance: {rsp.status_code} {rsp.text[:200]}")
    ctype = rsp.headers.get("Content-Type", "")
    check(ctype.lower().startswith("multipart/related"), f"WADO-RS answer is {ctype}")
    bodies = [body for _, body in multipart_parts(rsp)]
    check(len(bodies) == 1, f"WADO-RS instance: {len(bodies)} parts")
    return bodies[0]


def store(base, fixtures, state_path):
    client = DICOMwebClient(url=base)
    sent = {}
    studies = {}
    for key, patient in PATIENTS.items():
        paths = sorted(glob.glob(os.path.join(fixtures, f"study-{key}-*.dcm")))
        check(paths, f"no fixtures for study {key}")
        for p in paths:
            ds = pydicom.dcmread(p)
            for k, v in patient.items():
                setattr(ds, k, v)
            sent[str(ds.SOPInstanceUID)] = ds
            studies.setdefault(key, {"study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
                                     "instances": []})["instances"].append(str(ds.SOPInstanceUID))
    check(studies["a"]["study"] != studies["b"]["study"], "two studies")

    # STOW-RS, all at once.
    answer = client.store_instances(list(sent.values()))
    check(not answer.get("FailedSOPSequence"), "STOW-RS: nothing may fail")
    check(sorted(str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence) == sorted(sent),
          "STOW-RS: every instance referenced")

    a, b = studies["a"], studies["b"]
    # QIDO-RS: by PatientID, by StudyDate range (closed and open), by wildcard PatientName.
    found = client.search_for_studies(search_filters={"PatientID": "VCN-A"})
    check(uids(found, "StudyInstanceUID") == [a["study"]], f"PatientID: {found}")
    check(str(ds_of(found[0]).PatientName) == "DOE^JANE", "study answer carries PatientName")
    for dates, want in [("20260101-20261231", [a["study"]]), ("20250101-20250401", [b["study"]]),
                        ("-20251231", [b["study"]]), ("20250310-", sorted([a["study"], b["study"]]))]:
        found = client.search_for_studies(search_filters={"StudyDate": dates})
        check(uids(found, "StudyInstanceUID") == want, f"StudyDate {dates}: {uids(found, 'StudyInstanceUID')}")
    for name, want in [("DOE*", a["study"]), ("R?E^A*", b["study"]), ("*JANE", a["study"])]:
        found = client.search_for_studies(search_filters={"PatientName": name})
        check(uids(found, "StudyInstanceUID") == [want], f"PatientName {name}: {found}")
    found = client.search_for_studies(search_filters={"PatientName": "NOBODY*"})
    check(found == [], f"PatientName NOBODY*: {found}")
    # limit/offset pages over the instances of study A: disjoint, together all of them.
    everything = client.search_for_instances(study_instance_uid=a["study"])
    check(uids(everything, "SOPInstanceUID") == sorted(a["instances"]), "instances of study A")
    first = client.search_for_instances(study_instance_uid=a["study"], limit=2, offset=0)
    rest = client.search_for_instances(study_instance_uid=a["study"], limit=2, offset=2)
    check(len(first) == 2 and len(rest) == len(a["instances"]) - 2, f"pages: {len(first)} + {len(rest)}")
    check(sorted(uids(first, "SOPInstanceUID") + uids(rest, "SOPInstanceUID")) == sorted(a["instances"]),
          "limit/offset pages cover every instance once")
    series = client.search_for_series(study_instance_uid=a["study"])
    check(uids(series, "SeriesInstanceUID") == [a["series"]], f"series of study A: {series}")
    check(ds_of(series[0]).Modality == "MG", "series Modality")

    # WADO-RS: every element as sent (through the client), and the data set byte for byte.
    for key in ("a", "b"):
        st = studies[key]
        retrieved = client.retrieve_study(st["study"])
        check(sorted(str(d.SOPInstanceUID) for d in retrieved) == sorted(st["instances"]), "retrieve_study")
        for sop in st["instances"]:
            mine = sent[sop]
            theirs = client.retrieve_instance(st["study"], st["series"], sop)
            check(sorted(e.tag for e in theirs) == sorted(e.tag for e in mine), f"{sop}: the same elements")
            for elem in mine:
                check(theirs[elem.tag].value == elem.value, f"{sop}: {elem.keyword or elem.tag} differs")
            check(theirs.PixelData == mine.PixelData, f"{sop}: PixelData differs")
            raw = raw_instance(base, st["study"], st["series"], sop)
            check(data_set_of(raw) == data_set_of(encode(mine)), f"{sop}: the data set is not byte-identical")
        explicit = client.retrieve_instance(st["study"], st["series"], st["instances"][0],
                                            media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
        check(explicit.PixelData == sent[st["instances"][0]].PixelData, "Explicit VR Little Endian retrieve")

    # rendered: the decoded image under its own window, and under a window the request names.
    sop = a["instances"][0]
    png = client.retrieve_instance_rendered(a["study"], a["series"], sop, media_types=("image/png",))
    check_rendered(png, windowed(sent[sop]), "LE rendered")
    png = client.retrieve_instance_rendered(a["study"], a["series"], sop, media_types=("image/png",),
                                            params={"window": "1800,1200,linear"})
    check_rendered(png, windowed(sent[sop], 1800.0, 1200.0), "LE rendered with window=1800,1200")

    with open(state_path, "w") as f:
        json.dump(studies, f)
    print("store, query and retrieve passed")


def derived(base, state_path):
    client = DICOMwebClient(url=base)
    with open(state_path) as f:
        studies = json.load(f)
    a = studies["a"]
    series = [ds_of(s) for s in client.search_for_series(study_instance_uid=a["study"])]
    check(len(series) == 2, f"study A: the LE series and a derived one, got {len(series)}")
    (synthetic,) = [s for s in series if str(s.SeriesInstanceUID) != a["series"]]
    check("AI" in str(getattr(synthetic, "SeriesDescription", "")),
          f"the derived series is marked AI-generated: {getattr(synthetic, 'SeriesDescription', None)!r}")
    se = str(synthetic.SeriesInstanceUID)
    found = client.search_for_instances(study_instance_uid=a["study"], series_instance_uid=se)
    check(len(found) == len(a["instances"]), f"one derived instance per LE image, got {len(found)}")
    retrieved = client.retrieve_series(a["study"], se)
    check(sorted(str(d.SOPInstanceUID) for d in retrieved) == uids(found, "SOPInstanceUID"),
          "the derived series retrieved is the one found")
    for d in retrieved:
        check("DERIVED" in list(d.ImageType), f"derived Image Type: {d.ImageType}")
        check(getattr(d, "SyntheticData", None) == "YES", "Synthetic Data = YES")
    first = retrieved[0]
    png = client.retrieve_instance_rendered(a["study"], se, str(first.SOPInstanceUID), media_types=("image/png",))
    check_rendered(png, windowed(first), "derived rendered")
    print("derived series found, retrieved and rendered")


if __name__ == "__main__":
    if sys.argv[1] == "store":
        store(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "derived":
        derived(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown phase {sys.argv[1]}")
