"""QIDO-RS searches against vcnode with dicomweb-client (a client nobody here wrote).

Run by tests/dicomweb_qido.rs: qido_search.py URL STUDIES_JSON, where STUDIES_JSON maps each
study's PatientID to its StudyInstanceUID. Exits non-zero with the failed check's message.
"""
import json
import sys

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

url, studies = sys.argv[1], json.loads(sys.argv[2])
client = DICOMwebClient(url=url)


def value(dataset, tag):
    element = dataset.get(tag, {})
    return element.get("Value", [None])[0]


def study_uids(results):
    return sorted(value(r, "0020000D") for r in results)


def expect(got, want, what):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


a, b, c = studies["QIDO-A"], studies["QIDO-B"], studies["QIDO-C"]

# By PatientID: the study, with the attributes PS3.18 requires.
found = client.search_for_studies(search_filters={"PatientID": "QIDO-A"})
expect(study_uids(found), [a], "PatientID=QIDO-A")
expect(value(found[0], "00100010"), {"Alphabetic": "Doe^Jane"}, "PatientName of A")
expect(value(found[0], "00201208"), 2, "NumberOfStudyRelatedInstances of A")
expect(value(found[0], "00080061"), "MG", "ModalitiesInStudy of A")
# dicomweb-client 0.60.1 sends its Host header without the port (web.py: headers['Host'] =
# self.host): the node adds the port it listens on, as for WADO-RS's BulkDataURIs.
retrieve = value(found[0], "00081190")
if retrieve != url + "/studies/" + a:
    sys.exit(f"RetrieveURL {retrieve!r} is not the study's under the request's origin")

# By a date range, open ranges included.
expect(study_uids(client.search_for_studies(search_filters={"StudyDate": "20260101-20261231"})),
       sorted([b, c]), "StudyDate=20260101-20261231")
expect(study_uids(client.search_for_studies(search_filters={"StudyDate": "-20251231"})),
       [a], "StudyDate=-20251231")

# By a wildcard name, in any case.
expect(study_uids(client.search_for_studies(search_filters={"PatientName": "doe*"})),
       sorted([a, c]), "PatientName=doe*")
expect(study_uids(client.search_for_studies(search_filters={"PatientName": "R?E^RICH*"})),
       [b], "PatientName=R?E^RICH*")

# Pages with limit and offset: disjoint, together everything.
page1 = client.search_for_studies(search_filters={"PatientID": "QIDO-*"}, limit=2, offset=0)
page2 = client.search_for_studies(search_filters={"PatientID": "QIDO-*"}, limit=2, offset=2)
expect(len(page1), 2, "first page")
expect(sorted(study_uids(page1) + study_uids(page2)), sorted([a, b, c]), "both pages")

# ModalitiesInStudy, and a list of study UIDs.
expect(study_uids(client.search_for_studies(search_filters={"ModalitiesInStudy": "MG"})),
       sorted([a, b, c]), "ModalitiesInStudy=MG")
expect(client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"}), [], "ModalitiesInStudy=CT")
expect(study_uids(client.search_for_studies(search_filters={"StudyInstanceUID": f"{a},{b}"})),
       sorted([a, b]), "a list of StudyInstanceUIDs")
expect(study_uids(client.search_for_studies(search_filters={"StudyInstanceUID": [a, c]})),
       sorted([a, c]), "StudyInstanceUID given twice")

# includefield=all on instances: the image attributes and the study's.
instances = client.search_for_instances(study_instance_uid=a, fields=["all"])
expect(len(instances), 2, "instances of A")
for i in instances:
    # pydicom reads the answer as a data set (PS3.18 F: an empty value is null).
    expect(list(pydicom.Dataset.from_json(i).ImageType),
           ["ORIGINAL", "PRIMARY", "POST_CONTRAST", "", "LOW_ENERGY"], "ImageType via pydicom")
    expect(value(i, "00280010"), 512, "Rows")
    expect(value(i, "00080020"), "20250110", "StudyDate with includefield=all")
    expect(value(i, "00200062") in ("L", "R"), True, "ImageLaterality")
series = client.search_for_series(study_instance_uid=a)
expect(len(series), 1, "series of A")
expect(value(series[0], "00201209"), 2, "NumberOfSeriesRelatedInstances")

# A bad query: 400 with the reason.
r = requests.get(url + "/studies", params={"StudyDate": "yesterday"})
expect(r.status_code, 400, "StudyDate=yesterday")
if "date" not in r.text:
    sys.exit(f"400 without a reason: {r.text!r}")
print("qido_search: all checks passed")
