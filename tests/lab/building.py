"""A lab brought up in its own state directory for one test module, and taken down after;
an office PC's own avahi-daemon started in it, and stopped after.

Each test module keeps its own settings (offices, WAN link, hub and edge hooks); only the
bring-up and clean-up they all share lives here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.topology import LAN_IFNAME, EdgeHook, HubHook, Lab
from spokeshare.lab.wire import LinkSettings


@contextlib.contextmanager
def reachable_dir(prefix: str) -> Iterator[Path]:
    """A fresh ``prefix``-named temporary dir, mode 0755 (pytest's are 0700, and smbd's
    guest, cupsd's filters and the daemons' own users must reach what is under it);
    removed on exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_lab(
    prefix: str,
    offices: Sequence[str],
    wan: LinkSettings,
    *,
    start_hub: HubHook,
    start_edge: EdgeHook,
    hq_nodes: int = 1,
) -> Iterator[Lab]:
    """A :class:`Lab` of ``offices`` over ``wan`` (HQ's Samba on ``hq_nodes`` CTDB
    nodes when more than 1), up, in a fresh ``prefix``-named dir.

    The dir is 0755 (smbd's users and cupsd's filters, user lp, must reach it). On exit,
    also when the body raised, the lab is taken down and the dir removed; with
    ``SPOKESHARE_LAB_LOGS`` set to a directory, the lab's logs are copied there first
    (one sub-directory per lab), for reading after a failed run.
    """
    with reachable_dir(prefix) as path:
        lab = Lab(path, offices, wan, start_hub=start_hub, start_edge=start_edge, hq_nodes=hq_nodes)
        try:
            lab.up()
            yield lab
        finally:
            lab.down(keep_logs=True)
            keep = os.environ.get("SPOKESHARE_LAB_LOGS")
            if keep and lab.logs_dir.is_dir():
                shutil.copytree(lab.logs_dir, Path(keep) / path.name, dirs_exist_ok=True)


@contextlib.contextmanager
def running_avahi(lab: Lab, pc: str) -> Iterator[AvahiHost]:
    """``pc``'s own avahi-daemon on its LAN interface, host name ``pc``, state under the
    PC's lab dir; on exit its processes are stopped by PID, newest first (lab.down would
    too)."""
    host = AvahiHost(pc, LAN_IFNAME, pc, lab.host_dir(pc) / "avahi")
    pids = host.start(lab.registry, lab.logs_dir)
    try:
        yield host
    finally:
        for pid in reversed(pids):
            lab.registry.kill_process(pid)
