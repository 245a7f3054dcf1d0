"""The hub's handling of relayed IPP: HTTP/1.1 request by request, sans-IO.

An office PC's IPP connection arrives at the hub through the edge; the hub passes it
to HQ's cupsd, but not byte for byte. :class:`IppGate` sits between the two, built on
two h11 connections (one playing the server towards the office client, one playing the
client towards cupsd), and for each request:

1. **Host** is rewritten (RFC 9112 3.2, RFC 9110 7.2). CUPS builds the URIs of its
   answers (``printer-uri-supported``, ``job-uri``, ``printer-more-info``,
   ``printer-icons``) from the request's Host, and accepts from a non-loopback peer only
   IP literals, ``*.local`` names, its ServerName and ServerAliases (CUPS
   ``scheduler/client.c`` ``valid_host()``). So the host part is kept when it is a
   non-loopback IP literal or a ``.local`` name (both reach the edge from the office and
   both pass cupsd), and otherwise (a bare NetBIOS name like ``GLOBAL-NFS``, a DNS name
   cupsd does not know, ``localhost``) becomes the IP literal of the edge address the
   client connected to, which the client demonstrably reaches. The port is always the
   edge's port the client connected to (631), never cupsd's own: a Host without a port
   would otherwise get cupsd's listening port in every URI.
2. **The target printer** is checked against the office's printer list
   (:class:`PrinterPolicy`): the HTTP path (``/printers/NAME``, ``/classes/NAME``,
   ``/printers/NAME.ppd``, ``/icons/NAME.png``) and, for an IPP request, the path of
   ``printer-uri`` in the operation group. A printer the office was not given is
   answered by the hub itself: IPP ``client-error-not-possible`` (RFC 8011 B.1.4.5) for
   IPP requests, HTTP 403 for others, plus one log line naming office and printer.
   The answers of CUPS-Get-Printers, CUPS-Get-Classes, Get-Printers and
   CUPS-Get-Default are filtered down to the office's printers.
3. **Request framing is checked**: one Host header, never Content-Length together with
   Transfer-Encoding (RFC 9112 6.1, request smuggling), only the methods CUPS serves, no
   protocol upgrade (the hub must see every request). ``Expect: 100-continue`` is
   answered by the hub (RFC 9110 10.1.1) and not passed on.

Memory is bounded: the IPP attribute part of a request (needed for step 2) is held up
to :data:`MAX_IPP_PREFIX` octets, a filtered answer up to :data:`MAX_FILTERED_ANSWER`;
documents stream through in the chunks they arrive in. An office with all printers
(the default) gets steps 1 and 3 only, and nothing is held.

The gate is fed bytes and ends (``client_data``, ``client_eof``, ``backend_data``,
``backend_eof``) and returns :class:`Commands`: bytes for each side, whether to end
each side, and log lines. It reads no clock and does no I/O.

States (per request cycle)::

    HEAD      waiting for a request's head from the client
    PREFIX    holding the body until the IPP attribute part is complete (limited office)
    BODY      request body streaming to cupsd
    DISCARD   request refused by the hub; reading and dropping the rest of its body
    RESPONSE  cupsd's answer streaming (or held, when it is filtered) to the client
    CLOSED    both directions ended
"""

from __future__ import annotations

import enum
import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11

from spokeshare.errors import DecodeError
from spokeshare.lan import NEED_DATA
from spokeshare.logfmt import logfmt
from spokeshare.printing import ipp

#: Longest IPP attribute part the hub holds to find printer-uri (CUPS's own requests
#: are a few hundred octets; PWG 5100.x job templates a few KiB).
MAX_IPP_PREFIX = 256 * 1024
#: Longest printer-list answer the hub holds to filter (about 10 KiB per printer with
#: all attributes: room for well over a thousand queues).
MAX_FILTERED_ANSWER = 32 * 1024 * 1024
#: h11's bound on a request or response head (RFC 9112 leaves it to the server).
MAX_HEAD = 16 * 1024
#: Methods cupsd serves (CUPS scheduler/client.c): anything else is refused here.
METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS"})
#: Printer-list operations whose answers are filtered for a limited office.
LIST_OPERATIONS = frozenset(
    {
        ipp.Operation.CUPS_GET_PRINTERS,
        ipp.Operation.CUPS_GET_CLASSES,
        ipp.Operation.CUPS_GET_DEFAULT,
        0x004F,  # Get-Printers, PWG 5100.22 (CUPS ipp.h IPP_OP_GET_PRINTERS)
    }
)
#: Request headers never passed to cupsd: RFC 9110 7.6.1 hop-by-hop fields the hub
#: handles itself, and the expectation it answers itself.
_DROP = frozenset({b"expect", b"upgrade", b"proxy-connection", b"te", b"http2-settings"})


@dataclass(frozen=True, slots=True)
class PrinterPolicy:
    """Which printers an office may use: ``None`` = all HQ shares; else names
    (compared case-insensitively, as CUPS compares queue names)."""

    printers: frozenset[str] | None = None

    @classmethod
    def of(cls, names: Iterable[str] | None) -> PrinterPolicy:
        return cls(None if names is None else frozenset(n.casefold() for n in names))

    @property
    def limited(self) -> bool:
        return self.printers is not None

    def allows(self, printer: str) -> bool:
        return self.printers is None or printer.casefold() in self.printers


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the hub knows about the stream: office, and the edge address and port the
    client connected to (``edge_host`` empty when an older edge did not say)."""

    office: str
    client: str = "-"
    edge_host: str = ""
    edge_port: int = 0


@dataclass
class Commands:
    """What the adapter does after a call: write, end, log (level name, message)."""

    to_client: list[bytes] = field(default_factory=list)
    to_backend: list[bytes] = field(default_factory=list)
    close_client: bool = False
    close_backend: bool = False
    logs: list[tuple[str, str]] = field(default_factory=list)


class State(enum.Enum):
    HEAD = "head"
    PREFIX = "prefix"
    BODY = "body"
    DISCARD = "discard"
    RESPONSE = "response"
    CLOSED = "closed"


# -- the pure decisions ---------------------------------------------------------------


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` -> (host, port or None); DecodeError if bad."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise DecodeError("http-host", "unclosed IPv6 literal")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise DecodeError("http-host", "junk after IPv6 literal")
        port_s = rest[1:] if rest else ""
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif ":" in value:
        raise DecodeError("http-host", "bare IPv6 address")
    else:
        host, port_s = value, ""
    if not host:
        raise DecodeError("http-host", "empty host")
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise DecodeError("http-host", "bad port")
        return host, int(port_s)
    return host, None


def _fmt_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rewrite_host(value: str | None, info: StreamInfo) -> str:
    """The Host the hub sends cupsd for a client's Host ``value`` (see the module doc).

    The result is always one cupsd accepts from a non-loopback peer and one the office
    reaches: a non-loopback IP literal or a ``.local`` name, with the edge's port.
    """
    port = info.edge_port or 631
    fallback = info.edge_host
    host: str | None = None
    if value:
        try:
            host, given = split_host(value.strip())
        except ValueError:
            host, given = None, None
        if host is not None:
            port = info.edge_port or given or 631
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                lowered = host.rstrip(".").lower()
                if not (lowered.endswith(".local") and lowered != "localhost.local"):
                    host = None
                elif not all(c.isalnum() or c in "-." for c in lowered):
                    host = None
            else:
                if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
                    host = None
                elif addr.version == 6 and addr.is_link_local:
                    host = None  # a zone cannot travel in Host: use the edge's address
    if host is None:
        host = fallback or "localhost.invalid"  # RFC 6761 6.4: never resolves
    return _fmt_host(host, port)


def printer_of_path(path: str) -> str | None:
    """The printer a request path or URI path names, or None (not a printer's).

    ``/printers/NAME``, ``/classes/NAME`` (with ``.ppd`` for the PPD), ``/icons/NAME.png``
    (``printer-icons``). A name that is empty or holds a ``/`` is returned as given and
    then matches no policy entry, so it is refused rather than guessed at.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = urllib.parse.unquote(path)
    for prefix in ("/printers/", "/classes/", "/icons/"):
        if path.startswith(prefix):
            name = path[len(prefix) :]
            if prefix == "/icons/" and name.endswith(".png"):
                name = name[:-4]
            elif name.endswith(".ppd"):
                name = name[:-4]
            return name
    return None


def printer_of_uri(uri: str) -> str | None:
    """The printer an IPP ``printer-uri`` names (by its path), or None."""
    try:
        path = urllib.parse.urlsplit(uri).path
    except ValueError:
        return "\x00bad-uri"
    return printer_of_path(path)


def filter_printers(answer: ipp.IppMessage, policy: PrinterPolicy) -> ipp.IppMessage:
    """``answer`` (a printer-list response) without the printers ``policy`` refuses.

    A printer group is kept only if it names an allowed printer by ``printer-name`` (or,
    without one, by the path of ``printer-uri-supported``); a group that names none is
    dropped. CUPS-Get-Default left with no printer becomes client-error-not-found.
    """
    kept: list[ipp.AttributeGroup] = []
    printers = 0
    for g in answer.groups:
        if g.tag != ipp.GroupTag.PRINTER:
            kept.append(g)
            continue
        if _group_allowed(g, policy):
            kept.append(g)
            printers += 1
    code = answer.code
    if (
        printers == 0
        and code == ipp.Status.SUCCESSFUL_OK
        and any(g.tag == ipp.GroupTag.PRINTER for g in answer.groups)
    ):
        code = ipp.Status.CLIENT_ERROR_NOT_FOUND
    return ipp.IppMessage(answer.version, code, answer.request_id, tuple(kept), answer.data)


def _group_allowed(g: ipp.AttributeGroup, policy: PrinterPolicy) -> bool:
    try:
        name = g.get("printer-name")
        if name is not None:
            return policy.allows(name.string())
        uris = g.get("printer-uri-supported")
        if uris is not None:
            names = {printer_of_uri(u) for u in uris.strings()}
            return len(names) == 1 and all(n is not None and policy.allows(n) for n in names)
    except DecodeError:
        return False
    return False


def ensure_printer_name(request: ipp.IppMessage) -> ipp.IppMessage:
    """``request`` asking also for ``printer-name`` when it names requested-attributes
    without it (so every printer group of the answer can be told apart)."""
    op = request.group(ipp.GroupTag.OPERATION)
    if op is None:
        return request
    req = op.get("requested-attributes")
    if req is None:
        return request
    try:
        wanted = req.strings()
    except DecodeError:
        return request
    if any(w in ("all", "printer-name", "printer-description") for w in wanted):
        return request
    extra = ipp.IppValue(ipp.Tag.KEYWORD, b"printer-name")
    attrs = tuple(
        ipp.Attribute(a.name, (*a.values, extra)) if a is req else a for a in op.attributes
    )
    groups = tuple(ipp.AttributeGroup(g.tag, attrs) if g is op else g for g in request.groups)
    return ipp.IppMessage(request.version, request.code, request.request_id, groups, request.data)


# -- the gate -------------------------------------------------------------------------


class IppGate:
    """One relayed IPP connection's HTTP/1.1 exchange between office client and cupsd."""

    def __init__(self, info: StreamInfo, policy: PrinterPolicy) -> None:
        self.info = info
        self.policy = policy
        self.state = State.HEAD
        self.client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.backend = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.requests = 0
        self.refused = 0
        self._reset()

    def _reset(self) -> None:
        self._request: h11.Request | None = None
        self._prefix = bytearray()
        self._filter = False
        self._answer_head: h11.Response | None = None
        self._answer = bytearray()
        self._sent_100 = False
        self._close_after = False
        self._backend_used = False
        self._refusal: tuple[int, str, ipp.IppMessage | None] | None = None
        self._refusal_sent = False

    def __repr__(self) -> str:
        return f"<IppGate office={self.info.office} {self.state.value} requests={self.requests}>"

    @property
    def reading_client(self) -> bool:
        """False while the client has nothing to say (its answer is on the way): the
        adapter stops reading the client, so pipelined requests wait in the kernel."""
        return self.state in (State.HEAD, State.PREFIX, State.BODY, State.DISCARD)

    # -- inputs --------------------------------------------------------------------
    def client_data(self, data: bytes) -> Commands:
        out = Commands()
        if self.state is not State.CLOSED:
            self.client.receive_data(data)
            self._pump_client(out)
        return out

    def client_eof(self) -> Commands:
        return self.client_data(b"")

    def backend_data(self, data: bytes) -> Commands:
        out = Commands()
        if self.state is not State.CLOSED:
            self.backend.receive_data(data)
            self._pump_backend(out)
            if self.state is State.HEAD:
                self._pump_client(out)  # a pipelined request h11 already holds
        return out

    def backend_eof(self) -> Commands:
        return self.backend_data(b"")

    # -- client side ---------------------------------------------------------------
    def _pump_client(self, out: Commands) -> None:
        while self.state in (State.HEAD, State.PREFIX, State.BODY, State.DISCARD):
            try:
                ev = self.client.next_event()
            except h11.RemoteProtocolError as exc:
                self._bad_request(out, str(exc), exc.error_status_hint)
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                self._on_request(ev, out)
            elif isinstance(ev, h11.Data):
                self._on_body(bytes(ev.data), out)
            elif isinstance(ev, h11.EndOfMessage):
                self._on_body_end(out)
            elif isinstance(ev, h11.ConnectionClosed):
                self._end(out)
                return

    def _on_request(self, req: h11.Request, out: Commands) -> None:
        self.requests += 1
        self._request = req
        hosts = [v for k, v in req.headers if k == b"host"]
        te = any(k == b"transfer-encoding" for k, _ in req.headers)
        cl = any(k == b"content-length" for k, _ in req.headers)
        if req.method not in METHODS:
            self._bad_request(out, f"method {req.method.decode('ascii', 'replace')}", 405)
            return
        if te and cl:
            self._bad_request(out, "both Content-Length and Transfer-Encoding", 400)
            return
        if len(hosts) > 1 or (req.http_version == b"1.1" and not hosts):
            self._bad_request(out, "missing or repeated Host", 400)
            return
        printer = printer_of_path(req.target.decode("ascii", "replace"))
        if printer is not None and not self.policy.allows(printer):
            self._refuse(out, printer, None)
            return
        is_ipp = req.method == b"POST" and _content_type(req) == b"application/ipp"
        if self.policy.limited and is_ipp:
            self.state = State.PREFIX
            self._continue(out)
            return
        self._forward_head(req, out)
        self.state = State.BODY

    def _continue(self, out: Commands) -> None:
        """Answer ``Expect: 100-continue`` (RFC 9110 10.1.1) once the hub wants the body."""
        if self.client.they_are_waiting_for_100_continue and not self._sent_100:
            self._sent_100 = True
            _emit(
                out.to_client,
                self.client.send(h11.InformationalResponse(status_code=100, headers=[])),
            )

    def _forward_head(self, req: h11.Request, out: Commands, length: int | None = None) -> None:
        host_in = next((v.decode("latin-1") for k, v in req.headers if k == b"host"), None)
        headers: list[tuple[bytes, bytes]] = []
        for k, v in req.headers:
            if k in _DROP or k == b"host":
                continue
            if k == b"connection":
                tokens = [t.strip() for t in v.split(b",")]
                tokens = [t for t in tokens if t.lower() not in (b"upgrade", b"http2-settings")]
                if not tokens:
                    continue
                v = b", ".join(tokens)
            if length is not None and k in (b"content-length", b"transfer-encoding"):
                continue
            headers.append((k, v))
        headers.insert(0, (b"host", rewrite_host(host_in, self.info).encode("ascii")))
        if length is not None:
            headers.append((b"content-length", str(length).encode("ascii")))
        new = h11.Request(method=req.method, target=req.target, headers=headers)
        self._backend_used = True
        _emit(out.to_backend, self.backend.send(new))
        self._continue(out)

    def _on_body(self, data: bytes, out: Commands) -> None:
        if self.state is State.BODY:
            _emit(out.to_backend, self.backend.send(h11.Data(data=data)))
        elif self.state is State.PREFIX:
            self._prefix += data
            self._try_prefix(out, final=False)
        # DISCARD: dropped, memory stays flat

    def _on_body_end(self, out: Commands) -> None:
        if self.state is State.PREFIX:
            self._try_prefix(out, final=True)
        if self.state is State.BODY:
            _emit(out.to_backend, self.backend.send(h11.EndOfMessage()))
            self.state = State.RESPONSE
        elif self.state is State.DISCARD:
            self.state = State.RESPONSE
            if not self._refusal_sent:
                self._send_refusal(out)
        self._maybe_next_cycle(out)

    def _try_prefix(self, out: Commands, final: bool) -> None:
        req = self._request
        if req is None:  # pragma: no cover - PREFIX is entered with a request
            return
        try:
            prefix = ipp.decode_prefix(bytes(self._prefix), limit=MAX_IPP_PREFIX)
        except DecodeError as exc:
            self._refuse_bad(out, f"bad IPP request: {exc.reason}")
            return
        if prefix is NEED_DATA:
            if final:
                self._refuse_bad(out, "IPP request truncated")
            return
        msg, used = prefix
        self._filter = msg.code in LIST_OPERATIONS
        if self._filter and not final:
            if len(self._prefix) > MAX_IPP_PREFIX:
                self._refuse_bad(out, "printer list request too long")
            return  # wait for the whole (small) request: it may be re-encoded
        target = msg.operation("printer-uri")
        printer: str | None = None
        if target is not None:
            try:
                printer = printer_of_uri(target.string())
            except DecodeError:
                printer = "\x00bad-uri"
        if printer is not None and not self.policy.allows(printer):
            self._refuse(out, printer, msg)
            return
        raw, rest = bytes(self._prefix), bytes(self._prefix[used:])
        self._prefix.clear()
        if self._filter:
            body = ipp.encode(ensure_printer_name(msg)) + rest
            self._forward_head(req, out, length=len(body))
            _emit(out.to_backend, self.backend.send(h11.Data(data=body)))
        else:
            self._forward_head(req, out)
            _emit(out.to_backend, self.backend.send(h11.Data(data=raw)))
        self.state = State.BODY

    # -- refusals by the hub ---------------------------------------------------------
    def _refuse(self, out: Commands, printer: str, msg: ipp.IppMessage | None) -> None:
        self.refused += 1
        shown = printer.encode("unicode_escape").decode("ascii")[:80]
        out.logs.append(
            (
                "warning",
                logfmt(
                    "ipp refused",
                    office=self.info.office,
                    client=self.info.client,
                    printer=shown,
                    reason="not one of this office's printers (office add/set --printers)",
                ),
            )
        )
        text = f"printer {shown} is not available to office {self.info.office}"
        self._refusal = (ipp.Status.CLIENT_ERROR_NOT_POSSIBLE, text, msg)
        self._enter_discard(out)

    def _refuse_bad(self, out: Commands, reason: str) -> None:
        self.refused += 1
        out.logs.append(("info", self._refused_line(reason)))
        self._refusal = (ipp.Status.CLIENT_ERROR_BAD_REQUEST, reason, None)
        self._enter_discard(out)

    def _bad_answer_line(self, reason: str) -> str:
        """The log line of an answer from cupsd the hub cannot relay (``reason``: what
        was wrong); the client's connection is ended."""
        return logfmt("cupsd bad answer", office=self.info.office, client=self.info.client,
                      reason=reason)  # fmt: skip

    def _refused_line(self, reason: str) -> str:
        """The log line of a request refused as malformed (``reason``: what was wrong)."""
        return logfmt("ipp refused", office=self.info.office, client=self.info.client,
                      reason=reason)  # fmt: skip

    def _enter_discard(self, out: Commands) -> None:
        self.state = State.DISCARD
        if self.client.they_are_waiting_for_100_continue and not self._sent_100:
            # The body was never asked for: answer now, then close (RFC 9110 10.1.1).
            self._close_after = True
            self._send_refusal(out)
            self._end(out)

    def _send_refusal(self, out: Commands) -> None:
        assert self._refusal is not None
        status, text, request = self._refusal
        self._refusal_sent = True
        req = self._request
        if req is not None and req.method == b"POST" and _content_type(req) == b"application/ipp":
            if request is None:
                request = ipp.IppMessage((1, 1), 0, _request_id(self._prefix), ())
            body = ipp.encode(ipp.response(request, status, text))
            self._respond(out, 200, body, b"application/ipp")
        else:
            code = 403 if status == ipp.Status.CLIENT_ERROR_NOT_POSSIBLE else 400
            self._respond(out, code, (text + "\n").encode("utf-8"), b"text/plain")
        self._prefix.clear()

    def _respond(self, out: Commands, code: int, body: bytes, ctype: bytes) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if self._close_after:
            headers.append((b"connection", b"close"))
        resp = h11.Response(status_code=code, headers=headers)
        _emit(out.to_client, self.client.send(resp))
        _emit(out.to_client, self.client.send(h11.Data(data=body)))
        _emit(out.to_client, self.client.send(h11.EndOfMessage()))

    def _bad_request(self, out: Commands, reason: str, status: int) -> None:
        """The client broke HTTP: answer ``status`` if the exchange allows, then close."""
        self.refused += 1
        out.logs.append(("info", self._refused_line(reason)))
        if self.client.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._close_after = True
            body = (reason + "\n").encode("utf-8", "replace")
            try:
                self._respond(out, status, body, b"text/plain")
            except h11.LocalProtocolError:
                pass  # h11 cannot answer in this state: closing says enough
        self._end(out)

    # -- backend side --------------------------------------------------------------
    def _pump_backend(self, out: Commands) -> None:
        while self.state is not State.CLOSED:
            try:
                ev = self.backend.next_event()
            except h11.RemoteProtocolError as exc:
                out.logs.append(("warning", self._bad_answer_line(f"bad HTTP: {exc}")))
                self._end(out)
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.InformationalResponse):
                continue  # the hub answers any 100-continue itself
            if isinstance(ev, h11.Response):
                self._on_answer(ev, out)
            elif isinstance(ev, h11.Data):
                if self._answer_head is not None:
                    self._answer += ev.data
                    if len(self._answer) > MAX_FILTERED_ANSWER:
                        out.logs.append(
                            ("warning", self._bad_answer_line("printer list answer too long"))
                        )
                        self._end(out)
                        return
                else:
                    _emit(out.to_client, self.client.send(h11.Data(data=ev.data)))
            elif isinstance(ev, h11.EndOfMessage):
                if self._answer_head is not None:
                    self._send_filtered(out)
                else:
                    _emit(out.to_client, self.client.send(h11.EndOfMessage()))
                self._maybe_next_cycle(out)
            elif isinstance(ev, h11.ConnectionClosed):
                self._end(out)
                return

    def _on_answer(self, resp: h11.Response, out: Commands) -> None:
        if self.state not in (State.BODY, State.RESPONSE):
            out.logs.append(("warning", self._bad_answer_line("answered out of turn")))
            self._end(out)
            return
        if self._filter and resp.status_code == 200:
            self._answer_head = resp
            self._answer.clear()
            return
        headers = [(k, v) for k, v in resp.headers if k != b"upgrade"]
        _emit(
            out.to_client,
            self.client.send(
                h11.Response(status_code=resp.status_code, headers=headers, reason=resp.reason)
            ),
        )

    def _send_filtered(self, out: Commands) -> None:
        head = self._answer_head
        assert head is not None
        try:
            body = ipp.encode(filter_printers(ipp.decode(bytes(self._answer)), self.policy))
        except DecodeError as exc:
            out.logs.append(
                ("warning", self._bad_answer_line(f"printer list not IPP: {exc.reason}"))
            )
            self._end(out)
            return
        headers = [
            (k, v)
            for k, v in head.headers
            if k not in (b"content-length", b"transfer-encoding", b"upgrade")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        resp = h11.Response(status_code=200, headers=headers, reason=head.reason)
        _emit(out.to_client, self.client.send(resp))
        _emit(out.to_client, self.client.send(h11.Data(data=body)))
        _emit(out.to_client, self.client.send(h11.EndOfMessage()))
        self._answer.clear()
        self._answer_head = None

    # -- cycles and endings ----------------------------------------------------------
    def _maybe_next_cycle(self, out: Commands) -> None:
        """After a request or an answer ended: start the next request when both have."""
        if self.state is State.CLOSED:
            return
        c, b = self.client, self.backend
        answered = c.our_state in (h11.DONE, h11.MUST_CLOSE)
        if answered and (c.our_state is h11.MUST_CLOSE or self._close_after):
            self._end(out)
            return
        if not (answered and c.their_state is h11.DONE):
            return
        if self._backend_used:
            if b.our_state is h11.MUST_CLOSE or b.their_state is h11.MUST_CLOSE:
                self._end(out)  # cupsd closes after this answer: so does the client's side
                return
            if b.our_state is not h11.DONE or b.their_state is not h11.DONE:
                return
            b.start_next_cycle()
        c.start_next_cycle()
        self.state = State.HEAD
        self._reset()

    def _end(self, out: Commands) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        out.close_client = True
        out.close_backend = True


def _emit(sink: list[bytes], data: bytes | None) -> None:
    """Queue bytes h11 produced (None or empty for events with no wire form)."""
    if data:
        sink.append(data)


def _content_type(req: h11.Request) -> bytes:
    for k, v in req.headers:
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower()
    return b""


def _request_id(prefix: bytes | bytearray) -> int:
    """The request-id of a request too broken to decode (RFC 8010 3.4.4), or 0."""
    return int.from_bytes(prefix[4:8], "big") if len(prefix) >= 8 else 0
