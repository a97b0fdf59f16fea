"""QIDO-RS over HTTPS with Python's requests and dicomweb-client (clients nobody here wrote).

Run by tests/https.rs: qido_https.py URL CA OTHER_CA STUDY_UID. URL is the node's DICOMweb root
(https://…/dicomweb), CA the PEM that signed the node's certificate, OTHER_CA one that did not.
Exits non-zero with the failed check's message; prints "ok" when every check passed.
"""
import sys

import requests
from dicomweb_client.api import DICOMwebClient

url, ca, other_ca, study = sys.argv[1:5]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


# requests, trusting the node's CA.
rsp = requests.get(url + "/studies", verify=ca, headers={"Accept": "application/dicom+json"}, timeout=30)
if rsp.status_code != 200:
    fail(f"GET /studies with the CA: HTTP {rsp.status_code}")
found = [s["0020000D"]["Value"][0] for s in rsp.json()]
if study not in found:
    fail(f"study {study} not in {found}")
retrieve = [s["00081190"]["Value"][0] for s in rsp.json() if s["0020000D"]["Value"][0] == study][0]
if not retrieve.startswith("https://"):
    fail(f"RetrieveURL {retrieve!r} does not say https")

# dicomweb-client on a session that trusts the CA.
session = requests.Session()
session.verify = ca
# Else REQUESTS_CA_BUNDLE, when set, replaces the session's verify (requests' merge of
# environment settings): the node's CA would not be trusted.
session.trust_env = False
client = DICOMwebClient(url=url, session=session)
found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
if [s["0020000D"]["Value"][0] for s in found] != [study]:
    fail(f"dicomweb-client found {found!r}")

# A client that trusts another CA refuses the node's certificate.
try:
    requests.get(url + "/studies", verify=other_ca, timeout=30)
    fail("a client trusting another CA accepted the node's certificate")
except requests.exceptions.SSLError as e:
    if "CERTIFICATE_VERIFY_FAILED" not in str(e):
        fail(f"refused, but not for the certificate: {e}")

print("ok")
