"""spokeshare itself in the lab: the deployment, the hub at HQ, an edge per office.

These are the hooks :class:`~spokeshare.lab.topology.Lab` calls once HQ's services and
the WAN links are up. They use the real CLI (``spokeshare init``, ``office add``,
``hub``, ``edge``) as an operator would, in the lab's hosts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from spokeshare import enrollment
from spokeshare.lab import services
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import LAN_IFNAME, Lab

HUB_PORT = 7443
HUB_NAME = "hub.lab.spokeshare"
WORKGROUP = "ACME"
VIRTUAL_NAME = "GLOBAL-NFS"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spokeshare", *args]


def hub_status(lab: Lab) -> dict[str, object]:
    try:
        data = json.loads((lab.host_dir("hq") / "hub-state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fresh_hub_status(lab: Lab, timeout: float = 10.0) -> dict[str, object]:
    """The hub's ``status.json`` as first written after this call (the hub rewrites it
    once a second): it holds every count of what happened before the call."""
    since = time.time()
    deadline = time.monotonic() + timeout
    while True:
        status = hub_status(lab)
        written = status.get("time")
        if isinstance(written, int | float) and written > since:
            return status
        if time.monotonic() > deadline:
            raise LabError(f"the hub wrote no status file in {timeout:.0f} s")
        time.sleep(0.1)


def office_counts(status: dict[str, object], office: str, field: str) -> dict[str, int]:
    """One per-key counter of an office in a hub snapshot (``refused``, ``ipp_refused``,
    ``streams_ended``...: spokeshare.stats.OfficeStatistics), {} when absent."""
    offices = status.get("offices")
    one = offices.get(office) if isinstance(offices, dict) else None
    table = one.get(field) if isinstance(one, dict) else None
    if not isinstance(table, dict):
        return {}
    return {str(k): v for k, v in table.items() if isinstance(v, int)}


def streams_ended(lab: Lab, office: str, since: float) -> dict[str, int] | None:
    """The office's streams ended at the hub so far, by result (``streams_ended``), once
    a status file written after ``since`` (unix seconds) shows none of its streams
    running; None until then. A stream that reached the hub before ``since`` has then
    ended and been logged."""
    status = hub_status(lab)
    written = status.get("time")
    offices = status.get("offices")
    one = offices.get(office) if isinstance(offices, dict) else None
    if not isinstance(written, int | float) or written <= since or not isinstance(one, dict):
        return None
    if one.get("streams") != 0:
        return None
    return office_counts(status, office, "streams_ended")


def edge_status(lab: Lab, office: str, name: str = "lan-status.json") -> dict[str, object]:
    """The office edge's ``lan-status.json`` (EdgeDaemon._write_status), or another
    file of its state directory (``statistics.json``), {} if unreadable."""
    path = lab.host_dir(lab.office(office).edge) / "state" / name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def names_held(lab: Lab, office: str, protocol: str) -> dict[str, str]:
    """Name -> state for one LAN protocol of the office's edge (EdgeDaemon.names_status)."""
    names = edge_status(lab, office).get("names", {})
    held = names.get(protocol, {}) if isinstance(names, dict) else {}
    return {str(k): str(v) for k, v in held.items()} if isinstance(held, dict) else {}


def office_connected(lab: Lab, office: str) -> bool:
    offices = hub_status(lab).get("offices", {})
    return isinstance(offices, dict) and bool(offices.get(office, {}).get("connected"))


def start_hub(
    lab: Lab,
    extra_services: dict[str, str] | None = None,
    office_services: dict[str, list[str]] | None = None,
    lpd_reserved_port: bool = False,
    hub_settings: dict[str, str] | None = None,
) -> int:
    """Create the deployment (CA, hub identity, a bundle per office) and start the hub.

    The hub's services are HQ's smbd (smb), cupsd (ipp), cups-lpd (lpd) and the raw
    printer (raw); ``extra_services`` adds more (name -> HOST:PORT). Every office may
    use all of them unless ``office_services`` lists its own (``office add --services``).
    ``lpd_reserved_port`` sets ``reserved_source_port`` on the lpd service, as for an
    LPD server that wants RFC 1179 source ports (cups-lpd accepts either).
    ``hub_settings`` adds string keys to ``[hub]`` (e.g. status_listen, status_token).
    """
    deploy = lab.deploy_dir
    hq = lab.hub_address
    enrollment.init(
        deploy,
        HUB_NAME,
        [f"{hq}:{HUB_PORT}"],
        {
            # HQ's smbd, or every CTDB public address of the cluster, in order: the
            # hub skips one that refuses or times out (spokeshare.tunnel.backends).
            "smb": ",".join(lab.smb_backends),
            "ipp": f"{hq}:631",
            "lpd": f"{hq}:{services.LPD_PORT}",
            "raw": f"{hq}:{services.RAW_PORT}",
            **(extra_services or {}),
        },
        state_dir=lab.host_dir("hq") / "hub-state",
        listen=[f"{hq}:{HUB_PORT}"],
    )
    if lpd_reserved_port:
        hub_toml = deploy / "hub.toml"
        text = hub_toml.read_text()
        hub_toml.write_text(
            text.replace("[services.lpd]\n", "[services.lpd]\nreserved_source_port = true\n")
        )
    if hub_settings:
        hub_toml = deploy / "hub.toml"
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in hub_settings.items())
        hub_toml.write_text(hub_toml.read_text().replace("[hub]\n", "[hub]\n" + extra, 1))
    for plan in lab.offices:
        allowed = (office_services or {}).get(plan.name)
        enrollment.add_office(deploy, plan.name, allowed, bundle_path(lab, plan.name))
    pid = lab.spawn("hq", _cli("hub", "--dir", str(deploy)), "hub")
    services.wait_for("the hub", lambda: services.listening("hq", HUB_PORT, hq), timeout=30)
    return pid


def bundle_path(lab: Lab, office: str) -> Path:
    return lab.deploy_dir / f"{office}.bundle"


#: A virtual name as the lab configures it: (NAME, hub service, own LAN address or "").
NameSpec = tuple[str, str, str]


def edge_toml(
    lab: Lab,
    office: str,
    names: list[NameSpec] | None = None,
    wins_server: str = "",
    default_names: bool = False,
) -> str:
    """edge.toml for ``office``; ``default_names`` leaves ``[[names]]`` out, so the edge
    derives them from its bundle (GLOBAL-NFS only when the office may use smb)."""
    plan = lab.office(office)
    lines = [
        "# edge configuration written by the lab",
        "[edge]",
        f'bundle = "{bundle_path(lab, office)}"',
        f'state_dir = "{lab.host_dir(plan.edge) / "state"}"',
        "hub_dead_after = 6.0",
        "[lan]",
        # No `interface`: the edge finds the one holding `address`, as in the README.
        f'address = "{plan.edge_ip}"',
        f'workgroup = "{WORKGROUP}"',
    ]
    for name, service, address in [] if default_names else names or [(VIRTUAL_NAME, "smb", "")]:
        lines += [
            "[[names]]",
            f'name = "{name}"',
            f'service = "{service}"',
            f'comment = "HQ files via {office} edge"',
        ]
        if address:
            lines.append(f'address = "{address}"')
    lines += [
        "[pool]",
        "min_idle = 4",
        # The lab shortens the browse schedule (MS-BRWS starts at 1 minute) so that
        # a master browser lists the names within seconds, and withdraws names after
        # 10 s without the hub so fault tests need not wait long.
        "[netbios]",
        "announce_initial_interval = 2.0",
        "announce_max_interval = 60.0",
        f'wins_server = "{wins_server}"',
        "[discovery]",
        "withdraw_after = 10.0",
        "",
    ]
    return "\n".join(lines)


def start_edge(
    lab: Lab,
    office: str,
    names: list[NameSpec] | None = None,
    wins_server: str = "",
    printing_only: tuple[str, ...] = (),
) -> int:
    """Write the office's edge.toml and start its edge; return once the hub sees it
    and its names are claimed on the LAN.

    A name with its own address gets that address on the edge's LAN interface. An
    office in ``printing_only`` gets an edge.toml without names (its bundle has no smb,
    so it carries no file-server name) and is ready once connected.
    """
    plan = lab.office(office)
    conf = lab.host_dir(plan.edge) / "edge.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    bare = office in printing_only
    conf.write_text(edge_toml(lab, office, names, wins_server, default_names=bare))
    for _, _, address in names or []:
        if address:
            lab.exec(
                plan.edge, ["ip", "addr", "add", f"{address}/24", "dev", LAN_IFNAME], check=True
            )
    pid = lab.spawn(plan.edge, _cli("edge", "--config", str(conf)), f"edge {office}")
    log_file = lab.logs_dir / f"edge-{office}.log"
    wanted = [] if bare else [f"{n}<00>" for n, _, _ in names or [(VIRTUAL_NAME, "", "")]]

    def ready() -> bool:
        """Connected (the hub's status.json), started and every name's NetBIOS claim
        made (the edge's lan-status.json)."""
        if not (office_connected(lab, office) and edge_status(lab, office).get("up")):
            return False
        held = names_held(lab, office, "netbios")
        return all(held.get(w) == "claimed" for w in wanted)

    deadline = time.monotonic() + 30
    while not ready():
        if time.monotonic() > deadline:
            raise LabError(
                f"edge of {office} not connected with its names claimed within 30 s "
                f"(see {log_file})"
            )
        time.sleep(0.1)
    return pid
