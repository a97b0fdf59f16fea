"""C-STORE over DICOM TLS with pynetdicom: the TLS peer of tests/dicom_tls.rs.

    store_tls.py HOST PORT CALLED_AE CALLING_AE CA_FILE CERT|- KEY|- FILE...

CA_FILE is the CA that must have signed the node's certificate (verified, with the host name);
CERT and KEY are the client certificate and key to present ("-": none). Prints one line per
file, "stored <status>", or "association failed: <why>". Exit status: 0 if every file was
stored with status 0x0000, 2 if no association was established, 1 otherwise.
"""

import ssl
import sys

from pydicom import dcmread
from pynetdicom import AE

host, port, called, calling, ca_file, cert, key, *files = sys.argv[1:]

context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
if cert != "-":
    context.load_cert_chain(certfile=cert, keyfile=key)

datasets = [dcmread(f) for f in files]
ae = AE(ae_title=calling)
ae.acse_timeout = 10
ae.dimse_timeout = 30
ae.network_timeout = 10
for ds in datasets:
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)

try:
    assoc = ae.associate(host, int(port), ae_title=called, tls_args=(context, host))
except Exception as e:  # the handshake may fail inside associate
    print(f"association failed: {type(e).__name__}: {e}")
    sys.exit(2)
if not assoc.is_established:
    why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
    print(f"association failed: {why}")
    sys.exit(2)

ok = True
for ds in datasets:
    status = assoc.send_c_store(ds)
    code = status.Status if status else None
    print(f"stored {code if code is None else f'0x{code:04X}'}")
    ok = ok and code == 0
assoc.release()
sys.exit(0 if ok else 1)
