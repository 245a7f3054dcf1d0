"""Every LAN service reports a frozen dataclass (issue 11, "one schema"): what its
``statistics()`` returns is a value a reader cannot change under the service, nested
statistics included. Services are only constructed here: no socket is opened."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import spokeshare.lan
import spokeshare.printing
from spokeshare.lan.discovery_service import LlmnrService, WsdService
from spokeshare.lan.mdns import MdnsPublisher
from spokeshare.lan.netbios_service import NetbiosService, NetbiosSettings
from spokeshare.printing.printer_sync import MdnsWithPrinters, PrinterAdvertiser
from tests.lan.settings import discovery_settings, presence


def _frozen(cls: Any) -> bool:
    params = getattr(cls, "__dataclass_params__", None)
    return dataclasses.is_dataclass(cls) and params is not None and bool(params.frozen)


def _assert_frozen(value: object, where: str) -> None:
    """``value`` is a frozen dataclass instance, and so is every dataclass in it."""
    assert dataclasses.is_dataclass(value) and not isinstance(value, type), where
    assert _frozen(type(value)), f"{where}: {type(value).__name__} is not frozen"
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
            _assert_frozen(inner, f"{where}.{f.name}")


async def _no_printers() -> bytes:
    raise AssertionError("not fetched: the advertiser is never started here")


def _services(state_dir: Path) -> dict[str, Any]:
    """Each LAN service as the edge builds it (EdgeDaemon._build_presence), unstarted."""
    lan = presence("lo", "198.18.200.1", ["GLOBAL-NFS"], "ACME")
    disc = discovery_settings(
        "lo", "198.18.200.1", ["GLOBAL-NFS"], UUID(int=11), "ACME", state_dir=state_dir
    )
    publisher = MdnsPublisher(disc)
    printers = PrinterAdvertiser(
        publisher, _no_printers, "GLOBAL-NFS", [IPv4Address("198.18.200.1").packed], 631
    )
    return {
        "netbios": NetbiosService(NetbiosSettings(lan, IPv4Address("198.18.200.255"))),
        "llmnr": LlmnrService(disc),
        "wsd": WsdService(disc),
        "mdns": publisher,
        "mdns+printers": MdnsWithPrinters(MdnsPublisher(disc), printers),
        "printers": printers,
    }


def test_every_lan_service_returns_a_frozen_dataclass(tmp_path: Path) -> None:
    for name, service in _services(tmp_path).items():
        _assert_frozen(service.statistics(), name)


def _classes_with_statistics() -> list[type]:
    """Every class of spokeshare.lan and spokeshare.printing that offers statistics()."""
    found: list[type] = []
    for pkg in (spokeshare.lan, spokeshare.printing):
        for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                method = vars(cls).get("statistics")  # a field of that name is no method
                if cls.__module__ == module.__name__ and inspect.isfunction(method):
                    found.append(cls)
    return found


@pytest.mark.parametrize("cls", _classes_with_statistics(), ids=lambda c: c.__qualname__)
def test_every_statistics_method_declares_a_frozen_dataclass(cls: type) -> None:
    """The static side: a service or core added later is held to it too."""
    returned = typing.get_type_hints(vars(cls)["statistics"])["return"]
    assert _frozen(returned), f"{cls.__qualname__}.statistics() -> {returned!r}"


def test_the_services_above_are_all_there_are(tmp_path: Path) -> None:
    """A new service class with statistics() shows up here, to be built above too."""
    built = {type(s) for s in _services(tmp_path).values()}
    services = {c for c in _classes_with_statistics() if c.__name__.endswith(
        ("Service", "Publisher", "WithPrinters", "Advertiser"))}  # fmt: skip
    assert services <= built, services - built
