"""Several hubs on one shared deployment directory, on loopback (docs/scale-out.md).

Hub ``i`` listens on 127.0.0.(2+i) at a free port; every bundle lists them all. A hub
runs in the test's loop thread (:meth:`Hubs.start_in_loop`) or as its own
``spokeshare hub`` process (:meth:`Hubs.process`), which a test may kill by PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spokeshare import bundle, enrollment
from spokeshare.config import HubConfig
from tests.helpers import (
    Deployment,
    LoopThread,
    edge_config,
    free_port,
    process,
    recv_all,
    wait_for,
)


@dataclasses.dataclass
class Hubs:
    dep: Deployment
    addresses: list[tuple[str, int]]

    @property
    def dir(self) -> Path:
        return self.dep.dir

    def config(self, i: int) -> HubConfig:
        host, port = self.addresses[i]
        return dataclasses.replace(
            self.dep.hub_config(),
            listen=((host, port),),
            state_dir=self.dir.parent / f"state-hub{i}",
            name=f"hub{i}",
        )

    def toml(self, i: int) -> Path:
        """hub-I.toml: the shared hub.toml with this hub's listen address, state
        directory and name, fast heartbeats, no start-up backend check."""
        host, port = self.addresses[i]
        text = (self.dir / "hub.toml").read_text()
        text = re.sub(r"(?m)^listen = .*$", f'listen = ["{host}:{port}"]', text)
        text = re.sub(
            r"(?m)^state_dir = .*$",
            f'state_dir = "{self.dir.parent / f"state-hub{i}"}"\nname = "hub{i}"\n'
            "heartbeat_interval = 0.5\ncheck_backends = false",
            text,
        )
        path = self.dir.parent / f"hub-{i}.toml"
        path.write_text(text)
        return path

    def start_in_loop(self, lt: LoopThread, count: int | None = None, **per_hub: Any) -> list[Any]:
        """Hubs 0 to ``count`` - 1 (default all) started in the test's loop thread, each
        with the fields of ``per_hub["hubI"]`` (a dict) replaced in its config. Stop them
        with :func:`stop_in_loop`."""
        from spokeshare.tunnel.hub import Hub

        running = []
        for i in range(len(self.addresses) if count is None else count):
            cfg = dataclasses.replace(self.config(i), **per_hub.get(f"hub{i}", {}))
            h = Hub(cfg, self.dir)
            lt.run(h.start())
            running.append(h)
        return running

    @contextlib.contextmanager
    def process(self, i: int) -> Iterator[subprocess.Popen[bytes]]:
        """Hub ``i`` as its own process; stopped by PID on exit."""
        argv = [sys.executable, "-m", "spokeshare", "hub", "--dir", str(self.dir)]
        with process([*argv, "--config", str(self.toml(i))]) as p:
            wait_for(lambda: p.poll() is not None or _accepts(self.addresses[i]),
                     timeout=30, what=f"hub {i} listening")  # fmt: skip
            yield p


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        return False
    return True


def stop_in_loop(lt: LoopThread, edge: Any, running: list[Any]) -> None:
    """Close ``edge`` (if any), then every hub of ``running``, also when one close fails."""
    try:
        if edge is not None:
            lt.run(edge.close())
    finally:
        for h in running:
            lt.run(h.close())


def echo_through(port: int, payload: bytes) -> bytes:
    """``payload`` through the edge's port on 127.0.0.1 to the echo backend and back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        return recv_all(c)


def make_hubs(root: Path, count: int, services: dict[str, int]) -> Hubs:
    """A deployment whose bundles list ``count`` hubs, with office ``nyc`` enrolled."""
    addresses = [(f"127.0.0.{2 + i}", free_port(f"127.0.0.{2 + i}")) for i in range(count)]
    svc = {name: f"127.0.0.1:{port}" for name, port in services.items()}
    enrollment.init(
        root / "hq",
        "hub.test",
        [f"{h}:{p}" for h, p in addresses],
        svc,
        state_dir=root / "hq-state",
        listen=[f"{addresses[0][0]}:{addresses[0][1]}"],
    )
    dep = Deployment(root / "hq", {}, addresses[0][1])
    dep.add_office("nyc")
    return Hubs(dep, addresses)


def make_edge(
    hubs: Hubs,
    office: str = "nyc",
    hub_dead_after: float | None = None,
    only_hubs: Sequence[int] | None = None,
    renew_at: float | None = None,
    **pool: Any,
) -> tuple[Any, int]:
    """An edge of ``office`` (not started) and its smb port; ``hub_dead_after`` replaces
    the tests' short one (and so the heartbeat interval, a third of it); ``only_hubs``
    (indices into ``hubs.addresses``) are the hubs its bundle lists, all by default;
    ``renew_at`` (fraction of the certificate's lifetime) replaces the default."""
    from spokeshare.tunnel.edge import Edge

    port = free_port()
    b = bundle.read(hubs.dep.bundles[office])
    if only_hubs is not None:
        b = dataclasses.replace(b, hub_addresses=tuple(hubs.addresses[i] for i in only_hubs))
    cfg = edge_config(hubs.dep.bundles[office], {"smb": port}, **pool)
    if hub_dead_after is not None:
        cfg = dataclasses.replace(cfg, hub_dead_after=hub_dead_after)
    if renew_at is not None:
        cfg = dataclasses.replace(cfg, renew_at=renew_at)
    return Edge(cfg, b), port


def load(lt: LoopThread, edge: Any) -> list[int]:
    """The edge's tunnels per hub: its pool's (idle or carrying a stream) plus dialling."""
    return list(lt.call(edge._load))


def wait_spread(lt: LoopThread, edge: Any, hubs: list[int], at_least: int = 1) -> None:
    """Until the edge is up and holds ``at_least`` idle tunnels to each hub in ``hubs``."""

    def spread() -> bool:
        def idle_per_hub() -> list[int]:
            out = [0] * len(edge.hubs)
            for t in edge.idle:
                out[t.hub] += 1
            return out

        per = lt.call(idle_per_hub)
        up = lt.call(lambda: edge.hub_state.value) == "up"
        return up and all(per[i] >= at_least for i in hubs)

    wait_for(spread, timeout=20, what=f"pool spread over hubs {hubs}")
