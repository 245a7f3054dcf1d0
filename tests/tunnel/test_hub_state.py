"""The hub's per-office state, without sockets: what the registry gives an office and
when a change applies (the same hub serving real tunnels is in test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

from spokeshare import enrollment
from spokeshare.printing.hub_ipp import PrinterPolicy, StreamInfo
from spokeshare.printing.ipp_relay import IppFilter
from spokeshare.tunnel.hub import Hub
from tests.helpers import free_port, make_deployment
from tests.tunnel.test_splice import Playbook, data

GET_COLOR = b"GET /printers/hq-color HTTP/1.1\r\nHost: 198.18.12.1\r\n\r\n"


def test_a_registry_change_to_an_offices_printers_applies_to_new_streams(
    tmp_path: Path,
) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    dep.add_office("sf", ["ipp"])
    enrollment.set_printers(dep.dir, "sf", ["hq-laser"])
    hub = Hub(dep.hub_config(), dep.dir)
    hub.reload_registry(force=True)
    sf = hub.office_state("sf")
    assert sf.printer_policy == PrinterPolicy.of(["hq-laser"])
    assert hub.office_state("sf") is sf  # one state per office

    def stream() -> Playbook:
        """A new ipp stream of office sf, its gate reading the office's policy as the
        hub's tunnel does (HubTunnel._ipp_policy)."""
        pb = Playbook(IppFilter(StreamInfo("sf", "-", "198.18.12.1", 631),
                                lambda: sf.printer_policy))  # fmt: skip
        pb.splice.tunnel_data(data(GET_COLOR))
        return pb

    refused = stream().take()
    assert not [c for c in refused if c[1] == "plain"]  # cupsd never asked
    answer = [c[2] for c in refused if len(c) == 3]
    assert answer[0][4:].startswith(b"HTTP/1.1 403 ")

    enrollment.set_printers(dep.dir, "sf", ["hq-laser", "hq-color"])
    hub.reload_registry()  # what the hub does once a second
    assert sf.printer_policy == PrinterPolicy.of(["hq-color", "hq-laser"])
    passed = stream().take()
    assert passed[0] == ("write", "plain", GET_COLOR.replace(b"Host", b"host")
                         .replace(b"198.18.12.1\r", b"198.18.12.1:631\r"))  # fmt: skip

    enrollment.set_printers(dep.dir, "sf", None)  # every printer HQ shares
    hub.reload_registry()
    assert sf.printer_policy == PrinterPolicy.of(None)


def test_an_office_the_registry_does_not_know_has_no_printers(tmp_path: Path) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    hub = Hub(dep.hub_config(), dep.dir)
    hub.reload_registry(force=True)
    assert hub.office_state("nyc").printer_policy == PrinterPolicy.of(None)  # the default
    assert hub.office_state("ghost").printer_policy == PrinterPolicy.of(())
    assert not hub.office_state("ghost").printer_policy.allows("hq-laser")
