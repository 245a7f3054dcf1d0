"""The log lines an operator acts on: every event's name, side and fields; pure.

Each is written with :class:`spokeshare.logfmt.Line` (or :func:`spokeshare.logfmt.logfmt`
in a pure core) as ``EVENT key=value ...``; a field without a value is left out. This
table is the one list: README's "Log lines" names the same events with the same fields
(tests/test_logevents.py compares them, and checks that every ``Line``/``logfmt`` call in
the package names an event listed here, with fields from its row, its ``required`` ones
included).

Field names mean the same wherever they appear:

- ``office``: the office name; ``service``: a hub service (``smb``); ``backend``: one
  of its backends, ``HOST:PORT``; ``peer``: the TCP peer (``HOST:PORT``) of a tunnel at the
  hub; ``client``: the office client's ``HOST:PORT``;
- ``protocol``: a LAN protocol (``netbios``, ``llmnr``, ``mdns``, ``wsd``);
- ``name``: one LAN name as that protocol spells it (``GLOBAL-NFS<20>``,
  ``GLOBAL-NFS``, ``GLOBAL-NFS.local``); ``names``: a comma-separated list (empty:
  none);
- ``owner``: the address of the other host holding a name;
- ``cause``: a short token to filter by (``certificate``, ``timeout``, ``control-up``);
  ``reason``: the words that explain it; ``error``: an exception's text; ``fix``: what
  the operator does about it;
- ``printer``: one of HQ's CUPS queues; ``address``, ``port``: where something listens;
- ``count``: how many; ``*_s``: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its ``name`` (the line's first words), where it is written (``edge``,
    ``hub`` or ``both``), every field it may carry in the order written, and those it
    always carries."""

    name: str
    side: str
    fields: tuple[str, ...]
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.side not in ("edge", "hub", "both"):
            raise ValueError(f"bad side {self.side!r}")
        if not set(self.required) <= set(self.fields):
            raise ValueError(f"{self.name}: required fields not among its fields")


def _e(name: str, side: str, fields: str, required: str | None = None) -> Event:
    """An event whose fields are space-separated; ``required`` left out: all of them."""
    every = tuple(fields.split())
    return Event(name, side, every, every if required is None else tuple(required.split()))


#: Every event, in README's order.
EVENTS: tuple[Event, ...] = (
    # -- streams and tunnels -----------------------------------------------------------
    _e("stream", "both",
       "office client service to_hq to_office duration_s result status reason",
       "office client service to_hq to_office duration_s result"),
    _e("hub refused", "edge", "office client service status reason", "office status"),
    _e("tunnel refused", "hub", "office peer cause status reason", "peer reason"),
    _e("handshake failed", "hub", "peer cause reason"),
    _e("refusals not logged", "hub", "count interval_s causes"),
    _e("ipp refused", "hub", "office client printer reason", "office client reason"),
    _e("backend down", "hub", "service backend reason retry_in_s"),
    _e("backend up", "hub", "service backend down_s via"),
    _e("cupsd bad answer", "hub", "office client reason"),
    _e("tunnel dropped", "edge", "office reason"),
    _e("hub no answer", "edge", "office client wait_s"),
    # -- the hub, seen from the edge ---------------------------------------------------
    _e("hub state", "edge", "office from to cause"),
    _e("hub unreachable", "edge", "office hub dialing failures reason",
       "office dialing failures reason"),
    _e("hub away", "edge", "office hub reason"),
    _e("hub back", "edge", "office hub"),
    _e("control channel moved", "edge", "office from_hub to_hub"),
    _e("open retried", "edge", "office client service from_hub reason"),
    _e("hub reachable", "edge", "office failures"),
    _e("hub reconnecting", "edge", "office reason"),
    _e("idle tunnels dropped", "edge", "office count reason"),
    _e("office revoked", "edge", "office reason"),
    # -- control channel ---------------------------------------------------------------
    _e("control channel up", "hub", "office peer edge_version", "office peer"),
    _e("control channel closed", "hub", "office peer reason", "office peer"),
    _e("control channel lost", "both", "office silence_s reason", "office reason"),
    _e("office cut", "hub", "office reason tunnels"),
    # -- certificates ------------------------------------------------------------------
    _e("certificate renewed", "both", "office serial not_after bundle failures_before",
       "office serial not_after"),
    _e("certificate renewal failed", "edge",
       "office reason failures failing_since next_attempt not_after"),
    _e("certificate renewal refused", "hub", "office reason"),
    _e("certificate not issued", "hub", "office error"),
    _e("certificate issued for another hub", "hub", "office"),
    # -- configuration -----------------------------------------------------------------
    _e("config reloaded", "hub",
       "file generation services added removed changed limits_changed",
       "file generation services"),
    _e("config not reloaded", "hub", "file generation reason", "generation reason"),
    _e("config not applied until restart", "hub", "file generation keys",
       "generation keys"),
    _e("office registry not reloaded", "hub", "file error"),
    # -- processes, listeners and files ------------------------------------------------
    _e("listening", "both", "address port service names services", "address port"),
    _e("listener failed", "edge", "address port service names error holder fix retry_s",
       "address port error fix retry_s"),
    _e("listener recovered", "edge", "address port service names holder",
       "address port"),
    _e("accept failed", "hub", "address port error"),
    _e("status page", "hub", "url paths auth"),
    _e("hub worker started", "hub", "worker pid"),
    _e("hub worker exited", "hub", "worker pid exit_status restart_in_s"),
    _e("hub reload signalled", "hub", "workers"),
    _e("hub stopping", "hub", "workers"),
    _e("hub stopped", "hub", "worker", ""),
    _e("edge stopped", "edge", "office"),
    _e("task failed", "both", "tasks error"),
    _e("tasks still running", "both", "tasks count"),
    _e("state not written", "both", "protocol file error", "file error"),
    _e("wan congestion control", "edge", "algorithm"),
    _e("smb multichannel", "hub", "service backend offered error reason fix",
       "service backend offered"),
    # -- the edge on its LAN -----------------------------------------------------------
    _e("edge up", "edge", "office names hub"),
    _e("lan interface found", "edge", "interface address"),
    _e("lan interface missing", "edge", "address reason"),
    _e("lan withdrawn", "edge", "office names after_s reason", "office names reason"),
    _e("lan announced", "edge", "office names reason"),
    _e("protocol degraded", "edge", "protocol reason"),
    _e("protocol restored", "edge", "protocol reason"),
    _e("protocol failed", "edge", "protocol action error"),
    _e("protocol stopped", "edge", "protocol address"),
    _e("names announced", "edge", "protocol names interface address workgroup",
       "protocol names"),
    _e("names withdrawn", "edge", "protocol names"),
    _e("names off", "edge", "protocols reason"),
    _e("name claimed", "edge", "protocol name interface address",
       "protocol name"),
    _e("name conflict", "edge", "protocol name owner interface recheck_in_s reason",
       "protocol name reason"),
    _e("name probe deferred", "edge", "protocol name retry_in_s reason"),
    _e("name reclaimed", "edge", "protocol name interface reason",
       "protocol name reason"),
    _e("netbios session refused", "edge", "client name reason count", "client name reason"),
    # -- HQ's printers on the office LAN -----------------------------------------------
    _e("printers not fetched", "edge", "error reason"),
    _e("printers fetched again", "edge", "failures"),
    _e("printers not advertised", "edge", "host address reason fix", "reason"),
    _e("printers advertised", "edge", "host reason"),
    _e("printers withdrawn", "edge", "count"),
    _e("printer published", "edge", "printer name host port subtypes"),
    _e("printer updated", "edge", "printer name"),
    _e("printer withdrawn", "edge", "printer name"),
    _e("printer left out", "edge", "printer reason"),
    _e("printer name conflict", "edge", "printer name next reason"),
    _e("printer failed", "edge", "printer action error reason", "printer action"),
    _e("printer subtypes missing", "edge", "subtypes reason"),
)  # fmt: skip

BY_NAME: dict[str, Event] = {e.name: e for e in EVENTS}
