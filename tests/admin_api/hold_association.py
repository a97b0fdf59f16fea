"""Opens an association as AE title argv[2] to the node at 127.0.0.1:argv[1], says so, waits for
a line on stdin, then sends a C-ECHO on the same association and prints its status: whether an
association in progress outlives a change of the peer list."""
import sys

from pynetdicom import AE

ae = AE(ae_title=sys.argv[2])
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="VCNODE")
print("established" if assoc.is_established else "refused", flush=True)
if not assoc.is_established:
    sys.exit(1)
sys.stdin.readline()
status = assoc.send_c_echo()
print(f"echo 0x{status.Status:04X}" if status else "echo none", flush=True)
assoc.release()
