"""An office PC's (or HQ's) own mDNS stack: a private D-Bus system bus and avahi-daemon.

``ippfind`` and ``avahi-browse`` (and cupsd's DNS-SD) talk to avahi-daemon over the
D-Bus *system* bus, as on any Linux desktop. A lab host gets a bus of its own: a
``dbus-daemon`` listening on ``ROOT/bus.sock`` (clients find it through
``DBUS_SYSTEM_BUS_ADDRESS``, see :meth:`AvahiHost.env`), and an ``avahi-daemon`` on
that bus that uses only the host's LAN interface and calls itself ``HOST.local``.

avahi-daemon keeps its PID file and control socket in ``/run/avahi-daemon``, which all
namespaces share; each instance therefore runs in the private mount namespace that
``ip netns exec`` gives it, with a directory of its own bind-mounted over ``/run`` (the
mount is gone when the process exits; nothing is created on the host). Both daemons
are recorded by PID and stopped by PID.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from spokeshare.lab import netns
from spokeshare.lab.netns import StateRegistry
from spokeshare.lab.services import spawn, wait_for

AVAHI_RUN = "/run/avahi-daemon"

_BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """\
[server]
host-name={host}
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-addresses={publish_addresses}
[reflector]
[rlimits]
"""


@dataclass(frozen=True)
class AvahiHost:
    """dbus-daemon + avahi-daemon of one lab host; files under ``root``."""

    namespace: str
    interface: str
    host_name: str
    root: Path
    publish_addresses: bool = True

    @property
    def bus_socket(self) -> Path:
        return self.root / "bus.sock"

    def env(self) -> dict[str, str]:
        """Environment for a client (ippfind, avahi-browse) of this host's avahi."""
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus_socket}",
        }

    def start(self, registry: StateRegistry, log_dir: Path) -> list[int]:
        """Start the bus and avahi; wait until avahi is on the bus and running."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        run_dir = self.root / "avahi-run"
        run_dir.mkdir(exist_ok=True)
        bus_conf = self.root / "bus.conf"
        bus_conf.write_text(_BUS_CONF.format(socket=self.bus_socket))
        avahi_conf = self.root / "avahi-daemon.conf"
        avahi_conf.write_text(
            _AVAHI_CONF.format(
                host=self.host_name,
                interface=self.interface,
                publish_addresses="yes" if self.publish_addresses else "no",
            )
        )
        self.bus_socket.unlink(missing_ok=True)
        bus = spawn(
            registry, self.namespace,
            ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={bus_conf}"],
            f"dbus-daemon {self.namespace}", log_dir / f"{self.namespace}-dbus.log",
        )  # fmt: skip
        bus_start = registry.processes()[-1]["start"]
        wait_for(
            f"dbus-daemon {self.namespace}",
            self.bus_socket.exists,
            timeout=15,
            alive=lambda: netns.pid_alive(bus, bus_start),
        )
        script = (
            f"mount --bind {shlex.quote(str(run_dir))} /run && mkdir -p {AVAHI_RUN} && "
            f"exec avahi-daemon --no-chroot --no-drop-root --no-rlimits "
            f"-f {shlex.quote(str(avahi_conf))}"
        )
        log_path = log_dir / f"{self.namespace}-avahi.log"
        offset = log_path.stat().st_size if log_path.exists() else 0  # the log is appended
        avahi = spawn(
            registry, self.namespace, ["sh", "-c", script],
            f"avahi-daemon {self.namespace}", log_dir / f"{self.namespace}-avahi.log",
            env={**self.env(), "LC_ALL": "C"},
        )  # fmt: skip
        avahi_start = registry.processes()[-1]["start"]

        def started() -> bool:
            with log_path.open("rb") as f:
                f.seek(offset)
                return b"Server startup complete" in f.read()

        wait_for(
            f"avahi-daemon {self.namespace}",
            started,
            timeout=20,
            alive=lambda: netns.pid_alive(avahi, avahi_start),
        )
        return [bus, avahi]
