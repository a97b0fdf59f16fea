"""WADO-RS of a running vcnode checked with dicomweb-client (a client nobody here wrote),
pydicom, numpy and Pillow. Called by tests/dicomweb_wado.rs:

    wado_check.py BASE_URL MANIFEST.json DATA_DIR

The manifest lists the instances sent by C-STORE: their UIDs, the file sent, the Explicit VR LE
original it was converted from (pydicom here decodes neither JPEG-LS nor JPEG Lossless, so
pixels are compared with the original) and the transfer syntax it is stored in.
Prints one line per check; exits non-zero at the first failure.
"""
import io
import json
import sqlite3
import sys

import numpy as np
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames

from common import multipart_parts

EXPLICIT_LE = "1.2.840.10008.1.2.1"
base, manifest_path, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
manifest = json.load(open(manifest_path))
client = DICOMwebClient(url=base)
study = manifest[0]["study"]
series = manifest[0]["series"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def stored_path(sop):
    db = sqlite3.connect(f"file:{data_dir}/vcnode.sqlite?mode=ro", uri=True)
    (path,) = db.execute("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop,)).fetchone()
    db.close()
    return f"{data_dir}/{path}"


def same_dataset(a, b, what):
    """Every element of `a` (group lengths aside) is in `b` with the same value."""
    n = 0
    for elem in a:
        if elem.tag.element == 0:
            continue
        check_value = b.get(elem.tag)
        if check_value is None or check_value.value != elem.value:
            check(False, f"{what}: {elem.tag} differs")
        n += 1
    check(n > 20, f"{what}: {n} elements equal what was sent")


def url(sop, tail=""):
    return f"{base}/studies/{study}/series/{series}/instances/{sop}{tail}"


def expected_render(original, window=None):
    """PS3.3 C.11.2.1.2.1 (linear) on the modality values; MONOCHROME1 inverted."""
    x = original.pixel_array.astype(np.float64)
    x = x * float(getattr(original, "RescaleSlope", 1)) + float(getattr(original, "RescaleIntercept", 0))
    if window is None:
        first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)
        c, w = first(original.WindowCenter), first(original.WindowWidth)
    else:
        c, w = window
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    y = np.clip(np.round(y), 0, 255)
    if original.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return y


# --- Retrieve: as stored (transfer-syntax=*), byte for byte; and PS3.18's default. ---
for item in manifest:
    sop, ts = item["sop"], item["ts"]
    sent = pydicom.dcmread(item["sent"])
    original = pydicom.dcmread(item["original"])
    got = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
    check(got.file_meta.TransferSyntaxUID == ts, f"{sop[-12:]} as stored is {ts}")
    same_dataset(sent, got, f"{ts} retrieved as stored")
    raw = requests.get(url(sop), headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    check(raw.status_code == 200, f"{ts} raw retrieval 200")
    [(head, body)] = multipart_parts(raw)
    check(f"transfer-syntax={ts}" in head, f"{ts} part names its transfer syntax")
    check(body == open(stored_path(sop), "rb").read(), f"{ts} part is the stored file byte for byte")

    # No transfer syntax named (dicomweb-client itself asks for "*" unless told otherwise).
    default = client.retrieve_instance(study, series, sop, media_types=("application/dicom",))
    check(default.file_meta.TransferSyntaxUID == EXPLICIT_LE, f"{ts} by default comes as Explicit VR LE")
    check(np.array_equal(default.pixel_array, original.pixel_array), f"{ts} transcoded pixels equal the original")
    implicit = client.retrieve_instance(
        study, series, sop, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
    check(implicit.file_meta.TransferSyntaxUID == EXPLICIT_LE, f"{ts} named Explicit VR LE")

series_sets = client.retrieve_series(study, series, media_types=(("application/dicom", "*"),))
check(len(series_sets) == len(manifest), f"retrieve_series gives {len(series_sets)} instances")
check({d.SOPInstanceUID for d in series_sets} == {m["sop"] for m in manifest}, "retrieve_series gives the sent instances")
check(len(client.retrieve_study(study, media_types=(("application/dicom", "*"),))) == len(manifest), "retrieve_study count")

# --- Metadata: attributes, Transfer Syntax UID, pixel data as BulkDataURI. ---
meta = client.retrieve_series_metadata(study, series)
check(len(meta) == len(manifest), "series metadata has one object per instance")
by_sop = {m["00080018"]["Value"][0]: m for m in meta}
for item in manifest:
    m = by_sop[item["sop"]]
    check(m["00020010"]["Value"] == [item["ts"]], f"{item['ts']} metadata names its transfer syntax")
    pixel = m["7FE00010"]
    check("InlineBinary" not in pixel and pixel["BulkDataURI"].startswith(base + "/studies/"),
          f"{item['ts']} pixel data is a BulkDataURI on the request's origin: {pixel}")
    check(m["00280010"]["Value"] == [pydicom.dcmread(item["original"]).Rows], "Rows in metadata")
    one = client.retrieve_instance_metadata(study, series, item["sop"])
    check(one == m, "instance metadata equals its series entry")
check(len(client.retrieve_study_metadata(study)) == len(manifest), "study metadata count")

# --- Frames: transfer-syntax=* is the stored encoding; without it, uncompressed. ---
for item in manifest:
    sop, ts = item["sop"], item["ts"]
    stored = pydicom.dcmread(stored_path(sop))
    if stored.file_meta.TransferSyntaxUID.is_compressed:
        stored_frame = next(generate_frames(stored.PixelData, number_of_frames=1))
    else:
        stored_frame = bytes(stored.PixelData)
    [frame] = client.retrieve_instance_frames(
        study, series, sop, [1], media_types=(("application/octet-stream", "*"),))
    check(frame == stored_frame, f"{ts} frame 1 with transfer-syntax=* is the stored frame")
    [plain] = client.retrieve_instance_frames(study, series, sop, [1], media_types=("application/octet-stream",))
    original = pydicom.dcmread(item["original"])
    check(plain == original.pixel_array.astype("<u2").tobytes(), f"{ts} frame 1 uncompressed equals the original pixels")
    bulk = client.retrieve_bulkdata(by_sop[sop]["7FE00010"]["BulkDataURI"])
    check(bulk == [stored_frame], f"{ts} pixel data bulk data is the stored frame")

# --- Rendered: PNG windowed by the instance's VOI (rescale, MONOCHROME1 inverted). ---
for item in manifest:
    original = pydicom.dcmread(item["original"])
    png = client.retrieve_instance_rendered(study, series, item["sop"], media_types=("image/png",))
    img = np.asarray(Image.open(io.BytesIO(png)))
    want = expected_render(original)
    check(img.shape == want.shape, f"{item['ts']} rendered size {img.shape}")
    diff = np.abs(img.astype(np.int32) - want.astype(np.int32)).max()
    check(diff <= 1, f"{item['ts']} rendered PNG within ±1 of the windowed pixels ({original.PhotometricInterpretation}, max diff {diff})")

first = manifest[0]
original = pydicom.dcmread(first["original"])
png = client.retrieve_instance_rendered(study, series, first["sop"], media_types=("image/png",),
                                        params={"window": "1500,800,linear"})
diff = np.abs(np.asarray(Image.open(io.BytesIO(png))).astype(np.int32) - expected_render(original, (1500, 800))).max()
check(diff <= 1, f"rendered under the window parameter within ±1 (max diff {diff})")
png = client.retrieve_instance_rendered(study, series, first["sop"], media_types=("image/png",),
                                        params={"viewport": "100,100"})
size = Image.open(io.BytesIO(png)).size
want = (round(original.Columns * 100 / max(original.Rows, original.Columns)),
        round(original.Rows * 100 / max(original.Rows, original.Columns)))
check(size == want, f"viewport 100,100 keeps the aspect ratio: {size}")
jpeg = client.retrieve_instance_rendered(study, series, first["sop"], media_types=("image/jpeg",),
                                         params={"quality": "80"})
check(jpeg[:3] == b"\xff\xd8\xff" and Image.open(io.BytesIO(jpeg)).format == "JPEG", "rendered JPEG")
thumb = requests.get(url(first["sop"], "/thumbnail"))
check(thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/png"
      and max(Image.open(io.BytesIO(thumb.content)).size) <= 128, "thumbnail is a small PNG")
frame_png = requests.get(url(first["sop"], "/frames/1/rendered"))
check(frame_png.status_code == 200 and frame_png.content == requests.get(url(first["sop"], "/rendered")).content,
      "frame 1 rendered is the instance rendered")

# --- Errors: 404 unknown, 406 not acceptable, 400 malformed. ---
sop = first["sop"]
unknown = "1.2.3.4.5.6.7.8.9"
cases = [
    (f"{base}/studies/{unknown}", {}, 404),
    (f"{base}/studies/{unknown}/metadata", {}, 404),
    (f"{base}/studies/{study}/series/{unknown}", {}, 404),
    (url(unknown), {}, 404),
    (url(unknown, "/rendered"), {}, 404),
    (url(sop, "/frames/2"), {}, 404),
    (url(sop, "/frames/2/rendered"), {}, 404),
    (f"{base}/studies/not-a-uid", {}, 400),
    (f"{base}/studies/{study}/series/{series}/instances/1..2/metadata", {}, 400),
    (url(sop, "/frames/0"), {}, 400),
    (url(sop, "/frames/x"), {}, 400),
    (url(sop, "/rendered?window=abc"), {}, 400),
    (url(sop, "/rendered?viewport=0,10"), {}, 400),
    (url(sop, "/bulkdata/7FE0"), {}, 400),
    (url(sop), {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'}, 406),
    (url(sop), {"Accept": "application/dicom+json"}, 406),
    (url(sop, "/metadata"), {"Accept": "multipart/related; type=application/dicom+xml"}, 406),
    (url(sop, "/rendered"), {"Accept": "image/gif"}, 406),
    (url(sop, "/frames/1"), {"Accept": "multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"}, 406),
]
for u, headers, status in cases:
    r = requests.get(u, headers=headers)
    check(r.status_code == status, f"{u[len(base):][-60:]} {headers.get('Accept', '')} -> {r.status_code} (want {status})")
    check(r.headers.get("Warning", "").startswith("299 "), "the refusal gives its reason in Warning: 299")

check(requests.get(url(sop, "/metadata")).status_code == 200, "the node keeps serving")
print("ALL OK")
