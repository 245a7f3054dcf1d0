#!/usr/bin/env python3
"""Capture real IPP bytes from CUPS's own tools, for the codec tests.

Usage (as root, from the repository root)::

    .venv/bin/python tests/printing/vectors/capture.py [OUTDIR]   # default: this dir

What it runs, and stops again by PID in a ``finally``:

- a private ``cupsd`` (Debian's stock ``cupsd.conf`` from
  ``/usr/share/cups/cupsd.conf.default`` on a free loopback port, configuration and
  spool in a temp dir, never the system one) with one raw queue ``vec-laser`` whose
  device is ``file:///dev/null``, shared with ``cupsctl --share-printers``;
- a recording TCP relay on another loopback port in front of it (a plain Python
  thread, no tcpdump), through which ``ipptool`` runs CUPS's own test files:
  ``get-printer-attributes.test``, ``get-printers.test``, ``print-job.test``,
  ``get-job-attributes.test`` (against the job-uri the print job returned).

Each HTTP message of each direction is parsed with h11; every ``application/ipp``
body is written as ``NN-<who>-<operation>.bin`` (who: ``ipptool`` or ``cupsd``), and
``index.txt`` says what each one is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h11

HERE = Path(__file__).resolve().parent
PRINTER = "vec-laser"
TESTS = Path("/usr/share/cups/ipptool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, port: int) -> None:
    stock = Path("/usr/share/cups/cupsd.conf.default").read_text()
    conf = stock.replace("Listen localhost:631", f"Listen 127.0.0.1:{port}").replace(
        "Listen /run/cups/cups.sock", f"Listen {root}/cups.sock"
    )
    (root / "cupsd.conf").write_text(conf)
    (root / "cups-files.conf").write_text(
        f"ServerRoot {root}\nRequestRoot {root}/spool\nTempDir {root}/spool/tmp\n"
        f"CacheDir {root}/cache\nStateDir {root}/state\nServerBin /usr/lib/cups\n"
        f"DataDir /usr/share/cups\nAccessLog {root}/access_log\nErrorLog {root}/error_log\n"
        f"PageLog {root}/page_log\nPrintcap {root}/printcap\nFileDevice Yes\n"
        "Sandboxing Relaxed\nUser lp\nGroup lp\nSystemGroup root\n"
    )
    for sub in ("spool", "spool/tmp", "cache", "state", "ppd"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)


class Recorder:
    """A loopback TCP relay that keeps every byte of each direction per connection."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[tuple[bytearray, bytearray]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.backend))
            rec = (bytearray(), bytearray())
            self.conns.append(rec)
            threading.Thread(target=self._pump, args=(c, b, rec[0]), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, c, rec[1]), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, keep: bytearray) -> None:
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                d = b""
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            keep += d
            dst.sendall(d)


def split_requests(data: bytes) -> list[bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    out: list[bytes] = []
    cur = bytearray()
    while True:
        ev = conn.next_event()
        if isinstance(ev, h11.Data):
            cur += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            out.append(bytes(cur))
            cur = bytearray()
            # answer on h11's side so it lets us read the next request
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        elif isinstance(ev, (h11.Request, h11.InformationalResponse)):
            continue
        else:
            break
    return out


def split_responses(data: bytes, n: int) -> list[bytes]:
    conn = h11.Connection(h11.CLIENT)
    out: list[bytes] = []
    for _ in range(n):
        conn.send(
            h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")])
        )
        conn.send(h11.EndOfMessage())
        if not out:
            conn.receive_data(data)
            conn.receive_data(b"")
        cur = bytearray()
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Data):
                cur += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                out.append(bytes(cur))
                break
            elif isinstance(ev, (h11.Response, h11.InformationalResponse)):
                continue
            else:
                return out
        conn.start_next_cycle()
    return out


def main() -> None:
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    root = Path(tempfile.mkdtemp(prefix="ippcap-"))
    port = free_port()
    write_config(root, port)
    # IPP_PORT: cupsctl writes "Port <ippPort()>" when it opens the listener up
    env = dict(os.environ, CUPS_SERVER=f"{root}/cups.sock", IPP_PORT=str(port))
    cupsd = subprocess.Popen(
        ["cupsd", "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
        start_new_session=True,
    )
    try:
        for _ in range(100):
            r = subprocess.run(["lpstat", "-r"], env=env, capture_output=True, text=True)
            if r.stdout.strip() == "scheduler is running":
                break
            time.sleep(0.1)
        subprocess.run(["lpadmin", "-p", PRINTER, "-E", "-v", "file:///dev/null",
                        "-D", "Vector laser", "-L", "Capture room", "-o", "printer-is-shared=true"],
                       env=env, check=True)  # fmt: skip
        subprocess.run(["cupsctl", "--share-printers"], env=env, check=True)
        for _ in range(100):
            if subprocess.run(["lpstat", "-h", f"127.0.0.1:{port}", "-p", PRINTER],
                              capture_output=True).returncode == 0:  # fmt: skip
                break
            time.sleep(0.1)
        else:
            raise SystemExit("cupsd did not come back after cupsctl")
        doc = root / "page.txt"
        doc.write_text("A page printed by the IPP vector capture.\n")
        rec = Recorder(port)
        uri = f"ipp://127.0.0.1:{rec.port}/printers/{PRINTER}"
        runs = [
            ("get-printer-attributes", ["get-printer-attributes.test"]),
            ("cups-get-printers", ["get-printers.test"]),
            ("print-job-media-col", ["-f", str(doc), "print-job-media-col.test"]),
            ("print-job", ["-f", str(doc), "print-job.test"]),
        ]
        job_uri = None
        for _name, args in runs:
            files = [str(TESTS / a) if a.endswith(".test") else a for a in args]
            r = subprocess.run(["ipptool", "-T", "10", "-t", "-v", uri, *files],
                               capture_output=True, text=True)  # fmt: skip
            print(r.stdout[-300:])
            for line in r.stdout.splitlines():
                if "job-uri (uri) =" in line:
                    job_uri = line.split("=")[-1].strip()
        if job_uri is None:
            raise SystemExit("print-job returned no job-uri")
        # CUPS's get-job-attributes.test targets the job-uri itself
        r = subprocess.run(["ipptool", "-T", "10", "-t", "-v", job_uri,
                            str(TESTS / "get-job-attributes.test")],
                           capture_output=True, text=True)  # fmt: skip
        print(r.stdout[-400:])
        time.sleep(0.5)  # the relay threads flush their last bytes
        rec.sock.close()
        outdir.mkdir(parents=True, exist_ok=True)
        index = []
        n = 0
        for up, down in rec.conns:
            reqs = split_requests(bytes(up))
            resps = split_responses(bytes(down), len(reqs))
            for q, a in zip(reqs, resps, strict=False):
                if len(q) < 8:
                    continue
                op = int.from_bytes(q[2:4], "big")
                n += 1
                qn = f"{n:02d}-ipptool-op{op:04x}.bin"
                (outdir / qn).write_bytes(q)
                n += 1
                an = f"{n:02d}-cupsd-op{op:04x}.bin"
                (outdir / an).write_bytes(a)
                index.append(f"{qn}\t{len(q)}\trequest op {op:#06x}")
                index.append(f"{an}\t{len(a)}\tresponse status "
                             f"{int.from_bytes(a[2:4], 'big'):#06x}")  # fmt: skip
        (outdir / "index.txt").write_text("\n".join(index) + "\n")
        print("\n".join(index))
    finally:
        cupsd.terminate()
        cupsd.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
