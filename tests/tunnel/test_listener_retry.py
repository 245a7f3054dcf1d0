"""A relayed port held by another daemon when the edge starts, freed later.

The old daemon is a real process (a plain TCP server in a child process, as an old
smbd on 445 or cupsd on 631 would hold the port): the edge starts, relays nothing on
that port and says so in its statistics; the process is stopped by PID, and the
edge's retried listener takes the port over, logs one line, leaves
``listeners_degraded`` and relays.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    Deployment,
    LoopThread,
    Stack,
    free_port,
    logged,
    process,
    recv_all,
    wait_for,
)

_OLD_DAEMON = """\
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
while True:
    time.sleep(60)
"""


@pytest.mark.expect_errors  # a port held by another process is logged at ERROR
def test_listener_comes_up_when_the_old_daemon_goes(
    deployment: Deployment,
    loop_thread: LoopThread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    script = tmp_path / "oldsmbd.py"
    script.write_text(_OLD_DAEMON)
    caplog.set_level(logging.INFO, logger="spokeshare.edge")
    stack = Stack(deployment, loop_thread, edge_ports={"smb": port})
    try:
        with process([sys.executable, str(script), str(port)], stdout=-1) as old:
            assert old.stdout is not None and old.stdout.readline() == b"listening\n"
            stack.start()
            key = f"tcp 127.0.0.1:{port}"
            degraded = loop_thread.call(lambda: stack.edge.statistics().listeners_degraded)
            assert list(degraded) == [key]
            assert f"oldsmbd.py (pid {old.pid})" in degraded[key]
            old.terminate()
            old.wait(10)
        wait_for(
            lambda: loop_thread.call(lambda: not stack.edge.statistics().listeners_degraded),
            timeout=30,
            what="the edge's listener on the freed port",
        )
        [back] = logged(caplog, "listener recovered")
        assert (back["address"], back["port"], back["service"]) == ("127.0.0.1", str(port), "smb")
        assert "oldsmbd.py" in back["holder"]
        with stack.connect() as s:
            s.sendall(b"relayed through the edge")
            s.shutdown(1)
            assert recv_all(s) == b"relayed through the edge"
    finally:
        stack.close()
