"""Configuration: every key typed, unknown keys named with file and dotted key."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.config import (
    LanPresence,
    VirtualName,
    check_virtual_name,
    edge_listeners,
    load_edge,
    load_hub,
)
from spokeshare.errors import ConfigError
from spokeshare.lan import llmnr, netbios, wsd
from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.mdns import MdnsPublisher
from spokeshare.lan.netbios_core import NameResponder
from spokeshare.lan.netbios_service import NetbiosSettings

HUB = """
[hub]
listen = ["0.0.0.0:7443"]
state_dir = "/tmp/x"
[services.smb]
backend = "127.0.0.1:445"
[limits]
header_timeout = 3
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_hub_config_loads(tmp_path: Path) -> None:
    cfg = load_hub(write(tmp_path, HUB))
    assert cfg.listen == (("0.0.0.0", 7443),)
    assert cfg.services["smb"].first.port == 445
    assert cfg.limits.header_timeout == 3.0
    assert cfg.limits.max_handshakes == 256
    assert (cfg.sockets.user_timeout, cfg.sockets.stream_user_timeout) == (10.0, 120.0)
    assert cfg.sockets.rto_max == 1.0


def test_one_backend_as_before_several_in_order(tmp_path: Path) -> None:
    from spokeshare.config import Backend, Service, render_hub_toml
    from spokeshare.tunnel.backends import Balance

    one = load_hub(write(tmp_path, HUB)).services["smb"]
    assert one == Service((Backend("127.0.0.1", 445),), Balance.ORDER)
    text = HUB.replace(
        'backend = "127.0.0.1:445"',
        'backends = ["198.18.0.11:445", "[2001:db8::2]:445", "198.18.0.13:445"]\n'
        'balance = "round-robin"',
    )
    cfg = load_hub(write(tmp_path, text))
    svc = cfg.services["smb"]
    assert [b.address for b in svc.backends] == [
        "198.18.0.11:445", "[2001:db8::2]:445", "198.18.0.13:445"
    ]  # fmt: skip
    assert svc.balance is Balance.ROUND_ROBIN and svc.first.host == "198.18.0.11"
    assert cfg.limits.backend_connect_timeout == 2.0
    assert (cfg.limits.backend_probe_initial, cfg.limits.backend_probe_max) == (1.0, 30.0)
    assert cfg.limits.backend_check_interval == 10.0
    # spokeshare init writes one backend as before and several as a list; both load back.
    rendered = render_hub_toml(
        [("0.0.0.0", 7443)],
        {"smb": [("198.18.0.11", 445), ("198.18.0.12", 445)], "ipp": ("198.18.0.20", 631)},
        tmp_path / "state",
    )
    assert 'backends = ["198.18.0.11:445", "198.18.0.12:445"]' in rendered
    assert 'backend = "198.18.0.20:631"' in rendered
    back = load_hub(write(tmp_path, rendered, "r.toml"))
    assert [b.address for b in back.services["smb"].backends] == [
        "198.18.0.11:445", "198.18.0.12:445"
    ]  # fmt: skip
    assert back.services["ipp"] == Service.one("198.18.0.20", 631)


def test_init_takes_several_backends_for_a_service(tmp_path: Path) -> None:
    from spokeshare import enrollment

    enrollment.init(
        tmp_path / "d", "hq", ["hq.example:7443"],
        {"smb": "198.18.0.11:445,198.18.0.12:445", "ipp": "198.18.0.20:631"},
    )  # fmt: skip
    cfg = load_hub(tmp_path / "d" / "hub.toml")
    assert [b.address for b in cfg.services["smb"].backends] == [
        "198.18.0.11:445", "198.18.0.12:445"
    ]  # fmt: skip


def test_hub_sockets_section(tmp_path: Path) -> None:
    text = HUB + "max_handshakes = 32\n[sockets]\nstream_user_timeout = 90.0\nrto_max = 0.0\n"
    cfg = load_hub(write(tmp_path, text))
    assert cfg.limits.max_handshakes == 32
    assert (cfg.sockets.stream_user_timeout, cfg.sockets.rto_max) == (90.0, 0.0)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (HUB + "\n[extra]\n", "extra", "unknown key"),
        (HUB.replace("state_dir", "stat_dir"), "hub.stat_dir", "unknown key"),
        (HUB.replace("header_timeout", "header_timout"), "limits.header_timout", "unknown key"),
        (HUB.replace("= 3", '= "3"'), "limits.header_timeout", "must be float"),
        (HUB.replace("= 3", "= -3"), "limits.header_timeout", "must not be negative"),
        (HUB.replace("127.0.0.1:445", "nohost"), "services.smb.backend", "not HOST:PORT"),
        (HUB.replace("services.smb", "services.SMB"), "services.SMB", "lower-case"),
        (HUB.replace("0.0.0.0:7443", "0.0.0.0:70000"), "hub.listen", "out of range"),
        ("[hub]\n", "services", "no service"),
        (HUB + "max_handshakes = 0\n", "limits.max_handshakes", "at least 1"),
        (HUB + "[sockets]\nrto_max = 0.5\n", "sockets.rto_max", "1 to 120 seconds"),
        (HUB + "[sockets]\nrto_max = 121.0\n", "sockets.rto_max", "1 to 120 seconds"),
        (
            HUB + "[sockets]\nstream_user_timeout = 5.0\n",
            "sockets.stream_user_timeout",
            "not be shorter",
        ),
        (HUB + "[sockets]\nuser_timout = 5.0\n", "sockets.user_timout", "unknown key"),
        ("[hub\n", "", "not valid TOML"),
        (HUB.replace("backend =", "port ="), "services.smb.backend", "is required"),
        (
            HUB.replace('backend = "127.0.0.1:445"', 'backend = "a:1"\nbackends = ["b:1"]'),
            "services.smb.backends",
            "not both",
        ),
        (HUB.replace('backend = "127.0.0.1:445"', "backends = []"), "services.smb.backends",
         "1 to 32"),
        (HUB.replace('backend = "127.0.0.1:445"', 'backends = ["a:1", "a:1"]'),
         "services.smb.backends", "a:1 is listed twice"),
        (HUB.replace('backend = "127.0.0.1:445"', 'backends = ["a:1", "b"]'),
         "services.smb.backends", "not HOST:PORT"),
        (HUB.replace('backend = "127.0.0.1:445"', "backends = [445]"),
         "services.smb.backends", "strings HOST:PORT"),
        (HUB.replace('backend = "127.0.0.1:445"', 'backend = "a:1"\nbalance = "random"'),
         "services.smb.balance", "order, round-robin"),
        (HUB + "backend_probe_initial = 60.0\n", "limits.backend_probe_initial",
         "<= backend_probe_max"),
        (HUB + "backend_probe_max = inf\n", "limits.backend_probe_max", "finite"),
        (HUB + "backend_check_interval = -1.0\n", "limits.backend_check_interval",
         "must not be negative"),
        (HUB + "backend_connect_timeout = 0\n", "limits.backend_connect_timeout",
         "must be positive"),
    ],
)  # fmt: skip
def test_hub_config_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_hub(path)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(path) in str(info.value)


EDGE = """
[edge]
bundle = "/etc/spokeshare/nyc.bundle"
[lan]
interface = "eth1"
address = "198.18.11.1"
workgroup = "acme"
[[names]]
name = "global-nfs"
service = "smb"
comment = "HQ files"
[[names]]
name = "GLOBAL-ENG"
service = "eng"
address = "198.18.11.5"
[pool]
min_idle = 2
"""


def test_edge_config_loads(tmp_path: Path) -> None:
    cfg = load_edge(write(tmp_path, EDGE))
    assert cfg.workgroup == "ACME"
    assert [n.name for n in cfg.names] == ["GLOBAL-NFS", "GLOBAL-ENG"]
    assert cfg.pool.min_idle == 2
    assert edge_listeners(cfg, ("smb", "eng", "ipp")) == {
        ("198.18.11.1", 445): "smb",
        ("198.18.11.1", 631): "ipp",
        ("198.18.11.5", 445): "eng",
    }


def test_edge_defaults_and_overrides() -> None:
    cfg = load_edge(None, {"bundle": "/b", "lan_address": "127.0.0.1", "ports": {"smb": 4445}})
    assert [n.name for n in cfg.names] == ["GLOBAL-NFS"]
    assert cfg.ports["smb"] == 4445 and str(cfg.bundle) == "/b"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('workgroup = "acme"', 'workgroup = "this-name-is-far-too-long"', "lan.workgroup"),
        ('address = "198.18.11.1"', 'address = "nyc"', "lan.address"),
        ("min_idle = 2", "min_idel = 2", "pool.min_idel"),
        ("min_idle = 2", "min_idle = 99", "pool.min_idle"),
        ('comment = "HQ files"', 'coment = "x"', "names[0].coment"),
        ('name = "GLOBAL-ENG"', 'name = "global-nfs"', "names[1].name"),
    ],
)
def test_edge_config_errors(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in EDGE
    with pytest.raises(ConfigError) as info:
        load_edge(write(tmp_path, EDGE.replace(old, new)))
    assert info.value.key == key


def test_two_services_on_one_address_refused(tmp_path: Path) -> None:
    cfg = load_edge(write(tmp_path, EDGE.replace('address = "198.18.11.5"\n', "")))
    with pytest.raises(ConfigError, match="give this name its own address"):
        edge_listeners(cfg, ("smb", "eng"))
    with pytest.raises(ConfigError, match="may not use service 'eng'"):
        edge_listeners(load_edge(write(tmp_path, EDGE)), ("smb",))


def test_shipped_examples_load() -> None:
    root = Path(__file__).resolve().parent.parent / "etc"
    hub = load_hub(root / "hub.toml.example")
    assert set(hub.services) == {"smb", "ipp"}
    edge = load_edge(root / "edge.toml.example")
    assert edge.netbios.session_port == 139 and edge.discovery.withdraw_after == 30.0
    assert [n.name for n in edge.names] == ["GLOBAL-NFS"]


def test_printers_sync_interval_documented_default_and_bounds(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent / "etc"
    shipped = load_edge(root / "edge.toml.example").printers
    default = load_edge(None).printers
    assert shipped.advertise and shipped.sync_interval == 20.0 == default.sync_interval
    cfg = load_edge(write(tmp_path, EDGE + "\n[printers]\nsync_interval = 5\nadvertise = false\n"))
    assert cfg.printers.sync_interval == 5.0 and not cfg.printers.advertise
    for bad in ("0.5", "51", "-1"):
        with pytest.raises(ConfigError) as info:
            load_edge(write(tmp_path, EDGE + f"\n[printers]\nsync_interval = {bad}\n"))
        assert info.value.key == "printers.sync_interval"
    with pytest.raises(ConfigError) as info:
        load_edge(write(tmp_path, EDGE + "\n[printers]\nsync = 5\n"))
    assert info.value.key == "printers.sync"


def test_printers_host_name_default_empty_one_label_else_refused(tmp_path: Path) -> None:
    assert load_edge(None).printers.host_name == ""  # then <office>-print
    cfg = load_edge(write(tmp_path, EDGE + '\n[printers]\nhost_name = "sf-printers"\n'))
    assert cfg.printers.host_name == "sf-printers"
    for bad in ('"sf.print"', '"-sf"', '"sf print"', f'"{"a" * 64}"', '"sf-print.local"'):
        with pytest.raises(ConfigError) as info:
            load_edge(write(tmp_path, EDGE + f"\n[printers]\nhost_name = {bad}\n"))
        assert info.value.key == "printers.host_name"


# -- virtual names: one rule, checked at load ------------------------------------------


@pytest.mark.parametrize(
    ("name", "why", "fix"),
    [
        ("FILES_HQ", "'_' cannot be part of a host name", "'FILES-HQ'"),
        ("SIXTEEN-LETTERS1", "16 characters, NetBIOS carries at most 15", "'SIXTEEN-LETTERS'"),
        ("files.hq", "'.' would make it a domain name", "'FILES-HQ'"),
        ("FILES HQ", "it has a space", "'FILES-HQ'"),
        ("FÄLLE", "non-ASCII", "'FLLE'"),
        ("-FILES", "starts or ends with '-'", "'FILES'"),
        ("FILES-", "starts or ends with '-'", "'FILES'"),
        ("", "it is empty", ""),
    ],
)
def test_virtual_name_outside_the_rule_is_refused_at_load(
    tmp_path: Path, name: str, why: str, fix: str
) -> None:
    """A name one of NetBIOS, LLMNR, mDNS or WS-Discovery cannot carry is a ConfigError
    from load_edge naming the key, why, and a name that would do (docs/protocol.md)."""
    with pytest.raises(ConfigError) as info:
        load_edge(write(tmp_path, EDGE.replace('"GLOBAL-ENG"', f'"{name}"')))
    assert info.value.key == "names[1].name"
    assert why in info.value.reason
    assert "letters, digits or '-'" in info.value.reason
    if fix:
        assert f"(e.g. {fix})" in info.value.reason


@given(st.text(alphabet="AZaz09-_. Ä", max_size=17))
def test_every_name_load_accepts_is_carried_by_every_lan_core(name: str) -> None:
    """Whatever passes the config rule, every LAN core takes without an error once the
    edge runs: NetBIOS names, browse, LLMNR, WS-Discovery and mDNS (no sockets)."""
    try:
        up = check_virtual_name(name, "edge.toml", "names[0].name")
    except ConfigError:
        return
    presence = LanPresence("eth0", "198.18.11.1", "ACME", (VirtualName(name, "smb"),))
    assert presence.names[0].name == up
    nb = NetbiosSettings(presence, IPv4Address("198.18.11.255"))
    NameResponder(nb.responder_config())
    assert netbios.NetbiosName.create(up, 0x20).raw16()[:15].rstrip() == up.encode()
    disc = DiscoverySettings(presence, UUID(int=1))
    llmnr.LlmnrResponder(disc.names)
    endpoint = wsd.Endpoint.for_name(up, disc.workgroup, disc.uuid_namespace)
    assert endpoint.computer == f"{up}/Workgroup:ACME"
    smb, _ = MdnsPublisher(disc).infos(up)
    assert smb.server == f"{up}.local."


def test_lan_presence_checks_addresses_and_duplicates() -> None:
    nfs = VirtualName("GLOBAL-NFS", "smb")
    cases: list[tuple[dict[str, object], str]] = [
        ({"address": "10.0.0.300"}, "lan.address"),
        ({"interface": "eth0", "address": "0.0.0.0"}, "lan.address"),
        ({"names": (nfs, VirtualName("global-nfs", "smb"))}, "names[1].name"),
        ({"names": (VirtualName("A", "smb", address="x"),)}, "names[0].address"),
        ({"names": (VirtualName("A", "smb", address6="fe80::1"),)}, "names[0].address6"),
        ({"names": (VirtualName("A", "smb", comment="c" * 44),)}, "names[0].comment"),
        ({"workgroup": "bad group"}, "lan.workgroup"),
        ({"host_names": ("a.b",)}, "printers.host_name"),
    ]
    for kwargs, key in cases:
        args: dict[str, object] = {"interface": "", "address": "198.18.11.1", **kwargs}
        with pytest.raises(ConfigError) as info:
            LanPresence(**args)  # type: ignore[arg-type]
        assert info.value.key == key


def test_print_host_name_is_a_dns_label_not_a_netbios_name() -> None:
    """mDNS-only host names (the print host) take up to 63 characters: the default
    ``<office>-print`` of a long office name reaches the mDNS publisher as it is."""
    host = "headquarters-print"
    presence = LanPresence("eth0", "198.18.11.1", host_names=(host,))
    settings = DiscoverySettings(presence, UUID(int=1))
    assert settings.names == (host,)
    (device,) = MdnsPublisher(settings).infos(host)[1:]
    assert device.server == f"{host}.local."
