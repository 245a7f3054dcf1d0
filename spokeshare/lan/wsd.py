"""WS-Discovery for the Windows Network view: codec and host core, sans-IO.

What is spoken is WS-Discovery (April 2005, the version Windows and wsdd use) over
SOAP-over-UDP, plus the DPWS metadata exchange (WS-Transfer Get over HTTP) that
makes Windows list an endpoint as a *computer in a workgroup*:

- every virtual name is its own target service: its own endpoint reference
  ``urn:uuid:<uuid5(namespace, NAME)>`` (stable across restarts), its own metadata
  path ``/<uuid>`` on the one HTTP server (TCP 5357), its own AppSequence;
- Hello (WS-Discovery §4.1) when announcing, Bye (§4.2) when withdrawing;
- a Probe (§5.2) for ``wsdp:Device`` (or with no Types) and no Scopes gets one
  ProbeMatches per endpoint (§5.3), without XAddrs, so the client Resolves;
- a Resolve (§6.1) for one of our endpoints gets ResolveMatches (§6.2) whose XAddrs
  carry the address of the interface the Resolve arrived on;
- HTTP ``POST /<uuid>`` with a WS-Transfer Get answers the DPWS §5 metadata:
  ThisDevice, ThisModel and a host Relationship whose ``pub:Computer`` is
  ``NAME/Workgroup:WG`` (MS-PBSD; the ``/`` separator is what wsdd and Windows use).

How the core works: :class:`WsdHost` is fed received datagrams and HTTP bodies with
the current time, and queues outgoing :class:`SendDatagram` values, each with the time
it is due. SOAP-over-UDP (Appendix I) repeats every datagram: multicast ones 4
times, unicast ones twice (the counts wsdd uses), the first gap random in
[UDP_MIN_DELAY, UDP_MAX_DELAY] and doubling up to UDP_UPPER_DELAY. Answers to a
multicast Probe or Resolve wait a random time up to APP_MAX_DELAY first
(APP_MAX_DELAY, WS-Discovery §2.4 protocol assignments). Message IDs already
seen (and our own) are dropped (SOAP-over-UDP Appendix II, bounded cache). The
adapter asks ``get_timer()`` when to wake and ``handle_timer(now)`` what to send.

XML comes only through defusedxml with DTDs and entities forbidden, after a size
check; anything wrong raises :class:`DecodeError` and nothing else.
"""

from __future__ import annotations

import io
import random
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID, uuid5

import defusedxml  # type: ignore[import-untyped]
import defusedxml.ElementTree as DET  # type: ignore[import-untyped]

from spokeshare.errors import DecodeError, UsageError, decoder
from spokeshare.lan import NEED_DATA, NeedData
from spokeshare.lan.ratelimit import AnswerBudget, Budget

PROTOCOL = "wsd"

# -- transport constants --------------------------------------------------------------

#: WS-Discovery §2.4: UDP port 3702, multicast groups.
UDP_PORT = 3702
MCAST_V4 = "239.255.255.250"
MCAST_V6 = "ff02::c"
#: DPWS: the HTTP metadata service; Windows and wsdd use TCP 5357.
HTTP_PORT = 5357
#: Largest SOAP message we parse (wsdd's WSD_MAX_LEN is 32767); checked before parsing.
MAX_MESSAGE = 32 * 1024
#: Largest HTTP request head (request line + headers) and body we accept.
MAX_HTTP_HEAD = 8 * 1024
MAX_HTTP_BODY = 32 * 1024
#: Header lines in one request (Windows sends 6; http.client's own cap is 100).
MAX_HTTP_HEADERS = 32

#: SOAP-over-UDP Appendix I, with wsdd's repeat counts (4 multicast, 2 unicast).
MULTICAST_UDP_REPEAT = 4
UNICAST_UDP_REPEAT = 2
UDP_MIN_DELAY = 0.050
UDP_MAX_DELAY = 0.250
UDP_UPPER_DELAY = 0.500
#: WS-Discovery §2.4 (APP_MAX_DELAY, 500 ms): the most a target service waits, at
#: random, before answering a multicast Probe or Resolve, so answers do not collide.
APP_MAX_DELAY = 0.500
#: SOAP-over-UDP Appendix II: remember this many message IDs to drop duplicates.
KNOWN_MESSAGES = 128
#: WS-Discovery's application-level limits: MAX_UDP_ENVELOPE_SIZE (4096 octets) for
#: a message over UDP, MAX_URI_SIZE (2048 octets) for a URI, MAX_FIELD_SIZE (256
#: characters) for other fields. Longer is refused before any answer is built.
MAX_UDP_ENVELOPE = 4096
MAX_URI = 2048
#: The identifier we echo (MessageID, into RelatesTo): MAX_FIELD_SIZE, so a reply
#: cannot grow with what a sender puts there (every sender seen uses urn:uuid, 45).
MAX_ECHOED_ID = 256
#: Probe/Resolve answers: per source 4 at once then 2 a second (a PC probes once,
#: repeated with one MessageID), and 20 then 10 a second for everyone together.
#: Each answer is UNICAST_UDP_REPEAT datagrams per endpoint (docs/lan-hardening.md).
ANSWER_BURST_PER_SOURCE = 4.0
ANSWER_RATE_PER_SOURCE = 2.0
ANSWER_BURST_GLOBAL = 20.0
ANSWER_RATE_GLOBAL = 10.0

# -- namespaces and actions -------------------------------------------------------------

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_WSX = "http://schemas.xmlsoap.org/ws/2004/09/mex"
NS_WSDP = "http://schemas.xmlsoap.org/ws/2006/02/devprof"
NS_PNPX = "http://schemas.microsoft.com/windows/pnpx/2005/10"
NS_PUB = "http://schemas.microsoft.com/windows/pub/2005/07"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"

NAMESPACES = {
    "soap": NS_SOAP,
    "wsa": NS_WSA,
    "wsd": NS_WSD,
    "wsx": NS_WSX,
    "wsdp": NS_WSDP,
    "pnpx": NS_PNPX,
    "pub": NS_PUB,
}

ACTION_HELLO = NS_WSD + "/Hello"
ACTION_BYE = NS_WSD + "/Bye"
ACTION_PROBE = NS_WSD + "/Probe"
ACTION_PROBE_MATCHES = NS_WSD + "/ProbeMatches"
ACTION_RESOLVE = NS_WSD + "/Resolve"
ACTION_RESOLVE_MATCHES = NS_WSD + "/ResolveMatches"
ACTION_GET = NS_TRANSFER + "/Get"
ACTION_GET_RESPONSE = NS_TRANSFER + "/GetResponse"

#: WS-Discovery §2.4: wsa:To of multicast messages.
TO_DISCOVERY = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
#: WS-Addressing anonymous role, wsa:To of replies.
TO_ANONYMOUS = NS_WSA + "/role/anonymous"
CONTENT_TYPE = "application/soap+xml"

QName = tuple[str, str]
TYPE_DEVICE: QName = (NS_WSDP, "Device")
TYPE_COMPUTER: QName = (NS_PUB, "Computer")
OUR_TYPES = frozenset({TYPE_DEVICE, TYPE_COMPUTER})


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


# -- parsed messages -------------------------------------------------------------------


@dataclass(frozen=True)
class WsdMessage:
    """The fields of one SOAP envelope that discovery needs.

    ``endpoint``, ``xaddrs``, ``types``, ``scopes`` come from the body's first
    element (Hello, Bye, Probe, Resolve or the first ProbeMatch/ResolveMatch);
    ``computer`` and ``friendly_name`` from a GetResponse's metadata.
    """

    action: str
    message_id: str
    to: str | None = None
    relates_to: str | None = None
    endpoint: str | None = None
    xaddrs: tuple[str, ...] = ()
    types: tuple[QName, ...] = ()
    scopes: tuple[str, ...] = ()
    metadata_version: int | None = None
    app_sequence: tuple[int, int] | None = None  # (InstanceId, MessageNumber)
    computer: str | None = None
    friendly_name: str | None = None

    @property
    def method(self) -> str:
        return self.action.rpartition("/")[2]


def _text(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    return (el.text or "").strip()


def _resolve_qnames(text: str, nsmap: dict[str, str]) -> tuple[QName, ...]:
    out: list[QName] = []
    for item in text.split():
        prefix, sep, local = item.rpartition(":")
        ns = nsmap.get(prefix if sep else "", "")
        if sep and prefix not in nsmap:
            raise DecodeError(PROTOCOL, f"undeclared prefix in QName {item!r}")
        out.append((ns, local))
    return tuple(out)


def _parse_tree(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    if len(data) > MAX_MESSAGE:
        raise DecodeError(PROTOCOL, f"message of {len(data)} bytes over {MAX_MESSAGE}")
    nsmap: dict[str, str] = {}
    root: ET.Element | None = None
    try:
        for event, item in DET.iterparse(
            io.BytesIO(data), events=("start-ns", "start"), forbid_dtd=True
        ):
            if event == "start-ns":
                prefix, uri = item
                # QNames in text (wsd:Types) are resolved against the declarations
                # of the whole document; senders declare them once on the Envelope.
                nsmap.setdefault(prefix, uri)
            elif root is None:
                root = item
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError, LookupError) as exc:
        raise DecodeError(PROTOCOL, f"not well-formed XML: {exc}") from exc
    if root is None:
        raise DecodeError(PROTOCOL, "empty document")
    return root, nsmap


@decoder(PROTOCOL)
def decode(data: bytes) -> WsdMessage:
    """Parse one SOAP 1.2 envelope; raises only :class:`DecodeError`."""
    root, nsmap = _parse_tree(data)
    if root.tag != _q(NS_SOAP, "Envelope"):
        raise DecodeError(PROTOCOL, f"root element {root.tag!r} is not a SOAP 1.2 Envelope")
    header = root.find(_q(NS_SOAP, "Header"))
    body = root.find(_q(NS_SOAP, "Body"))
    if header is None or body is None:
        raise DecodeError(PROTOCOL, "envelope without Header or Body")
    action = _text(header.find(_q(NS_WSA, "Action")))
    message_id = _text(header.find(_q(NS_WSA, "MessageID")))
    if not action or not message_id:
        raise DecodeError(PROTOCOL, "header lacks wsa:Action or wsa:MessageID")
    if len(message_id) > MAX_ECHOED_ID:
        raise DecodeError(PROTOCOL, f"wsa:MessageID longer than {MAX_ECHOED_ID} characters")
    if len(action) > MAX_URI:
        raise DecodeError(PROTOCOL, f"wsa:Action longer than {MAX_URI} characters")
    app_sequence = None
    seq = header.find(_q(NS_WSD, "AppSequence"))
    if seq is not None:
        try:
            app_sequence = (int(seq.get("InstanceId", "")), int(seq.get("MessageNumber", "")))
        except ValueError as exc:
            raise DecodeError(PROTOCOL, "AppSequence numbers are not integers") from exc
    item = body[0] if len(body) else None
    if item is not None and item.tag in (
        _q(NS_WSD, "ProbeMatches"),
        _q(NS_WSD, "ResolveMatches"),
    ):
        item = item[0] if len(item) else None
    endpoint = xaddrs = types = scopes = version = None
    if item is not None:
        endpoint = _text(item.find(f"{_q(NS_WSA, 'EndpointReference')}/{_q(NS_WSA, 'Address')}"))
        xaddrs = _text(item.find(_q(NS_WSD, "XAddrs")))
        types = _text(item.find(_q(NS_WSD, "Types")))
        scopes = _text(item.find(_q(NS_WSD, "Scopes")))
        version = _text(item.find(_q(NS_WSD, "MetadataVersion")))
    metadata_version = None
    if version:
        try:
            metadata_version = int(version)
        except ValueError as exc:
            raise DecodeError(PROTOCOL, "MetadataVersion is not an integer") from exc
    computer = friendly = None
    metadata = body.find(_q(NS_WSX, "Metadata"))
    if metadata is not None:
        for section in metadata.findall(_q(NS_WSX, "MetadataSection")):
            dialect = section.get("Dialect", "")
            if dialect == NS_WSDP + "/ThisDevice":
                friendly = _text(
                    section.find(f"{_q(NS_WSDP, 'ThisDevice')}/{_q(NS_WSDP, 'FriendlyName')}")
                )
            elif dialect == NS_WSDP + "/Relationship":
                path = (
                    f"{_q(NS_WSDP, 'Relationship')}/{_q(NS_WSDP, 'Host')}/{_q(NS_PUB, 'Computer')}"
                )
                computer = _text(section.find(path))
    return WsdMessage(
        action=action,
        message_id=message_id,
        to=_text(header.find(_q(NS_WSA, "To"))),
        relates_to=_text(header.find(_q(NS_WSA, "RelatesTo"))),
        endpoint=endpoint,
        xaddrs=tuple(xaddrs.split()) if xaddrs else (),
        types=_resolve_qnames(types, nsmap) if types else (),
        scopes=tuple(scopes.split()) if scopes else (),
        metadata_version=metadata_version,
        app_sequence=app_sequence,
        computer=computer,
        friendly_name=friendly,
    )


# -- endpoints and building -----------------------------------------------------------


def endpoint_uuid(namespace: UUID, name: str) -> UUID:
    """The stable endpoint UUID of a virtual name: uuid5(namespace, NAME upper-cased)."""
    return uuid5(namespace, name.upper())


@dataclass(frozen=True)
class Endpoint:
    """One virtual name as a WSD target service (one per name, wsdd PR #66)."""

    name: str
    workgroup: str
    uuid: UUID
    #: WS-Discovery §4.1 MetadataVersion; the edge keeps it growing (lan/counters.py).
    metadata_version: int = 1

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or not self.workgroup:
            raise UsageError(f"wsd: bad endpoint name {self.name!r} / workgroup {self.workgroup!r}")

    @classmethod
    def for_name(
        cls, name: str, workgroup: str, namespace: UUID, metadata_version: int = 1
    ) -> Endpoint:
        return cls(
            name.upper(), workgroup.upper(), endpoint_uuid(namespace, name), metadata_version
        )

    @property
    def urn(self) -> str:
        return self.uuid.urn

    @property
    def path(self) -> str:
        """The metadata path on the HTTP server."""
        return f"/{self.uuid}"

    @property
    def computer(self) -> str:
        """MS-PBSD pub:Computer value, as wsdd writes it: NAME/Workgroup:WG."""
        return f"{self.name}/Workgroup:{self.workgroup}"

    def xaddr(self, local_address: str, port: int = HTTP_PORT) -> str:
        host = f"[{local_address}]" if ":" in local_address else local_address
        return f"http://{host}:{port}{self.path}"


def _envelope(
    action: str,
    message_id: str,
    to: str,
    relates_to: str | None,
    app_sequence: tuple[int, str, int] | None,
    body_child: ET.Element | None,
) -> bytes:
    root = ET.Element("soap:Envelope", {f"xmlns:{p}": u for p, u in NAMESPACES.items()})
    header = ET.SubElement(root, "soap:Header")
    ET.SubElement(header, "wsa:To").text = to
    ET.SubElement(header, "wsa:Action").text = action
    ET.SubElement(header, "wsa:MessageID").text = message_id
    if relates_to is not None:
        ET.SubElement(header, "wsa:RelatesTo").text = relates_to
    if app_sequence is not None:
        instance, sequence, number = app_sequence
        ET.SubElement(
            header,
            "wsd:AppSequence",
            {"InstanceId": str(instance), "SequenceId": sequence, "MessageNumber": str(number)},
        )
    body = ET.SubElement(root, "soap:Body")
    if body_child is not None:
        body.append(body_child)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>' + xml


def _epr(parent: ET.Element, urn: str) -> None:
    epr = ET.SubElement(parent, "wsa:EndpointReference")
    ET.SubElement(epr, "wsa:Address").text = urn


def _target_body(
    tag: str, ep: Endpoint, *, types: bool, xaddr: str | None, version: bool = True
) -> ET.Element:
    el = ET.Element(tag)
    _epr(el, ep.urn)
    if types:
        ET.SubElement(el, "wsd:Types").text = "wsdp:Device pub:Computer"
    if xaddr is not None:
        ET.SubElement(el, "wsd:XAddrs").text = xaddr
    if version:
        ET.SubElement(el, "wsd:MetadataVersion").text = str(ep.metadata_version)
    return el


def build_hello(
    ep: Endpoint, message_id: str, app_sequence: tuple[int, str, int], xaddr: str
) -> bytes:
    """WS-Discovery §4.1 Hello, as wsdd sends it (EPR, XAddrs, MetadataVersion)."""
    body = _target_body("wsd:Hello", ep, types=False, xaddr=xaddr)
    return _envelope(ACTION_HELLO, message_id, TO_DISCOVERY, None, app_sequence, body)


def build_bye(ep: Endpoint, message_id: str, app_sequence: tuple[int, str, int]) -> bytes:
    """WS-Discovery §4.2 Bye: the endpoint reference only."""
    body = _target_body("wsd:Bye", ep, types=False, xaddr=None, version=False)
    return _envelope(ACTION_BYE, message_id, TO_DISCOVERY, None, app_sequence, body)


def build_probe_matches(
    ep: Endpoint, message_id: str, relates_to: str, app_sequence: tuple[int, str, int]
) -> bytes:
    """WS-Discovery §5.3 ProbeMatches with one match, no XAddrs (the client Resolves)."""
    matches = ET.Element("wsd:ProbeMatches")
    matches.append(_target_body("wsd:ProbeMatch", ep, types=True, xaddr=None))
    return _envelope(
        ACTION_PROBE_MATCHES, message_id, TO_ANONYMOUS, relates_to, app_sequence, matches
    )


def build_resolve_matches(
    ep: Endpoint,
    message_id: str,
    relates_to: str,
    app_sequence: tuple[int, str, int],
    xaddr: str,
) -> bytes:
    """WS-Discovery §6.2 ResolveMatches; ``xaddr`` on the receiving interface's address."""
    matches = ET.Element("wsd:ResolveMatches")
    matches.append(_target_body("wsd:ResolveMatch", ep, types=True, xaddr=xaddr))
    return _envelope(
        ACTION_RESOLVE_MATCHES, message_id, TO_ANONYMOUS, relates_to, app_sequence, matches
    )


def build_get_response(
    ep: Endpoint,
    message_id: str,
    relates_to: str,
    *,
    manufacturer: str = "spokeshare",
    model: str = "spokeshare edge",
) -> bytes:
    """DPWS §5 GetResponse: ThisDevice, ThisModel and the host Relationship."""
    meta = ET.Element("wsx:Metadata")
    section = ET.SubElement(meta, "wsx:MetadataSection", {"Dialect": NS_WSDP + "/ThisDevice"})
    device = ET.SubElement(section, "wsdp:ThisDevice")
    ET.SubElement(device, "wsdp:FriendlyName").text = ep.name
    ET.SubElement(device, "wsdp:FirmwareVersion").text = "1.0"
    ET.SubElement(device, "wsdp:SerialNumber").text = str(ep.uuid)
    section = ET.SubElement(meta, "wsx:MetadataSection", {"Dialect": NS_WSDP + "/ThisModel"})
    this_model = ET.SubElement(section, "wsdp:ThisModel")
    ET.SubElement(this_model, "wsdp:Manufacturer").text = manufacturer
    ET.SubElement(this_model, "wsdp:ModelName").text = model
    ET.SubElement(this_model, "pnpx:DeviceCategory").text = "Computers"
    section = ET.SubElement(meta, "wsx:MetadataSection", {"Dialect": NS_WSDP + "/Relationship"})
    rel = ET.SubElement(section, "wsdp:Relationship", {"Type": NS_WSDP + "/host"})
    host = ET.SubElement(rel, "wsdp:Host")
    _epr(host, ep.urn)
    # wsdd's client requires Types to be exactly "pub:Computer".
    ET.SubElement(host, "wsdp:Types").text = "pub:Computer"
    ET.SubElement(host, "wsdp:ServiceId").text = ep.urn
    ET.SubElement(host, "pub:Computer").text = ep.computer
    return _envelope(ACTION_GET_RESPONSE, message_id, TO_ANONYMOUS, relates_to, None, meta)


def build_probe(message_id: str) -> bytes:
    """WS-Discovery §5.2 Probe for wsdp:Device, as a client sends it (tests, self-checks)."""
    probe = ET.Element("wsd:Probe")
    ET.SubElement(probe, "wsd:Types").text = "wsdp:Device"
    return _envelope(ACTION_PROBE, message_id, TO_DISCOVERY, None, None, probe)


def build_resolve(message_id: str, urn: str) -> bytes:
    """WS-Discovery §6.1 Resolve for one endpoint (tests, self-checks)."""
    resolve = ET.Element("wsd:Resolve")
    _epr(resolve, urn)
    return _envelope(ACTION_RESOLVE, message_id, TO_DISCOVERY, None, None, resolve)


def build_get(message_id: str, urn: str) -> bytes:
    """WS-Transfer Get for an endpoint's metadata (tests, self-checks)."""
    return _envelope(ACTION_GET, message_id, urn, None, None, None)


# -- minimal bounded HTTP/1.1 ------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


@decoder("http")
def parse_http_request(data: bytes) -> HttpRequest | NeedData:
    """Parse one HTTP/1.x request (RFC 9112 §2-§6) from the bytes received so far.

    Returns :data:`spokeshare.lan.NEED_DATA` while the request is incomplete, the request once
    head and Content-Length body are there; raises :class:`DecodeError` for bad or
    oversized input (head over 8 KiB, body over 32 KiB, chunked bodies).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HTTP_HEAD:
            raise DecodeError("http", f"request head over {MAX_HTTP_HEAD} bytes")
        return NEED_DATA
    if end + 4 > MAX_HTTP_HEAD:
        raise DecodeError("http", f"request head over {MAX_HTTP_HEAD} bytes")
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError("http", "request head is not ASCII") from exc
    lines = head.split("\r\n")
    if len(lines) - 1 > MAX_HTTP_HEADERS:
        raise DecodeError("http", f"more than {MAX_HTTP_HEADERS} header lines")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise DecodeError("http", f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise DecodeError("http", f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    req = HttpRequest(method, target, version, tuple(headers), b"")
    if req.header("Transfer-Encoding") is not None:
        raise DecodeError("http", "Transfer-Encoding not supported")
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    length = 0
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 9:
            raise DecodeError("http", "bad Content-Length")
        length = int(lengths[0])
    if length > MAX_HTTP_BODY:
        raise DecodeError("http", f"body of {length} bytes over {MAX_HTTP_BODY}")
    body = data[end + 4 :]
    if len(body) < length:
        return NEED_DATA
    if len(body) > length:
        raise DecodeError("http", "bytes after the request body")
    return HttpRequest(method, target, version, tuple(headers), bytes(body))


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
}


def build_http_response(status: int, body: bytes = b"", content_type: str = CONTENT_TYPE) -> bytes:
    """An HTTP/1.1 response that closes the connection after the body."""
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# -- the host core ---------------------------------------------------------------------


@dataclass(frozen=True)
class SendDatagram:
    """A datagram to send at ``due``: to ``destination`` or, when None, to the
    multicast group of the family of ``local`` (the interface address it belongs to)."""

    payload: bytes
    local: str
    destination: tuple[str, int] | None
    due: float


@dataclass(frozen=True)
class HostStatistics:
    received: int
    duplicates: int
    malformed: int
    probes_answered: int
    resolves_answered: int
    gets_answered: int
    oversized: int = 0
    rate_limited: int = 0
    #: Filled in by the adapter (discovery_service.WsdService).
    internal_errors: int = 0
    http_refused: int = 0
    http_bad: int = 0
    #: Messages from a source outside the office link, dropped unanswered (the
    #: protocol is link-local: WS-Discovery 1.1 §2.4, TTL 1); filled in by the adapter.
    off_link_dropped: int = 0


@dataclass
class _Sequence:
    """WS-Discovery §7 AppSequence of one endpoint."""

    instance_id: int
    sequence_id: str
    number: int = 0

    def next(self) -> tuple[int, str, int]:
        self.number += 1
        return (self.instance_id, self.sequence_id, self.number)


@dataclass
class _Known:
    ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def seen(self, message_id: str) -> bool:
        """True when known; otherwise remember it (bounded, oldest forgotten)."""
        if message_id in self.ids:
            self.ids.move_to_end(message_id)
            return True
        self.ids[message_id] = None
        while len(self.ids) > KNOWN_MESSAGES:
            self.ids.popitem(last=False)
        return False


class WsdHost:
    """The target services of all virtual names on one interface.

    ``addresses`` are the interface's addresses (IPv4 and/or IPv6 link-local);
    Hello and Bye go to the multicast group of each. ``instance_id`` must grow
    with every restart (WS-Discovery §7: the adapter passes the start time).

    Answers are bounded: a Probe or Resolve is answered only within
    ``answer_budget`` (per source and for everyone, :mod:`spokeshare.lan.ratelimit`),
    datagrams over MAX_UDP_ENVELOPE and MessageIDs over MAX_ECHOED_ID are refused,
    so no reply grows with what the sender chose.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        addresses: Iterable[str],
        *,
        instance_id: int,
        rng: random.Random,
        http_port: int = HTTP_PORT,
        answer_budget: AnswerBudget | None = None,
    ) -> None:
        if not endpoints:
            raise UsageError("wsd: a host needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.addresses = tuple(addresses)
        self._rng = rng
        self._http_port = http_port
        self._by_urn = {ep.urn: ep for ep in self.endpoints}
        self._by_path = {ep.path: ep for ep in self.endpoints}
        self._seq = {ep.urn: _Sequence(instance_id, self._new_id()) for ep in self.endpoints}
        self._known = _Known()
        self._queue: list[SendDatagram] = []
        self.active = False
        self._received = self._duplicates = self._malformed = 0
        self._probes = self._resolves = self._gets = 0
        self._oversized = 0
        self._budget = answer_budget or AnswerBudget(
            Budget(ANSWER_BURST_PER_SOURCE, ANSWER_RATE_PER_SOURCE),
            Budget(ANSWER_BURST_GLOBAL, ANSWER_RATE_GLOBAL),
        )

    def __repr__(self) -> str:
        names = ",".join(ep.name for ep in self.endpoints)
        return f"<WsdHost {names} active={self.active} queued={len(self._queue)}>"

    def statistics(self) -> HostStatistics:
        return HostStatistics(
            self._received,
            self._duplicates,
            self._malformed,
            self._probes,
            self._resolves,
            self._gets,
            self._oversized,
            self._budget.refused_source + self._budget.refused_global,
        )

    def _new_id(self) -> str:
        return UUID(int=self._rng.getrandbits(128), version=4).urn

    def _message_id(self) -> str:
        mid = self._new_id()
        self._known.seen(mid)  # so our own looped-back datagrams are dropped
        return mid

    def _schedule(
        self, payload: bytes, local: str, dest: tuple[str, int] | None, start: float
    ) -> None:
        """SOAP-over-UDP Appendix I repetition."""
        count = MULTICAST_UDP_REPEAT if dest is None else UNICAST_UDP_REPEAT
        at = start
        gap = self._rng.uniform(UDP_MIN_DELAY, UDP_MAX_DELAY)
        for _ in range(count):
            self._queue.append(SendDatagram(payload, local, dest, at))
            at += gap
            gap = min(gap * 2, UDP_UPPER_DELAY)
        self._queue.sort(key=lambda d: d.due)

    # -- announcing ----------------------------------------------------------------
    def announce(self, now: float) -> None:
        """Start answering and send Hello for every endpoint on every address."""
        self.active = True
        for ep in self.endpoints:
            for local in self.addresses:
                msg = build_hello(
                    ep,
                    self._message_id(),
                    self._seq[ep.urn].next(),
                    ep.xaddr(local, self._http_port),
                )
                self._schedule(msg, local, None, now)

    def withdraw(self, now: float) -> None:
        """Stop answering, drop pending answers and send Bye for every endpoint."""
        was_active = self.active
        self.active = False
        self._queue = []
        if not was_active:
            return
        for ep in self.endpoints:
            for local in self.addresses:
                msg = build_bye(ep, self._message_id(), self._seq[ep.urn].next())
                self._schedule(msg, local, None, now)

    # -- receiving -----------------------------------------------------------------
    def handle_datagram(
        self, data: bytes, source: tuple[str, int], local: str, multicast: bool, now: float
    ) -> WsdMessage | None:
        """Handle one UDP datagram received on the interface address ``local``.

        Queues any answer and returns the decoded message (None for duplicates).
        Raises :class:`DecodeError` for malformed input.
        """
        self._received += 1
        if len(data) > MAX_UDP_ENVELOPE:
            self._oversized += 1
            raise DecodeError(PROTOCOL, f"datagram of {len(data)} bytes over {MAX_UDP_ENVELOPE}")
        try:
            msg = decode(data)
        except DecodeError:
            self._malformed += 1
            raise
        if self._known.seen(msg.message_id):
            self._duplicates += 1
            return None
        if not self.active:
            return msg
        delay = self._rng.uniform(0.0, APP_MAX_DELAY) if multicast else 0.0
        if msg.action == ACTION_PROBE:
            if msg.scopes or not set(msg.types) <= OUR_TYPES:
                return msg
            if not self._budget.allow(source[0], now):
                return msg
            self._probes += 1
            for ep in self.endpoints:
                reply = build_probe_matches(
                    ep, self._message_id(), msg.message_id, self._seq[ep.urn].next()
                )
                self._schedule(reply, local, source, now + delay)
        elif msg.action == ACTION_RESOLVE:
            ep_or_none = self._by_urn.get(msg.endpoint or "")
            if ep_or_none is None:
                return msg
            if not self._budget.allow(source[0], now):
                return msg
            self._resolves += 1
            reply = build_resolve_matches(
                ep_or_none,
                self._message_id(),
                msg.message_id,
                self._seq[ep_or_none.urn].next(),
                ep_or_none.xaddr(local, self._http_port),
            )
            self._schedule(reply, local, source, now + delay)
        return msg

    def handle_http(self, request: HttpRequest) -> tuple[int, bytes]:
        """Answer one metadata request: (HTTP status, body)."""
        ep = self._by_path.get(request.target)
        if ep is None:
            return 404, b""
        if request.method != "POST":
            return 405, b""
        if not self.active:
            return 503, b""
        try:
            msg = decode(request.body)
        except DecodeError:
            self._malformed += 1
            return 400, b""
        if msg.action != ACTION_GET:
            return 400, b""
        self._gets += 1
        return 200, build_get_response(ep, self._message_id(), msg.message_id)

    # -- timers --------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the next datagram is due, or None."""
        return self._queue[0].due if self._queue else None

    def handle_timer(self, now: float) -> list[SendDatagram]:
        """Remove and return every datagram due at ``now`` ([] when none is)."""
        due = [d for d in self._queue if d.due <= now]
        if due:
            self._queue = [d for d in self._queue if d.due > now]
        return due
