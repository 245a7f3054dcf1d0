"""``spokeshare lab``: build, inspect, change and remove the lab.

The main CLI wires it in with::

    lab = add_lab_parser(subparsers, start_hub=..., start_edge=...)
    ...
    if args.command == "lab":
        return run_lab_command(args)

The hooks are stored on the parsed arguments (``args.lab_start_hub``,
``args.lab_start_edge``) and handed to :class:`~spokeshare.lab.topology.Lab`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from spokeshare.lab import services
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import DEFAULT_STATE_DIR, EdgeHook, HubHook, Lab
from spokeshare.lab.wire import LinkSettings

log = logging.getLogger(__name__)

_EPILOG = """\
hosts: hq (with --hq-nodes N: also hq-node1..N); per office NAME: NAME-edge, NAME-pc,
NAME-fs.
addresses: HQ services 198.19.0.1; office i: LAN 198.18.(10+i).0/24 (edge .1, fs .2,
pc .10), WAN 198.19.i.0/30 (hq .1, edge .2). See docs/lab.md.
"""


def _add_wan_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = LinkSettings()
    p.add_argument(
        "--rtt",
        type=float,
        metavar="MS",
        default=100.0 if defaults else None,
        help="round-trip time the WAN adds, ms" + (" (default 100)" if defaults else ""),
    )
    p.add_argument(
        "--jitter",
        type=float,
        metavar="MS",
        default=d.jitter_ms if defaults else None,
        help="jitter per direction (uniform +-MS), ms; never reorders",
    )
    p.add_argument(
        "--loss",
        type=float,
        metavar="PCT",
        default=d.loss_pct if defaults else None,
        help="random frame loss per direction, percent",
    )
    p.add_argument(
        "--rate-mbit",
        type=float,
        metavar="N",
        default=d.rate_mbit if defaults else None,
        help="bottleneck rate per direction, Mbit/s (0 = unlimited)",
    )


def add_lab_parser(
    subparsers: Any,
    start_hub: HubHook | None = None,
    start_edge: EdgeHook | None = None,
) -> argparse.ArgumentParser:
    """Add ``lab`` with its subcommands to ``subparsers``; returns the ``lab`` parser."""
    lab = subparsers.add_parser(
        "lab",
        help="HQ and branch offices as network namespaces, with a real WAN between them",
        description="Build and drive the lab: network namespaces as hosts, real Samba and "
        "CUPS, a user-space WAN emulator with delay, jitter, loss and rate. Needs root.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lab.set_defaults(lab_start_hub=start_hub, lab_start_edge=start_edge)
    lab.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the lab keeps its state (default {DEFAULT_STATE_DIR})",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", help="build the lab and start everything (removes a stale lab)")
    up.add_argument(
        "--offices", default="nyc,sf", help="comma-separated office names (default nyc,sf)"
    )
    _add_wan_options(up, defaults=True)
    up.add_argument(
        "--direct-route",
        action="store_true",
        help="also route office LANs to HQ through the edge (for baselines)",
    )

    up.add_argument(
        "--hq-nodes",
        type=int,
        default=1,
        metavar="N",
        help="HQ's Samba on N hosts as a CTDB cluster (hq-node1..N, public addresses "
        "198.18.1.101..; default 1: one HQ host)",
    )

    sub.add_parser("down", help="remove the lab: processes, namespaces, links, files")

    status = sub.add_parser("status", help="what is up, processes, WAN counters")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    ex = sub.add_parser("exec", help="run a command in a lab host: lab exec HOST -- CMD ...")
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")

    wan = sub.add_parser("wan", help="change an office's WAN link while it runs")
    wan.add_argument("office")
    _add_wan_options(wan, defaults=False)
    state = wan.add_mutually_exclusive_group()
    state.add_argument(
        "--down",
        dest="up",
        action="store_false",
        default=None,
        help="cut the link (frames in flight are lost)",
    )
    state.add_argument("--up", dest="up", action="store_true", help="restore the link")
    return lab  # type: ignore[no-any-return]


def _progress(step: str, elapsed: float) -> None:
    print(f"[{elapsed:6.1f} s] {step}", flush=True)


def run_lab_command(args: argparse.Namespace) -> int:
    """Carry out a parsed ``lab`` command; returns the exit status."""
    try:
        return _run(args)
    except LabError as exc:
        print(f"spokeshare lab: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"spokeshare lab: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    cmd = args.lab_command
    if cmd == "up":
        settings = LinkSettings(
            rtt_ms=args.rtt, jitter_ms=args.jitter, loss_pct=args.loss, rate_mbit=args.rate_mbit
        )
        offices = [o.strip() for o in args.offices.split(",") if o.strip()]
        lab = Lab(
            state_dir, offices, settings,
            direct_route=args.direct_route, hq_nodes=args.hq_nodes,
            start_hub=args.lab_start_hub, start_edge=args.lab_start_edge,
        )  # fmt: skip
        lab.up(_progress)
        _print_built(lab)
        return 0
    if cmd == "down":
        try:
            lab = Lab.existing(state_dir)
        except LabError:
            print("no lab recorded; nothing to do")
            return 0
        for line in lab.down():
            print(line)
        return 0
    lab = Lab.existing(state_dir)
    if cmd == "status":
        status = lab.status()
        if args.json:
            json.dump(status, sys.stdout, indent=2)
            print()
        else:
            _print_status(status)
        return 0
    if cmd == "exec":
        argv = list(args.argv)
        if argv and argv[0] == "--":
            argv = argv[1:]
        if not argv:
            raise ValueError("lab exec HOST -- CMD ...: no command given")
        return lab.exec(args.host, argv).returncode
    if cmd == "wan":
        changes = {
            k: v
            for k, v in (
                ("rtt_ms", args.rtt), ("jitter_ms", args.jitter), ("loss_pct", args.loss),
                ("rate_mbit", args.rate_mbit), ("up", args.up),
            )
            if v is not None
        }  # fmt: skip
        settings = lab.wan(args.office, **changes)
        print(f"{args.office}: {_describe(settings)}")
        return 0
    raise ValueError(f"unknown lab command {cmd!r}")


def _describe(s: LinkSettings) -> str:
    rate = f"{s.rate_mbit:g} Mbit/s" if s.rate_mbit else "unlimited"
    state = "up" if s.up else "DOWN"
    return (
        f"{state}, rtt {s.rtt_ms:g} ms, jitter {s.jitter_ms:g} ms, "
        f"loss {s.loss_pct:g} %, rate {rate}"
    )


def _print_built(lab: Lab) -> None:
    print(f"lab up in {lab.state_dir}; WAN: {_describe(lab.wan_settings)}")
    smbd = "smbd (share, alice), " if lab.cluster is None else ""
    print(
        f"  hq          {lab.hub_address:<16} {smbd}cupsd (shared: "
        f"{', '.join(services.SHARED_PRINTERS)}; "
        f"not shared: {', '.join(services.UNSHARED_PRINTERS)})"
    )
    if lab.cluster is not None:
        for n in lab.cluster.node_plans:
            print(
                f"  {n.host:<11} {n.lan_ip:<16} ctdbd + smbd (clustering), private {n.private_ip}"
            )
        print(
            f"  public addresses {', '.join(n.public_ip for n in lab.cluster.node_plans)}: "
            "CTDB places them on the nodes (spokeshare lab exec hq-node1 -- ctdb ip)"
        )
        print(f"  hub's smb service: {', '.join(lab.smb_backends)}")
    for o in lab.offices:
        print(f"  {o.edge:<11} {o.edge_ip:<16} WAN {o.wan_edge_ip} <-> hq {o.wan_hq_ip}")
        print(f"  {o.fs:<11} {o.fs_ip:<16} {o.fs_netbios_name}, local master browser of ACME")
        print(f"  {o.pc:<11} {o.pc_ip:<16} client")
    where = "" if lab.state_dir == DEFAULT_STATE_DIR else f" --state-dir {lab.state_dir}"
    print(f"look around: spokeshare lab{where} exec nyc-pc -- smbclient -L FS-NYC -N")
    print(f"tear down:   spokeshare lab{where} down")


def _print_status(status: dict[str, Any]) -> None:
    print(f"state dir {status['state_dir']}: {'up' if status['up'] else 'down'}")
    print("hosts:")
    for host, present in status["hosts"].items():
        print(f"  {host:<12} {'present' if present else 'MISSING'}")
    print("processes:")
    for p in status["processes"]:
        print(f"  {p['what']:<20} pid {p['pid']:<8} {'alive' if p['alive'] else 'DEAD'}")
    print("WAN links:")
    for office, w in status["wan"].items():
        if not w.get("ok"):
            print(f"  {office:<8} unreachable: {w.get('error')}")
            continue
        s = LinkSettings.from_dict(w["settings"])
        up_, down_ = w["b_to_a"], w["a_to_b"]  # a = hq end, b = edge end
        print(f"  {office:<8} {_describe(s)}")
        for label, d in (("office->hq", up_), ("hq->office", down_)):
            print(
                f"    {label}: {d['delivered']} frames / {d['delivered_bytes']} B delivered, "
                f"lost {d['lost']}, queue drops {d['queue_full']}, down {d['down']}"
            )


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m spokeshare.lab.cli``), without hub/edge hooks."""
    parser = argparse.ArgumentParser(prog="spokeshare")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_lab_command(args)


if __name__ == "__main__":
    sys.exit(main())
