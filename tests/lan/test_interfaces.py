"""Reading the LAN interface from the kernel (checked on loopback, which every host has)."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest

from spokeshare.errors import ConfigError
from spokeshare.lan import interfaces


def test_interface_of_and_its_network() -> None:
    assert interfaces.interface_of("127.0.0.1") == "lo"
    assert interfaces.interface_of("198.18.255.254") is None
    assert str(interfaces.ipv4_interface("lo", "127.0.0.1").network) == "127.0.0.0/8"
    with pytest.raises(ConfigError):
        interfaces.ipv4_interface("no-such-if0", "192.0.2.1")


def test_interface_without_an_ipv4_address_is_not_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At boot before DHCP the interface has no address yet: an OSError (the CLI exits
    1, systemd restarts the edge), not a ConfigError (exit 2: the unit stays down)."""

    def no_address(*args: object) -> bytes:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    monkeypatch.setattr(fcntl, "ioctl", no_address)
    with pytest.raises(OSError) as exc:
        interfaces.ipv4_interface("eth1", "192.0.2.10")
    assert not isinstance(exc.value, ConfigError)
    assert exc.value.errno == errno.EADDRNOTAVAIL
    assert exc.value.strerror == "interface eth1 has no IPv4 address (yet; lan.address 192.0.2.10)"


def test_ipv6_link_local_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "if_inet6"
    proc.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000002c553bfffe202868 02 40 20 80     lan0\n"
    )
    assert interfaces.ipv6_link_local("lan0", proc) == "fe80::2c55:3bff:fe20:2868"
    assert interfaces.ipv6_link_local("lo", proc) is None
    assert interfaces.ipv6_link_local("lan0", tmp_path / "missing") is None


def test_ipv6_link_local_skips_the_names_own(tmp_path: Path) -> None:
    """A second link-local address on the interface (a name's address6) is not taken
    for the interface's own, whatever order the kernel lists them in."""
    proc = tmp_path / "if_inet6"
    proc.write_text(
        "fe800000000000000000000000000003 02 40 20 80     lan0\n"
        "fe800000000000002c553bfffe202868 02 40 20 80     lan0\n"
    )
    assert interfaces.ipv6_link_local("lan0", proc, exclude={"fe80::3"}) == (
        "fe80::2c55:3bff:fe20:2868"
    )
    assert interfaces.ipv6_link_local("lan0", proc) == "fe80::3"  # lowest when none excluded
