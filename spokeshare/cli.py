"""The ``spokeshare`` command: enrollment at HQ, the hub and edge daemons, the lab."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import logging
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from spokeshare import __version__, bundle, enrollment, renewal
from spokeshare.config import HubConfig, load_edge, load_hub
from spokeshare.errors import ConfigError, EnrollmentError, SpokeshareError, UsageError
from spokeshare.stats import HubStatistics, OfficeStatistics

log = logging.getLogger("spokeshare")

# help2man turns this into the man page (debian/rules): a line "name:" followed by
# indented lines is a subsection; an indented "TAG  text" line (two spaces or more) an
# item of a list, its wrapped lines indented to the text's column; an indented "$ "
# line a command, set as is. Anything else is filled into a paragraph.
EPILOG = """\
files:
  /etc/spokeshare/           the deployment at HQ (CA, hub identity, hub.toml,
                             offices.json); at an office, edge.toml and the bundle
  /var/lib/spokeshare/hub/   the hub's state (status.json)
  /var/lib/spokeshare/edge/  the edge's state (lan-status.json)

ports:
  hub   7443/tcp from the offices (TLS 1.3, mutual)
  edge  on the office LAN only: 445/tcp 139/tcp 631/tcp 515/tcp 9100/tcp 5357/tcp,
        137/udp 138/udp 3702/udp 5353/udp 5355/udp (firewalld service spokeshare-edge)

quick start (as root; the README has each step):
  at HQ (office add writes nyc.bundle and prints the office's steps):
    $ spokeshare init --hub-name hq.example.com --address hq.example.com:7443
    $ spokeshare office add nyc
    $ systemctl enable --now spokeshare-hub
  at the office, with the bundle in /etc/spokeshare (owner spokeshare, mode 0600) and
  /etc/spokeshare/edge.toml naming it, the LAN interface and this box's address on it:
    $ systemctl enable --now spokeshare-edge
    $ spokeshare check
  or in the foreground:
    $ spokeshare edge --bundle nyc.bundle --lan-address 192.0.2.10
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run_daemon(
    make: Callable[[], Coroutine[Any, Any, Any]],
    stop: Callable[[], None],
    reload: Callable[[], object] | None = None,
) -> None:
    """Run ``make()`` on uvloop; SIGTERM and SIGINT call ``stop``, SIGHUP ``reload``."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload)
        await make()

    uvloop.run(main())


# -- enrollment ------------------------------------------------------------------------


def cmd_init(a: argparse.Namespace) -> int:
    services = {}
    for s in a.service or []:
        name, _, backend = s.partition("=")
        if not backend:
            raise ConfigError("--service", s, "expected NAME=HOST:PORT")
        services[name] = backend
    from spokeshare.config import parse_hostport
    from spokeshare.printing import ipp_relay

    if "ipp" in services:
        for where in services["ipp"].split(","):
            host, port = parse_hostport(where.strip(), "--service", "ipp")
            why = ipp_relay.loopback_reason(host, port)
            if why is not None:
                raise ConfigError("--service", "ipp", why)
    else:
        default = ipp_relay.default_backend()
        if default is None:
            raise ConfigError(
                "--service",
                "ipp",
                "this host has no LAN address for cupsd; give "
                "--service ipp=ADDRESS:631 (not loopback: see README, printing at HQ)",
            )
        services["ipp"] = default
    files = enrollment.init(
        Path(a.dir),
        a.hub_name,
        a.address,
        services,
        Path(a.state_dir) if a.state_dir else None,
        a.listen,
    )
    print(f"created deployment in {a.dir}: {', '.join(files)}")
    if Path(a.dir) == enrollment.DEFAULT_DIR and HUB_UNIT.exists():  # the Debian package's
        print("start the hub with: systemctl enable --now spokeshare-hub")
    else:
        print(f"start the hub with: spokeshare hub --dir {a.dir}")
    return 0


def cmd_office_add(a: argparse.Namespace) -> int:
    directory = Path(a.dir)
    name = a.name.lower()
    out = Path(a.out) if a.out else Path(f"{name}.bundle")
    services = [s for s in a.services.split(",") if s] if a.services else None
    rec = enrollment.add_office(
        directory, name, services, out, days=a.days, printers=_printers_arg(a.printers),
        ca_key=Path(a.ca_key) if a.ca_key else None,
    )  # fmt: skip
    print(
        f"office {rec.name} enrolled: services {', '.join(rec.services)}, "
        f"printers {_printers_text(rec.printers)}, "
        f"certificate valid until {rec.not_after:%Y-%m-%d}"
    )
    print(f"bundle written to {out} (mode 0600)")
    print(office_steps(out.name), end="")
    return 0


def office_steps(bundle_name: str) -> str:
    """What the office's admin does with the bundle ``bundle_name``, as the README's
    quick start says: install it under /etc/spokeshare, write edge.toml, enable the
    packaged unit, run the check; the foreground command as the alternative. Lines end
    in newlines."""
    path = f"/etc/spokeshare/{bundle_name}"
    return (
        "copy it to the office box; there, with the spokeshare package installed, as root\n"
        "(LAN-INTERFACE and LAN-IP: the office LAN's interface and this box's address on it):\n"
        "\n"
        f"install -o spokeshare -g spokeshare -m 0600 {bundle_name} {path}\n"
        "cat > /etc/spokeshare/edge.toml <<'EOF'\n"
        "[edge]\n"
        f'bundle = "{path}"\n'
        "\n"
        "[lan]\n"
        'interface = "LAN-INTERFACE"\n'
        'address = "LAN-IP"\n'
        "EOF\n"
        "systemctl enable --now spokeshare-edge\n"
        "spokeshare check                 # the bundle, the hub, the LAN, every advertised name\n"
        "\n"
        "or, without the package (a checkout), in the foreground:\n"
        f"spokeshare edge --bundle {path} --lan-address LAN-IP\n"
    )


def _printers_arg(value: str | None) -> list[str] | None:
    """``--printers a,b`` as a list; absent or ``all``: None (every printer HQ shares)."""
    if value is None or value.strip().lower() in ("all", "*"):
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def _printers_text(printers: tuple[str, ...] | None) -> str:
    if printers is None:
        return "all"
    return ",".join(printers) if printers else "none"


def cmd_office_set(a: argparse.Namespace) -> int:
    rec = enrollment.set_printers(Path(a.dir), a.name.lower(), _printers_arg(a.printers))
    print(
        f"office {rec.name} may use printers: {_printers_text(rec.printers)} "
        "(a running hub applies it within seconds)"
    )
    return 0


def _hub_status(directory: Path) -> HubStatistics | None:
    from spokeshare import hubstatus

    try:
        cfg = load_hub(directory / "hub.toml")
    except SpokeshareError:
        return None
    # This host's hub and every hub sharing the directory (docs/scale-out.md).
    return hubstatus.merge(hubstatus.read_deployment(directory, cfg.state_dir))


def _hubs_text(control_hub: str, tunnels: dict[str, int]) -> str:
    """``hub0*:3 hub1:2``: the office's tunnels per hub, ``*`` on its control channel's."""
    names = sorted(set(tunnels) | ({control_hub} if control_hub else set()))
    return " ".join(f"{n}{'*' if n == control_hub else ''}:{tunnels.get(n, 0)}" for n in names)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0.0, time.time() - ts)
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def cmd_office_list(a: argparse.Namespace) -> int:
    directory = Path(a.dir)
    offices = enrollment.load_registry(directory)
    now = dt.datetime.now(dt.UTC)
    status = _hub_status(directory)
    live = status is not None and time.time() - status.time < 10
    rows: list[dict[str, Any]] = []
    for name, rec in sorted(offices.items()):
        known = status.offices.get(name) if status is not None and live else None
        st = known if known is not None else OfficeStatistics()
        rows.append(
            {
                "office": name,
                "expires": rec.not_after.strftime("%Y-%m-%d"),
                "revoked": rec.revoked.isoformat() if rec.revoked else None,
                # the running hub's view (the edge's reports, its refusals), else the
                # registry's dates
                "renewal": "-"
                if rec.revoked
                else str(st.certificate.get("renew") or "")
                or renewal.registry_view(rec.not_before, rec.not_after, rec.renewed, now),
                "connected": st.connected,
                # the edge's spokeshare version, from its heartbeats ("" when unknown)
                "version": st.version,
                "last_seen": st.last_seen,
                "rtt_ms": st.rtt_ms,
                "clients": st.clients,
                "services": list(rec.services),
                "printers": list(rec.printers) if rec.printers is not None else None,
                # several hubs: where the control channel is and the tunnels per hub
                "control_hub": st.control_hub or None,
                "hub_tunnels": dict(sorted(st.hub_tunnels.items())),
            }
        )
    hubs = sorted(set(status.hubs)) if status is not None and live else []
    if a.json:
        print(json.dumps({"hub_running": live, "hubs": hubs, "offices": rows}, indent=2))
        return 0
    if not live:
        print("(hub not running or status stale: connection columns unknown)")
    elif len(hubs) > 1:
        print(f"hubs reporting: {', '.join(hubs)} (HUBS: tunnels per hub, * control channel)")
    fmt = "{:<16} {:<11} {:<8} {:<10} {:<10} {:>8} {:>8}  {:<18} {:<34} {:<16} {}"
    print(
        fmt.format(
            "OFFICE",
            "EXPIRES",
            "REVOKED",
            "CONNECTED",
            "LAST SEEN",
            "RTT ms",
            "CLIENTS",
            "VERSION",
            "RENEWAL",
            "PRINTERS",
            "HUBS",
        )
    )
    for r in rows:
        rtt = f"{r['rtt_ms']:.1f}" if r["rtt_ms"] is not None else "-"
        print(
            fmt.format(
                r["office"],
                r["expires"],
                "yes" if r["revoked"] else "no",
                "yes" if r["connected"] else "no",
                _ago(r["last_seen"]),
                rtt,
                r["clients"],
                r["version"] or "-",
                r["renewal"],
                _printers_text(tuple(r["printers"]) if r["printers"] is not None else None),
                _hubs_text(r["control_hub"] or "", r["hub_tunnels"]) or "-",
            )
        )
    return 0


def cmd_office_renew(a: argparse.Namespace) -> int:
    name = a.name.lower()
    out = Path(a.out) if a.out else Path(f"{name}.bundle")
    rec = enrollment.renew_office(
        Path(a.dir), name, out, days=a.days, cut_previous=a.cut_previous,
        ca_key=Path(a.ca_key) if a.ca_key else None,
    )  # fmt: skip
    print(f"office {rec.name} renewed: new certificate valid until {rec.not_after:%Y-%m-%d}")
    if a.cut_previous:
        print("the previous certificate is refused from now on; install the new bundle now:")
    else:
        print("the previous certificate keeps working until you install the new bundle:")
    print(f"  copy {out} to the office box, then restart its edge")
    return 0


def cmd_office_revoke(a: argparse.Namespace) -> int:
    rec = enrollment.revoke_office(Path(a.dir), a.name)
    print(f"office {rec.name} revoked; a running hub cuts its tunnels within seconds")
    return 0


# -- daemons ---------------------------------------------------------------------------


def cmd_hub(a: argparse.Namespace) -> int:
    from spokeshare.tunnel.hub import Hub

    directory = Path(a.dir)
    config = Path(a.config) if a.config else directory / "hub.toml"
    cfg = _load_hub_checked(config)
    if cfg.workers > 1 and a.worker is None:
        from spokeshare import supervisor

        return supervisor.run_workers(
            cfg.workers,
            [
                sys.executable,
                "-m",
                "spokeshare",
                "hub",
                "--dir",
                str(directory),
                "--config",
                str(config),
            ],
        )
    hub = Hub(cfg, directory, worker=a.worker)
    # SIGHUP: hub.toml again, checked as at start (Hub.reload keeps the old one if bad).
    _run_daemon(hub.serve_forever, hub.stop, lambda: hub.reload(lambda: _load_hub_checked(config)))
    return 0


def _load_hub_checked(config: Path) -> HubConfig:
    """hub.toml, plus what only a running host can tell: the ipp backend must not be
    this host's loopback (printing.ipp_relay). Raises ConfigError."""
    from spokeshare.printing import ipp_relay

    cfg = load_hub(config)
    ipp = cfg.services.get(ipp_relay.SERVICE)
    for b in ipp.backends if ipp is not None else ():
        why = ipp_relay.resolves_loopback(b.host, b.port)
        if why is not None:
            key = "backends" if ipp is not None and len(ipp.backends) > 1 else "backend"
            raise ConfigError(str(config), f"services.ipp.{key}", why)
    return cfg


def cmd_edge(a: argparse.Namespace) -> int:
    from spokeshare.edge_daemon import EdgeDaemon

    ports: dict[str, int] = {}
    for p in a.port or []:
        svc, _, num = p.partition("=")
        if not num.isdigit():
            raise ConfigError("--port", p, "expected SERVICE=PORT")
        ports[svc] = int(num)
    overrides: dict[str, Any] = {"ports": ports}
    if a.bundle:
        overrides["bundle"] = a.bundle
    if a.lan_address:
        overrides["lan_address"] = a.lan_address
    cfg = load_edge(Path(a.config) if a.config else None, overrides)
    b = bundle.read(cfg.bundle)
    if b.cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise EnrollmentError(
            f"bundle {cfg.bundle}: certificate expired "
            f"{b.cert.not_valid_after_utc:%Y-%m-%d}; ask HQ for a new one"
        )
    daemon = EdgeDaemon(cfg, b)
    _run_daemon(daemon.run, daemon.stop)
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from spokeshare import check

    directory = Path(a.dir)
    edge_default = directory / "edge.toml"
    role = "hub" if a.hub else "edge" if a.edge else None
    if role is None:
        if a.config:
            role = "hub" if Path(a.config).name == "hub.toml" else "edge"
        elif (directory / "hub.toml").is_file():
            role = "hub"
        elif edge_default.is_file():
            role = "edge"
        else:
            raise ConfigError(
                str(directory), "check", "neither hub.toml nor edge.toml: give --hub or --edge"
            )
    now = dt.datetime.now(dt.UTC)
    if role == "hub":
        hub_toml = Path(a.config) if a.config else directory / "hub.toml"
        findings = check.check_hub(directory, hub_toml, Path(a.smb_conf), now, Path(a.cupsd_conf))
    else:
        edge_toml = Path(a.config) if a.config else edge_default if edge_default.is_file() else None
        findings = check.check_edge(edge_toml, Path(a.bundle) if a.bundle else None, now)
    if a.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        for f in findings:
            print(f.line())
    return check.exit_status(findings)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, fit for help2man too (the man page is made from --help): a word is
    never broken at a hyphen (help2man joins a line ending in ``-`` to the next without
    it: ``--cut-`` and ``previous`` would read ``--cutprevious``), and a paragraph of a
    description or epilog with an indented line (a list, commands) is kept as written;
    the others are filled."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(line[:1].isspace() for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(para.split()),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
        return "\n\n".join(out)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter` unless told otherwise; its
    subcommands' parsers are of this class too (argparse makes them of the parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(optional: str | None = None) -> argparse.ArgumentParser:
    """The ``spokeshare`` parser; ``optional`` names the one lab/demo/bench command to
    build in full (importing its module), the others are stand-ins (see :func:`parse_args`).
    """
    p = _Parser(
        prog="spokeshare",
        description="HQ's Samba and CUPS on every branch-office LAN, over mutual TLS 1.3.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"spokeshare {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = str(enrollment.DEFAULT_DIR)

    s = sub.add_parser("init", help="create the deployment at HQ: CA, hub identity, hub.toml")
    s.add_argument("--dir", default=d, help=f"deployment directory (default {d})")
    s.add_argument("--hub-name", required=True, help="the hub's DNS name (in its certificate)")
    s.add_argument(
        "--address",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="where offices reach the hub (repeatable, in order of preference)",
    )
    s.add_argument(
        "--service",
        action="append",
        metavar="NAME=HOST:PORT[,HOST:PORT...]",
        help="a backend service (default smb=127.0.0.1:445, ipp=THIS-HOST-LAN-ADDRESS:631; "
        "ipp is never loopback: cupsd would treat every office as local); several "
        "comma-separated backends are tried in order (e.g. a CTDB cluster's public "
        "addresses)",
    )
    s.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="hub listen address (default 0.0.0.0 on each --address port)",
    )
    s.add_argument("--state-dir", help="hub state directory (default /var/lib/spokeshare/hub)")
    s.set_defaults(func=cmd_init)

    o = sub.add_parser("office", help="enrol, list and revoke offices")
    osub = o.add_subparsers(dest="office_command", required=True, metavar="ACTION")
    dir_help = f"deployment directory (default {d})"
    s = osub.add_parser("add", help="enrol an office; writes its bundle")
    s.add_argument("name", help="office name (a DNS label, e.g. nyc)")
    s.add_argument("--dir", default=d, help=dir_help)
    s.add_argument("--services", help="comma-separated services it may use (default: all)")
    s.add_argument("--out", help="bundle file (default NAME.bundle)")
    s.add_argument(
        "--days", type=int, default=825, help="certificate lifetime in days (default 825)"
    )
    s.add_argument(
        "--printers",
        metavar="A,B",
        help="HQ printers (CUPS queue names) it may use, enforced at the hub "
        "(default: all printers HQ's CUPS shares)",
    )
    s.add_argument(
        "--ca-key",
        metavar="PATH",
        help="the CA key, when it is not DIR/ca.key (several hubs: kept on the CA host "
        "only, outside the shared directory)",
    )
    s.set_defaults(func=cmd_office_add)
    s = osub.add_parser("set", help="change what an office may use (its printers)")
    s.add_argument("name")
    s.add_argument("--dir", default=d, help=dir_help)
    s.add_argument(
        "--printers",
        metavar="A,B|all",
        required=True,
        help="HQ printers it may use; 'all' for every printer HQ shares",
    )
    s.set_defaults(func=cmd_office_set)
    s = osub.add_parser("list", help="every office: expiry, revoked, connected, RTT, clients")
    s.add_argument("--dir", default=d, help=dir_help)
    s.add_argument(
        "--json",
        action="store_true",
        help="the same as JSON, for scripts: hub_running, hubs, and per office its "
        "expiry, renewal, connected, version, last_seen, rtt_ms, clients, services, "
        "printers and tunnels per hub",
    )
    s.set_defaults(func=cmd_office_list)
    s = osub.add_parser(
        "renew",
        help="issue an office a new certificate and bundle (by hand: offices renew themselves)",
        description="Issue an office a new certificate and bundle, by hand. Renewal is "
        "automatic: a running edge renews its certificate over its own tunnel once two "
        "thirds of its lifetime have passed ([edge] renew_at), without a visit or a "
        "restart. This is the manual path: after a certificate expired, for a bundle "
        "that leaked (--cut-previous), or when an office must be given new hub "
        "addresses. Copy the new bundle to the office box, then restart its edge.",
    )
    s.add_argument("name", help="office name")
    s.add_argument("--dir", default=d, help=dir_help)
    s.add_argument("--out", help="bundle file (default NAME.bundle)")
    s.add_argument(
        "--days", type=int, default=825, help="certificate lifetime in days (default 825)"
    )
    s.add_argument(
        "--cut-previous",
        action="store_true",
        help="refuse the old certificate at once (a leaked bundle)",
    )
    s.add_argument(
        "--ca-key",
        metavar="PATH",
        help="the CA key, when it is not DIR/ca.key (several hubs: kept on the CA host "
        "only, outside the shared directory)",
    )
    s.set_defaults(func=cmd_office_renew)
    s = osub.add_parser("revoke", help="cut an office off, live tunnels included")
    s.add_argument("name")
    s.add_argument("--dir", default=d, help=dir_help)
    s.set_defaults(func=cmd_office_revoke)

    s = sub.add_parser(
        "hub",
        help="run the hub (foreground)",
        description="Run the hub in the foreground (the spokeshare-hub unit runs it). "
        "SIGHUP reloads hub.toml (systemctl reload spokeshare-hub): services, backends, "
        "limits; running streams stay, and a file with an error is refused with the "
        "reason while the running configuration is kept. listen, workers, state_dir, "
        "status_listen, status_token and check_backends need a restart. Exit status 2: "
        "a configuration error (systemd does not restart it).",
    )
    s.add_argument("--dir", default=d, help=f"the deployment (default {d})")
    s.add_argument("--config", help="hub.toml (default DIR/hub.toml)")
    s.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    s.set_defaults(func=cmd_hub)

    s = sub.add_parser("edge", help="run an office edge (foreground)")
    s.add_argument("--bundle", help="the office bundle (default from edge.toml)")
    s.add_argument("--config", help="edge.toml")
    s.add_argument("--lan-address", help="LAN IPv4 address to serve on")
    s.add_argument(
        "--port",
        action="append",
        metavar="SERVICE=PORT",
        help="LAN port for a service (0 turns it off)",
    )
    s.set_defaults(func=cmd_edge)

    s = sub.add_parser(
        "check",
        help="what is wrong at HQ or at an office, one line per finding with the fix; "
        "exit 0 fine, 1 warnings, 2 errors",
        description="What is wrong at HQ or at an office, before a user finds out: one "
        "line per finding, LEVEL CODE: what was found -> the fix. At HQ: certificates, "
        "the listen address, every backend, CUPS as an edge reaches it, smbd's "
        "settings, every office's renewal. At an office: the bundle (its mode, and its "
        "owner for the user the edge runs as), every hub (reach, RTT, TLS, its "
        "certificate, clock), the LAN address, other daemons on the LAN ports, every "
        "advertised name. Run it as root (or as the spokeshare user). The role comes "
        "from the configuration present (DIR/hub.toml, else DIR/edge.toml).",
        epilog="exit status:\n"
        "  0  every finding ok (or info)\n"
        "  1  a warning at least\n"
        "  2  an error at least\n",
    )
    role = s.add_mutually_exclusive_group()
    role.add_argument(
        "--hub", action="store_true", help="check HQ (default when DIR/hub.toml exists)"
    )
    role.add_argument("--edge", action="store_true", help="check this office's edge")
    s.add_argument("--dir", default=d, help=f"deployment or edge directory (default {d})")
    s.add_argument("--config", help="hub.toml or edge.toml (default DIR/hub.toml or DIR/edge.toml)")
    s.add_argument("--bundle", help="the office bundle (default from edge.toml)")
    s.add_argument(
        "--smb-conf",
        default="/etc/samba/smb.conf",
        help="HQ's smb.conf, read with testparm (default /etc/samba/smb.conf)",
    )
    s.add_argument(
        "--cupsd-conf",
        default="/etc/cups/cupsd.conf",
        help="HQ's cupsd.conf, read for its default policy (default /etc/cups/cupsd.conf)",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="the findings as a JSON list of {level, code, message, fix}, for scripts "
        "(the exit status as without it)",
    )
    s.set_defaults(func=cmd_check)

    missing = []
    for name, help_text in OPTIONAL_COMMANDS.items():
        if name == optional:
            _add_optional(sub, name)
        elif optional_available(name):
            # A stand-in: its name and help line for the command list; the arguments
            # are parsed again by the real parser once the command is known.
            sub.add_parser(name, help=help_text, add_help=False)
        else:
            # Not runnable here (the installed package): left out of --help and so of
            # the man page; running it still says what it needs (parse_args).
            sub.add_parser(name, add_help=False)
            missing.append(name)
    if missing:
        p.epilog = (p.epilog or "") + MISSING_NOTE.format(commands=", ".join(missing))
    return p


# Subcommands whose code lives outside the daemon: the lab, the demo, the benchmarks.
# Their modules (and what they need: pyroute2, matplotlib, the ``lab`` extra) are
# imported only when that subcommand runs, so ``spokeshare hub`` and ``spokeshare
# edge`` load the daemon alone. Each help line is the one the real parser declares
# (tests/test_cli.py compares them).
OPTIONAL_COMMANDS = {
    "lab": "HQ and branch offices as network namespaces, with a real WAN between them",
    "demo": "build the lab (HQ, nyc, sf at 100 ms) and play what spokeshare is for",
    "bench": "benchmarks (writes docs/benchmarks.md)",
}
# What the ``lab`` extra in pyproject.toml installs for them (top-level module names).
LAB_EXTRA = ("pyroute2", "matplotlib")
#: The hub's systemd unit as the Debian package installs it.
HUB_UNIT = Path("/lib/systemd/system/spokeshare-hub.service")
# The end of --help where optional commands cannot run (spokeshare --help, and the man
# page made from it, list only the commands this installation runs).
MISSING_NOTE = """
not in this installation:
  {commands}: the test lab, the demo and the benchmarks run from a development
  checkout of spokeshare (./run setup), not from the Debian package
"""


def _importable(module: str) -> bool:
    """True when top-level ``module`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def optional_available(name: str) -> bool:
    """True when the optional command ``name`` can run here: the ``lab`` extra is
    importable and, for ``bench``, the checkout's bench/ is beside this package."""
    if not all(_importable(m) for m in LAB_EXTRA):
        return False
    return name != "bench" or (_checkout_root() / "bench" / "wan.py").is_file()


def _checkout_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _add_optional(sub: Any, name: str) -> None:
    """Add the real parser of the optional subcommand ``name``, importing its module."""
    if name == "lab":
        from spokeshare.lab import cli as lab_cli
        from spokeshare.lab import spokes

        lab = lab_cli.add_lab_parser(sub, start_hub=spokes.start_hub, start_edge=spokes.start_edge)
        lab.set_defaults(func=lab_cli.run_lab_command)
    elif name == "demo":
        from spokeshare import demo

        demo.add_demo_parser(sub)
    elif name == "bench":
        # The benchmarks are the checkout's bench/ package, not part of the installed
        # one: found beside this package (an editable install, ``./run setup``).
        root = _checkout_root()
        if not (root / "bench" / "wan.py").is_file():
            raise ModuleNotFoundError(f"no bench/ beside {root / 'spokeshare'}", name="bench")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from bench import wan

        wan.add_bench_parser(sub)
    else:
        raise UsageError(f"no optional subcommand {name!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; a lab, demo or bench command imports its module here.

    Exits (``SystemExit``) on ``--help``, ``--version`` and usage errors, as argparse does.
    """
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.command in OPTIONAL_COMMANDS:
        try:
            parser = build_parser(first.command)
        except ModuleNotFoundError as exc:
            if exc.name == "bench":
                parser.error(
                    "bench runs from a source checkout installed with pip install -e "
                    f"(./run setup): {exc}"
                )
            if exc.name is None or exc.name.partition(".")[0] not in LAB_EXTRA:
                raise
            parser.error(
                f"{first.command} needs the lab extra (pip install 'spokeshare[lab]'): "
                f"no module {exc.name}"
            )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    _setup_logging(a.verbose)
    try:
        return int(a.func(a) or 0)
    except (ConfigError, EnrollmentError) as exc:
        print(f"spokeshare: {exc}", file=sys.stderr)
        return 2
    except SpokeshareError as exc:
        print(f"spokeshare: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"spokeshare: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
