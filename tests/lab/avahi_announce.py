"""Make a lab host's own avahi-daemon announce an address record without probing it.

Run inside the host's namespace with Debian's /usr/bin/python3 (python3-dbus,
python3-gi) and
``DBUS_SYSTEM_BUS_ADDRESS`` pointing at that host's avahi bus:
``python3 avahi_announce.py NAME ADDRESS``. Through avahi's D-Bus API (an entry group,
``AddRecord``) it publishes ``NAME`` A ``ADDRESS`` (TTL 120) as a unique record that
avahi announces at once, with the cache-flush bit, without probing first
(``AVAHI_PUBLISH_UNIQUE | AVAHI_PUBLISH_NO_PROBE``): a host that does not require its
name to be unique, or one whose probes went unheard (a link that joins two segments
later), the cases of RFC 6762 §9. It prints ``established`` once avahi says so (or
``failed STATE``) and holds the record until the process is stopped (by PID, with the
lab); avahi then drops the client's group and sends the goodbye.
"""

from __future__ import annotations

import ipaddress
import sys

import dbus  # type: ignore[import-not-found,import-untyped,unused-ignore]
import dbus.mainloop.glib  # type: ignore[import-not-found,import-untyped,unused-ignore]
from gi.repository import GLib  # type: ignore[import-not-found,import-untyped,unused-ignore]

# avahi-common/defs.h
IF_UNSPEC, PROTO_INET = -1, 0
PUBLISH_UNIQUE, PUBLISH_NO_PROBE = 1, 2
CLASS_IN, TYPE_A = 1, 1
GROUP_ESTABLISHED, GROUP_COLLISION, GROUP_FAILURE = 2, 3, 4


def main() -> None:
    name, address = sys.argv[1], sys.argv[2]
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    server = dbus.Interface(
        bus.get_object("org.freedesktop.Avahi", "/"), "org.freedesktop.Avahi.Server"
    )
    group = dbus.Interface(
        bus.get_object("org.freedesktop.Avahi", server.EntryGroupNew()),
        "org.freedesktop.Avahi.EntryGroup",
    )
    loop = GLib.MainLoop()

    def changed(state: int, error: str) -> None:
        if state == GROUP_ESTABLISHED:
            print("established", flush=True)
        elif state in (GROUP_COLLISION, GROUP_FAILURE):
            print(f"failed {state} {error}", flush=True)

    group.connect_to_signal("StateChanged", changed)
    rdata = ipaddress.IPv4Address(address).packed
    group.AddRecord(
        dbus.Int32(IF_UNSPEC), dbus.Int32(PROTO_INET),
        dbus.UInt32(PUBLISH_UNIQUE | PUBLISH_NO_PROBE), name,
        dbus.UInt16(CLASS_IN), dbus.UInt16(TYPE_A), dbus.UInt32(120),
        dbus.Array([dbus.Byte(b) for b in rdata], signature="y"),
    )  # fmt: skip
    group.Commit()
    loop.run()


if __name__ == "__main__":
    main()
