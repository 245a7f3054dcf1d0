"""Running the hub as several worker processes (``[hub] workers = N``).

The parent starts N copies of ``spokeshare hub ... --worker I``; they share the listen
ports through SO_REUSEPORT, so the kernel spreads the offices' tunnels over them and
each gets a core. The parent only supervises: a worker that dies is restarted (after a
pause, so a worker failing at start does not spin), and SIGTERM/SIGINT are passed on
to every worker by PID, after which the parent waits for them and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("spokeshare.hub")

#: Seconds before a worker that exited is started again.
RESTART_DELAY = 1.0
#: Seconds a worker gets to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0


class _Stop(Exception):
    pass


def run_workers(count: int, argv: Sequence[str]) -> int:
    workers: dict[int, subprocess.Popen[bytes]] = {}

    def start(index: int) -> None:
        proc = subprocess.Popen([*argv, "--worker", str(index)])
        workers[index] = proc
        log.info("hub worker %d started: pid %d", index, proc.pid)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(count):
            start(i)
        while True:
            pid, status = os.wait()
            index = next((i for i, p in workers.items() if p.pid == pid), None)
            if index is None:
                continue
            workers[index].returncode = os.waitstatus_to_exitcode(status)
            log.error(
                "hub worker %d (pid %d) exited with %s; restarting it",
                index,
                pid,
                workers[index].returncode,
            )
            time.sleep(RESTART_DELAY)
            start(index)
    except _Stop:
        log.info("hub stopping %d worker(s)", len(workers))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for proc in workers.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in workers.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0
