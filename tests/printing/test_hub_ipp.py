"""The hub's IPP gate, sans-IO: an h11 office client and an h11 stand-in cupsd back to
back in memory (the real cupsd runs in tests/printing/test_ipp_cups_lab.py)."""

from __future__ import annotations

from pathlib import Path

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare import logfmt
from spokeshare.printing import hub_ipp, ipp, ipp_relay
from spokeshare.printing.hub_ipp import IppGate, PrinterPolicy, StreamInfo
from tests.strategies import mutated

VECTORS = Path(__file__).parent / "vectors"
ALL = PrinterPolicy.of(None)
INFO = StreamInfo("nyc", "198.18.11.10:40000", "198.18.11.1", 631)


# -- pure decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("198.18.11.1:631", "198.18.11.1:631"),
        ("198.18.11.1", "198.18.11.1:631"),  # no port: the edge's, never cupsd's
        ("198.18.11.1:6310", "198.18.11.1:631"),
        ("GLOBAL-NFS:631", "198.18.11.1:631"),  # bare NetBIOS name: cupsd would refuse it
        ("GLOBAL-NFS", "198.18.11.1:631"),
        ("hq-laser-nyc.local:631", "hq-laser-nyc.local:631"),
        ("Office-Printer.local.", "Office-Printer.local.:631"),
        ("localhost:631", "198.18.11.1:631"),  # never cupsd's local rights or URIs
        ("127.0.0.1:631", "198.18.11.1:631"),
        ("[::1]:631", "198.18.11.1:631"),
        ("[2001:db8::5]:631", "[2001:db8::5]:631"),
        ("[fe80::1]:631", "198.18.11.1:631"),
        ("print.example.com", "198.18.11.1:631"),
        ("bad host:x", "198.18.11.1:631"),
        (None, "198.18.11.1:631"),
    ],
)
def test_rewrite_host(host: str | None, expected: str) -> None:
    assert hub_ipp.rewrite_host(host, INFO) == expected


def test_rewrite_host_without_edge_address() -> None:
    old_edge = StreamInfo("nyc")
    assert hub_ipp.rewrite_host("198.18.11.1", old_edge) == "198.18.11.1:631"
    assert hub_ipp.rewrite_host("localhost", old_edge) == "localhost.invalid:631"


@pytest.mark.parametrize(
    ("path", "printer"),
    [
        ("/printers/hq-laser", "hq-laser"),
        ("/printers/hq-laser.ppd", "hq-laser"),
        ("/classes/all-floor-2", "all-floor-2"),
        ("/icons/hq-laser.png", "hq-laser"),
        ("/printers/hq%2Dlaser?x=1", "hq-laser"),
        ("/printers/a/../b", "a/../b"),
        ("/jobs/4", None),
        ("/", None),
        ("/admin", None),
    ],
)
def test_printer_of_path(path: str, printer: str | None) -> None:
    assert hub_ipp.printer_of_path(path) == printer


def test_policy_is_case_insensitive_and_all_by_default() -> None:
    assert PrinterPolicy.of(None).allows("anything")
    p = PrinterPolicy.of(["HQ-Laser"])
    assert p.allows("hq-laser") and not p.allows("hq-color") and not p.allows("a/../hq-laser")


def test_filter_printers_keeps_only_the_office_s() -> None:
    answer = ipp.decode((VECTORS / "04-cupsd-op4002.bin").read_bytes())
    kept = hub_ipp.filter_printers(answer, PrinterPolicy.of(["vec-laser"]))
    assert kept == answer
    none = hub_ipp.filter_printers(answer, PrinterPolicy.of(["other"]))
    assert not list(none.groups_of(ipp.GroupTag.PRINTER))
    assert none.code == ipp.Status.CLIENT_ERROR_NOT_FOUND


def test_ensure_printer_name() -> None:
    req = ipp.cups_get_printers(1, ["printer-uri-supported"])
    wanted = hub_ipp.ensure_printer_name(req).operation("requested-attributes")
    assert wanted is not None and wanted.strings() == ["printer-uri-supported", "printer-name"]
    already = ipp.cups_get_printers(1, ["all"])
    assert hub_ipp.ensure_printer_name(already) == already


# -- the gate between an h11 client and an h11 stand-in cupsd ---------------------------


class Pair:
    """Office client -> gate -> cupsd stand-in, all in memory."""

    def __init__(self, policy: PrinterPolicy = ALL) -> None:
        self.gate = IppGate(INFO, policy)
        self.client = h11.Connection(h11.CLIENT)
        self.cupsd = h11.Connection(h11.SERVER)
        self.at_cupsd: list[object] = []
        self.at_client: list[object] = []
        self.logs: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.closed = False

    def _run(self, cmds: hub_ipp.Commands) -> None:
        self.logs += cmds.logs
        self.refused += cmds.refused
        self.closed = self.closed or cmds.close_client
        for b in cmds.to_backend:
            assert b  # empty bytes would read as EOF
            self.cupsd.receive_data(b)
        for b in cmds.to_client:
            assert b
            self.client.receive_data(b)
        self._drain()

    def _drain(self) -> None:
        for conn, sink in ((self.cupsd, self.at_cupsd), (self.client, self.at_client)):
            while True:
                ev = conn.next_event()
                if ev in (h11.NEED_DATA, h11.PAUSED):
                    break
                sink.append(ev)
                if isinstance(ev, h11.ConnectionClosed):
                    break

    def send(self, *events: h11.Event) -> None:
        for ev in events:
            data = self.client.send(ev)
            if data:  # empty bytes would read as EOF
                self._run(self.gate.client_data(data))

    def send_raw(self, data: bytes) -> None:
        self._run(self.gate.client_data(data))

    def answer(self, status: int, body: bytes, ctype: bytes = b"application/ipp") -> None:
        head = h11.Response(
            status_code=status,
            headers=[(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        )
        for ev in (head, h11.Data(data=body), h11.EndOfMessage()):
            data = self.cupsd.send(ev)
            if data:
                self._run(self.gate.backend_data(data))
        self.cupsd.start_next_cycle()

    def body_at_client(self) -> bytes:
        return b"".join(bytes(e.data) for e in self.at_client if isinstance(e, h11.Data))

    def body_at_cupsd(self) -> bytes:
        return b"".join(bytes(e.data) for e in self.at_cupsd if isinstance(e, h11.Data))


def post(
    target: bytes, body: bytes, host: bytes = b"GLOBAL-NFS:631", **extra: bytes
) -> h11.Request:
    headers = [(b"host", host), (b"content-type", b"application/ipp")]
    headers += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    if b"transfer-encoding" not in dict(headers):
        headers.append((b"content-length", str(len(body)).encode()))
    return h11.Request(method=b"POST", target=target, headers=headers)


GPA = ipp.encode(ipp.get_printer_attributes("ipp://GLOBAL-NFS:631/printers/hq-laser", 5))
OTHER = ipp.encode(ipp.get_printer_attributes("ipp://GLOBAL-NFS:631/printers/hq-color", 6))


def test_request_reaches_cupsd_with_host_rewritten_and_answer_returns() -> None:
    p = Pair()
    p.send(post(b"/printers/hq-laser", GPA), h11.Data(data=GPA), h11.EndOfMessage())
    (req,) = [e for e in p.at_cupsd if isinstance(e, h11.Request)]
    assert dict(req.headers)[b"host"] == b"198.18.11.1:631"
    assert p.body_at_cupsd() == GPA
    answer = (VECTORS / "02-cupsd-op000b.bin").read_bytes()
    p.answer(200, answer)
    assert p.body_at_client() == answer
    # keep-alive: a second request on the same connection goes through too
    p.client.start_next_cycle()
    p.at_cupsd.clear()
    p.send(post(b"/printers/hq-laser", GPA, host=b"198.18.11.1"), h11.Data(data=GPA),
           h11.EndOfMessage())  # fmt: skip
    (req,) = [e for e in p.at_cupsd if isinstance(e, h11.Request)]
    assert dict(req.headers)[b"host"] == b"198.18.11.1:631"
    assert p.gate.requests == 2 and not p.closed


def test_expect_100_continue_answered_by_the_hub_and_not_passed_on() -> None:
    for policy in (PrinterPolicy.of(None), PrinterPolicy.of(["hq-laser"])):
        p = Pair(policy)
        p.send(post(b"/printers/hq-laser", GPA, expect=b"100-continue"))
        assert any(isinstance(e, h11.InformationalResponse) for e in p.at_client)
        p.send(h11.Data(data=GPA), h11.EndOfMessage())
        (req,) = [e for e in p.at_cupsd if isinstance(e, h11.Request)]
        assert b"expect" not in dict(req.headers)
        assert p.body_at_cupsd() == GPA


def test_large_chunked_print_job_streams_without_being_held() -> None:
    job = ipp.encode(
        ipp.IppMessage((1, 1), ipp.Operation.PRINT_JOB, 7,
                       (ipp.operation_attributes("ipp://x:631/printers/hq-laser"),))
    )  # fmt: skip
    for policy in (PrinterPolicy.of(None), PrinterPolicy.of(["hq-laser"])):
        p = Pair(policy)
        p.send(post(b"/printers/hq-laser", b"", transfer_encoding=b"chunked"),
               h11.Data(data=job))  # fmt: skip
        chunk = bytes(range(256)) * 256  # 64 KiB
        for _ in range(64):  # 4 MiB in all
            before = len(p.body_at_cupsd())
            p.send(h11.Data(data=chunk))
            assert len(p.body_at_cupsd()) == before + len(chunk)  # passed on at once
            assert len(p.gate._prefix) == 0
        p.send(h11.EndOfMessage())
        assert any(isinstance(e, h11.EndOfMessage) for e in p.at_cupsd)
        assert p.body_at_cupsd() == job + chunk * 64


def test_printer_not_given_is_refused_by_the_hub_with_a_log_line() -> None:
    p = Pair(PrinterPolicy.of(["hq-laser"]))
    p.send(post(b"/printers/hq-laser", OTHER), h11.Data(data=OTHER), h11.EndOfMessage())
    assert not p.at_cupsd  # cupsd never saw it
    answer = ipp.decode(p.body_at_client())
    assert answer.code == ipp.Status.CLIENT_ERROR_NOT_POSSIBLE and answer.request_id == 6
    [(level, line)] = p.logs
    assert level == "warning"
    assert logfmt.parse(line) == ("ipp refused", {
        "office": "nyc", "client": "198.18.11.10:40000", "printer": "hq-color",
        "reason": "not one of this office's printers (office add/set --printers)"})  # fmt: skip
    assert p.refused == [hub_ipp.REFUSED_PRINTER]  # counted per office by the hub
    assert not p.closed  # the connection carries on
    p.client.start_next_cycle()
    p.send(post(b"/printers/hq-laser", GPA), h11.Data(data=GPA), h11.EndOfMessage())
    assert p.body_at_cupsd() == GPA


def test_printer_not_given_refused_by_path_too() -> None:
    p = Pair(PrinterPolicy.of(["hq-laser"]))
    p.send(h11.Request(method=b"GET", target=b"/printers/HQ-COLOR.ppd",
                       headers=[(b"host", b"x")]), h11.EndOfMessage())  # fmt: skip
    (resp,) = [e for e in p.at_client if isinstance(e, h11.Response)]
    assert resp.status_code == 403 and not p.at_cupsd and len(p.logs) == 1


def test_refusal_with_expect_answers_before_the_body_and_closes() -> None:
    p = Pair(PrinterPolicy.of(["hq-laser"]))
    p.send(post(b"/printers/hq-color", OTHER, expect=b"100-continue"))
    (resp,) = [e for e in p.at_client if isinstance(e, h11.Response)]
    assert resp.status_code == 200 and p.closed and not p.at_cupsd
    assert ipp.decode(p.body_at_client()).code == ipp.Status.CLIENT_ERROR_NOT_POSSIBLE


def test_printer_lists_are_filtered() -> None:
    req = ipp.encode(ipp.cups_get_printers(3, ["printer-uri-supported"]))
    answer = (VECTORS / "04-cupsd-op4002.bin").read_bytes()
    for allowed, printers in ((["vec-laser"], 1), (["hq-laser"], 0)):
        p = Pair(PrinterPolicy.of(allowed))
        p.send(post(b"/", req), h11.Data(data=req), h11.EndOfMessage())
        sent = ipp.decode(p.body_at_cupsd())
        wanted = sent.operation("requested-attributes")
        assert wanted is not None and "printer-name" in wanted.strings()
        p.answer(200, answer)
        got = ipp.decode(p.body_at_client())
        assert len(list(got.groups_of(ipp.GroupTag.PRINTER))) == printers


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # request smuggling: both framings (RFC 9112 6.1)
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),
        (b"CONNECT 10.0.0.1:445 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000, 431),  # head still growing
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
    ],
)
def test_broken_http_is_refused_and_closed(raw: bytes, status: int) -> None:
    p = Pair()
    p.send_raw(raw)
    assert p.closed and not p.at_cupsd
    responses = [e for e in p.at_client if isinstance(e, h11.Response)]
    assert [r.status_code for r in responses] == [status]
    assert p.refused == [hub_ipp.REFUSED_MALFORMED]


def test_garbage_ipp_from_a_limited_office_is_a_bad_request() -> None:
    p = Pair(PrinterPolicy.of(["hq-laser"]))
    body = b"\x01\x01\x00\x0b\x00\x00\x00\x09\x01\x45\xff\xff"
    p.send(post(b"/printers/hq-laser", body), h11.Data(data=body), h11.EndOfMessage())
    answer = ipp.decode(p.body_at_client())
    assert answer.code == ipp.Status.CLIENT_ERROR_BAD_REQUEST and answer.request_id == 9
    assert not p.at_cupsd
    [(level, line)] = p.logs
    event, fields = logfmt.parse(line)
    assert (level, event, fields["office"], fields["client"]) == (
        "info", "ipp refused", "nyc", "198.18.11.10:40000")  # fmt: skip
    assert "printer" not in fields and fields["reason"]
    assert p.refused == [hub_ipp.REFUSED_MALFORMED]


def test_over_long_ipp_attribute_part_is_refused() -> None:
    huge = ipp.IppMessage(
        (1, 1),
        0x0B,
        1,
        (
            ipp.AttributeGroup(
                ipp.GroupTag.OPERATION,
                tuple(ipp.Attribute.of(f"x-{i}", ipp.Tag.TEXT, "v" * 30000) for i in range(10)),
            ),
        ),
    )
    body = ipp.encode(huge)  # about 300 KiB of attributes, over MAX_IPP_PREFIX
    p = Pair(PrinterPolicy.of(["hq-laser"]))
    p.send(post(b"/printers/hq-laser", body), h11.Data(data=body), h11.EndOfMessage())
    assert ipp.decode(p.body_at_client()).code == ipp.Status.CLIENT_ERROR_BAD_REQUEST
    assert not p.at_cupsd


def test_bad_answer_from_cupsd_closes_only_this_stream() -> None:
    p = Pair()
    p.send(post(b"/printers/hq-laser", GPA), h11.Data(data=GPA), h11.EndOfMessage())
    p._run(p.gate.backend_data(b"NOT HTTP\r\n\r\n"))
    assert p.closed


def test_gate_module_is_pure() -> None:
    import ast

    src = Path(hub_ipp.__file__).read_text()
    imported = {
        a.name.split(".")[0]
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.Import)
        for a in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"asyncio", "socket", "ssl", "logging", "time"}


REQUESTS = [
    b"POST /printers/hq-laser HTTP/1.1\r\nHost: GLOBAL-NFS\r\nContent-Type: application/ipp\r\n"
    b"Content-Length: " + str(len(GPA)).encode() + b"\r\n\r\n" + GPA,
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n10\r\n" + OTHER[:16] + b"\r\n0\r\n\r\n",
]


@settings(max_examples=300)
@given(st.sampled_from(REQUESTS).flatmap(mutated), st.booleans())
def test_mutated_requests_never_raise(data: bytes, limited: bool) -> None:
    gate = IppGate(INFO, PrinterPolicy.of(["hq-laser"] if limited else None))
    gate.client_data(data)
    gate.client_eof()
    gate.backend_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    gate.backend_eof()


@settings(max_examples=100)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=20), st.booleans())
def test_request_split_anywhere_reaches_cupsd_whole(cuts: list[int], limited: bool) -> None:
    job = ipp.encode(
        ipp.IppMessage(
            (1, 1),
            ipp.Operation.PRINT_JOB,
            3,
            (ipp.operation_attributes("ipp://GLOBAL-NFS:631/printers/hq-laser", "alice"),),
            b"%!PS-Adobe\n" * 40,
        )
    )
    wire = (
        b"POST /printers/hq-laser HTTP/1.1\r\nHost: GLOBAL-NFS\r\n"
        b"Content-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(job[i : i + 100]), job[i : i + 100])
                   for i in range(0, len(job), 100))
        + b"0\r\n\r\n"
    )  # fmt: skip
    p = Pair(PrinterPolicy.of(["hq-laser"]) if limited else ALL)
    pos = 0
    for c in cuts:
        if pos < len(wire):
            p.send_raw(wire[pos : pos + c])
            pos += c
    if pos < len(wire):
        p.send_raw(wire[pos:])
    assert p.body_at_cupsd() == job
    assert any(isinstance(e, h11.EndOfMessage) for e in p.at_cupsd)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("localhost", True), ("LOCALHOST.", True), ("198.19.0.1", False), ("hq.example", False)],
)  # fmt: skip
def test_loopback_backends_are_recognised(host: str, loopback: bool) -> None:
    assert ipp_relay.is_loopback(host) is loopback
    why = ipp_relay.loopback_reason(host, 631)
    assert (why is not None) is loopback
    if why:
        assert "\n" not in why and "cupsctl --share-printers --remote-any" in why


def test_init_default_backend_skips_loopback_and_link_local() -> None:
    pick = ipp_relay.choose_backend_address
    assert pick(["127.0.0.1", "169.254.1.1", "198.18.0.5", "10.0.0.1"]) == "198.18.0.5"
    assert pick(["127.0.0.1"]) is None
