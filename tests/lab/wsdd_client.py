"""The real wsdd (Debian 12's 0.7.0) as a WS-Discovery client on a lab host.

Its ``--listen`` control API is broken on Python 3.10+ (gotchas.md), so a test runs it in
discovery mode (``-D``) for a while and reads its ``discovered NAME in Workgroup:WG on
ADDR`` log lines.
"""

from __future__ import annotations

import re
import signal
import subprocess

from spokeshare.lab import netns

#: How long wsdd gets to say goodbye after SIGTERM before it is killed.
TERM_GRACE_S = 10.0


def wsdd_log(namespace: str, ifname: str, uuid: str, seconds: float) -> str:
    """Run ``wsdd -D`` in ``namespace`` on ``ifname`` for ``seconds``; its log.

    Each instance needs its own ``uuid`` (namespaces share /etc/machine-id). wsdd is
    stopped by PID: SIGTERM, then SIGKILL if it has not exited within
    :data:`TERM_GRACE_S` (a wsdd blocked in a metadata fetch does not run its
    signal handler until the fetch returns).
    """
    argv = ["wsdd", "-D", "-i", ifname, "-U", uuid, "-v"]
    p = subprocess.Popen(
        netns.exec_argv(namespace, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = p.communicate(timeout=seconds)
        return out
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out


def wsdd_discovers(
    namespace: str,
    ifname: str,
    uuid: str,
    seconds: float,
    workgroup: str = "ACME",
    address_prefix: str = r"198\.18\.11\.",
) -> set[str]:
    """Names wsdd lists in ``workgroup`` on addresses starting with ``address_prefix``."""
    out = wsdd_log(namespace, ifname, uuid, seconds)
    pattern = rf"discovered (\S+) in Workgroup:{workgroup} on {address_prefix}"
    return set(re.findall(pattern, out))
