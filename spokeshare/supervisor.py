"""Running the hub as several worker processes (``[hub] workers = N``).

The parent starts N copies of ``spokeshare hub ... --worker I``; they share the listen
ports through SO_REUSEPORT, so the kernel spreads the offices' tunnels over them and
each gets a core. The parent only supervises: a worker that dies is restarted (after a
pause, so a worker failing at start does not spin), and SIGTERM/SIGINT are passed on
to every worker by PID, after which the parent waits for them and exits.

SIGHUP (``systemctl reload``) is passed on to every running worker by PID: each reads
hub.toml again and logs what it applied or why it refused the file (Hub.reload), so
every process serves the same file. A worker restarted later reads the file as it is
then. The parent reads no configuration after start: a changed ``workers`` needs a
restart (the workers log it as not applied).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

from spokeshare.logfmt import Line

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
        # SIGHUP ignored until the worker installs its own handler (Hub.reload), so a
        # reload while it starts cannot kill it (an ignored signal stays so over exec).
        handler = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            proc = subprocess.Popen([*argv, "--worker", str(index)])
        finally:
            signal.signal(signal.SIGHUP, handler)
        workers[index] = proc
        log.info("%s", Line("hub worker started", worker=index, pid=proc.pid))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        # returncode, never poll(): reaping here would hide the exit from os.wait().
        running = [p for p in workers.values() if p.returncode is None]
        for proc in running:
            try:
                os.kill(proc.pid, signal.SIGHUP)
            except ProcessLookupError:
                continue  # exited meanwhile: os.wait() restarts it with the new file
        log.info("%s", Line("hub reload signalled", workers=len(running)))

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
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
                "%s",
                Line(
                    "hub worker exited",
                    worker=index,
                    pid=pid,
                    exit_status=workers[index].returncode,
                    restart_in_s=RESTART_DELAY,
                ),
            )
            time.sleep(RESTART_DELAY)
            start(index)
    except _Stop:
        log.info("%s", Line("hub stopping", workers=len(workers)))
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
