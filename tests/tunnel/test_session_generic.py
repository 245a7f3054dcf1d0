"""The edge's NetBIOS session listener and generic called names, on loopback.

Several names on one address: ``*SMBSERVER<20>`` / ``*SMBSERV<20>`` are accepted when
they all stand for the same hub service, refused (0x82) when they stand for
different ones (which service would it be?). The requests are raw bytes as a PC sends
them; no hub is needed, the edge answers the session request itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from spokeshare import bundle as bundle_file
from spokeshare.config import NetbiosConfig, VirtualName
from spokeshare.tunnel.edge import Edge
from tests.helpers import edge_config, free_port, make_deployment


def _nb_name(name: str, suffix: int) -> bytes:
    raw = name.upper().ljust(15).encode() + bytes([suffix])
    return b"\x20" + bytes(b for c in raw for b in (0x41 + (c >> 4), 0x41 + (c & 0xF))) + b"\0"


def _request(called: str) -> bytes:
    return b"\x81\x00\x00\x44" + _nb_name(called, 0x20) + _nb_name("NYC-PC", 0x00)


async def _answers(edge: Edge, port: int, called: list[str]) -> list[str]:
    await edge.listen()
    out = []
    try:
        for name in called:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request(name))
            out.append((await reader.read(64)).hex())
            writer.close()
    finally:
        for s in edge.servers:
            s.close()
    return out


def _edge(tmp_path: Path, services: list[str]) -> tuple[Edge, int]:
    dep = make_deployment(tmp_path, {"smb": free_port(), "eng": free_port()})
    bundle = dep.add_office("sf", ["smb", "eng"])
    port = free_port()
    cfg = edge_config(bundle, {})
    cfg = dataclasses.replace(
        cfg,
        names=tuple(VirtualName(f"GLOBAL-{i}", svc, port=0) for i, svc in enumerate(services)),
        netbios=NetbiosConfig(session_port=port),
    )
    return Edge(cfg, bundle_file.read(bundle)), port


def test_generic_names_accepted_when_every_name_is_one_service(tmp_path: Path) -> None:
    edge, port = _edge(tmp_path, ["smb", "smb"])
    got = asyncio.run(_answers(edge, port, ["*SMBSERVER", "*SMBSERV", "GLOBAL-1", "ELSEWHERE"]))
    assert got == ["82000000", "82000000", "82000000", "8300000182"]


def test_generic_names_refused_when_names_stand_for_different_services(tmp_path: Path) -> None:
    edge, port = _edge(tmp_path, ["smb", "eng"])
    got = asyncio.run(_answers(edge, port, ["*SMBSERVER", "*SMBSERV", "GLOBAL-1"]))
    assert got == ["8300000182", "8300000182", "82000000"]
