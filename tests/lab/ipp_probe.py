"""An office PC's IPP client for the lab tests, run inside a PC's namespace.

Reads one JSON request per line on stdin and answers one JSON line each, all on one
HTTP/1.1 connection (keep-alive) to ``HOST:PORT`` (argv). A request is
``{"path", "host" (the Host header, or null for none), "body" (hex), "raw" (hex,
sent as is instead)}``; the answer ``{"status", "body" (hex)}`` or ``{"error"}``.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req.get("raw"):
                with socket.create_connection((host, port), timeout=30) as s:
                    s.sendall(bytes.fromhex(req["raw"]))
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                out: dict[str, object] = {"raw": data.hex()}
            else:
                body = bytes.fromhex(req["body"])
                conn.putrequest("POST", req["path"], skip_host=True, skip_accept_encoding=True)
                if req["host"] is not None:
                    conn.putheader("Host", req["host"])
                conn.putheader("Content-Type", "application/ipp")
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                out = {"status": resp.status, "body": resp.read().hex()}
        except (OSError, http.client.HTTPException) as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
            conn.close()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
