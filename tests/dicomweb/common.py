"""What the DICOMweb test scripts share (they import it from their own folder)."""
import sys


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def multipart_parts(rsp):
    """(headers, body) of each part of a multipart/related response, the body exactly as sent."""
    ctype = rsp.headers.get("Content-Type", "")
    boundary = [p.split("=", 1)[1].strip().strip('"') for p in ctype.split(";")
                if p.strip().lower().startswith("boundary=")][0].encode()
    parts = []
    for chunk in rsp.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, body = chunk.split(b"\r\n\r\n", 1)
        # The CRLF before the next delimiter belongs to the delimiter.
        parts.append((head.decode(), body[:-2] if body.endswith(b"\r\n") else body))
    return parts
