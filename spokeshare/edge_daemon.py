"""The edge process: the tunnel side plus the LAN presence of its virtual names.

Owns the lifecycle:

- start the tunnel side (:class:`spokeshare.tunnel.edge.Edge`), then the name
  services on the LAN interface: NetBIOS names and browse announcements, WS-Discovery,
  LLMNR and mDNS/DNS-SD;
- while the hub is unreachable for longer than ``discovery.withdraw_after``, withdraw
  the names on every protocol (so nobody is shown a server that cannot answer) and
  announce them again when the hub is back; both transitions are logged;
- on stop, withdraw names first (NetBIOS release, browse server type 0, WSD Bye, mDNS
  goodbye), then close the tunnels.

LAN presence needs the LAN interface: ``lan.interface``, or the one holding
``lan.address``; without either the edge relays only.

IPv6 (``lan.ipv6``, on by default): every relayed port and the NetBIOS session
service also listen on the interface's link-local address (``fe80::x%ifname``), and
names with an ``address6`` on theirs; LLMNR AAAA, mDNS AAAA and WS-Discovery XAddrs
name only those addresses, so everything advertised answers.

Sharing the box (:mod:`spokeshare.lan.coexist`): before starting each LAN protocol,
and every :data:`COEXIST_INTERVAL` seconds after, the edge looks for another daemon
serving it on this host (nmbd, wsdd, avahi-daemon, systemd-resolved...). That
protocol is then left to the other daemon (stopped, or never started), one line
names the daemon and the fix, and :meth:`EdgeDaemon.statistics` and
``STATE_DIR/lan-status.json`` show it degraded; the relay and every other protocol
keep running. When the other daemon goes (gone at two looks in a row, so that a
restart of it is not taken for its going), the protocol comes back. A daemon that
appears later while the edge holds one of the protocol's ports serves only the rest
(wsdd then has no metadata port): the line says which and names a restart as the fix. TCP listeners
whose port another daemon held at start (smbd on 445/139, cupsd on 631) are retried
at the same cadence (:data:`spokeshare.tunnel.edge.LISTENER_RETRY_INTERVAL`) and
leave ``listeners_degraded`` when they come up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import os
import uuid
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol

from spokeshare import stats
from spokeshare.bundle import Bundle
from spokeshare.config import EdgeConfig, for_services
from spokeshare.lan import coexist, interfaces
from spokeshare.logfmt import Line
from spokeshare.tasks import TaskSet
from spokeshare.tunnel import control
from spokeshare.tunnel.edge import Edge, HubState

log = logging.getLogger("spokeshare.edge")

#: Seconds between looks for another daemon serving one of the LAN protocols.
COEXIST_INTERVAL = 5.0
#: Seconds between refreshes of ``lan-status.json`` (rewritten only when it changed):
#: names claimed or lost, in between the events that rewrite it at once.
STATUS_INTERVAL = 1.0


class Presence(Protocol):
    """What every LAN-presence service offers the daemon."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _NetbiosPresence:
    """NetBIOS withdraws by releasing its names and leaving the browse list (stop),
    and comes back by registering and announcing again (start)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def withdraw(self) -> None:
        await self.service.stop()

    async def announce(self) -> None:
        await self.service.start()


class EdgeDaemon:
    def __init__(self, cfg: EdgeConfig, bundle: Bundle) -> None:
        # Default names follow the bundle: a printing-only office has no file server.
        cfg = for_services(cfg, bundle.services)
        self.cfg = cfg
        self.bundle = bundle
        self.edge = Edge(cfg, bundle)
        self.presence: list[Any] = []
        #: LAN protocol -> its presence service (netbios, llmnr, wsd, mdns).
        self.protocols: dict[str, Any] = {}
        #: LAN protocol -> "ok", or why it is degraded (the line that was logged, or
        #: the same hand-over as the socket table shows it now).
        self.lan_status: dict[str, str] = {}
        self._running: set[str] = set()
        #: Protocols left to another daemon that was gone at the last look (taken back
        #: when it is still gone at the next).
        self._absent: set[str] = set()
        self._scanner = coexist.Scanner()
        #: start() has finished: every protocol started or degraded, the edge "up".
        self.up = False
        self._status_written = ""
        self._statistics_written = ""
        self._local_addresses: list[str] = []
        self.withdrawn = False
        #: LAN protocol -> times its names were withdrawn (its withdraw() returned).
        self.withdrawals: dict[str, int] = {}
        self._withdraw_timer: asyncio.TimerHandle | None = None
        self._transition: asyncio.Task[None] | None = None
        #: The coexistence watch and the withdraw/announce transitions.
        self.tasks = TaskSet(log, "edge LAN task")
        self._stop = asyncio.Event()
        self.edge.lan_presence = self.pong_presence

    def __repr__(self) -> str:
        return f"<EdgeDaemon {self.bundle.office} withdrawn={self.withdrawn} {self.edge!r}>"

    def stop(self) -> None:
        self._stop.set()

    def statistics(self) -> stats.EdgeDaemonStatistics:
        """The tunnel side, ``lan-status.json``'s content and each running LAN
        service's statistics (spokeshare.stats.EdgeDaemonStatistics)."""
        return stats.EdgeDaemonStatistics(
            edge=self.edge.statistics(),
            status=self.lan_status_snapshot(),
            presence=tuple(type(p).__name__ for p in self.presence),
            services={
                name: self.protocols[name].service.statistics()
                if isinstance(self.protocols[name], _NetbiosPresence)
                else self.protocols[name].statistics()
                for name in sorted(self._running)
            },
        )

    async def run(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.close()

    async def start(self) -> None:
        address = IPv4Address(self.cfg.lan_address)
        if not self.cfg.lan_interface and not (address.is_unspecified or address.is_loopback):
            found = interfaces.interface_of(self.cfg.lan_address)
            if found:
                log.info(
                    "%s", Line("lan interface found", interface=found, address=self.cfg.lan_address)
                )
                self.cfg = dataclasses.replace(self.cfg, lan_interface=found)
        link_local = self._ipv6_link_local()
        self.edge.ipv6 = self._ipv6_listeners(link_local)
        await self.edge.start()
        self.edge.on_hub_state.append(self._hub_state_changed)
        # A TCP listener whose port was taken binds once it is free (edge.retry_listeners).
        self.edge.on_listeners_changed.append(self._write_status)
        # The certificate's expiry and renewal state (spokeshare.renewal) after each attempt.
        self.edge.on_renewal.append(self._write_status)
        if self.cfg.lan_interface:
            self.protocols = self._build_presence(link_local)
            self.presence = list(self.protocols.values())
            self._local_addresses = self._lan_addresses(link_local)
            for protocol in self.protocols:
                await self._start_protocol(protocol)
            self.tasks.spawn(self._coexist_loop(), name="coexist")
        else:
            log.warning(
                "%s",
                Line(
                    "lan interface missing",
                    address=self.cfg.lan_address,
                    reason="set lan.interface, or lan.address to an address of one: "
                    "name services are off, relaying only",
                ),
            )
        self.up = True
        self._write_status()
        self.tasks.spawn(self._status_loop(), name="lan-status")
        log.info(
            "%s",
            Line(
                "edge up",
                office=self.bundle.office,
                names=",".join(n.name for n in self.cfg.names),
                hub=self.bundle.hub_name,
            ),
        )

    # -- addresses -------------------------------------------------------------------
    def _ipv6_link_local(self) -> str | None:
        """The interface's own link-local address (names' address6 excluded)."""
        if not (self.cfg.lan_ipv6 and self.cfg.lan_interface):
            return None
        exclude = {n.address6 for n in self.cfg.names if n.address6}
        return interfaces.ipv6_link_local(self.cfg.lan_interface, exclude=exclude)

    def _scoped(self, address6: str) -> str:
        if ipaddress.IPv6Address(address6).is_link_local:
            return f"{address6}%{self.cfg.lan_interface}"
        return address6

    def _ipv6_listeners(self, link_local: str | None) -> dict[str, str]:
        """IPv4 listen address -> the IPv6 address serving the same names."""
        out: dict[str, str] = {}
        if link_local is None and not any(n.address6 for n in self.cfg.names):
            return out
        if link_local is not None:
            out[self.cfg.lan_address] = self._scoped(link_local)
        for n in self.cfg.names:
            if n.address and n.address6 and self.cfg.lan_ipv6:
                out[n.address] = self._scoped(n.address6)
        return out

    def _lan_addresses(self, link_local: str | None) -> list[str]:
        out = [self.cfg.lan_address]
        out += [n.address for n in self.cfg.names if n.address]
        out += [n.address6 for n in self.cfg.names if n.address6]
        if link_local:
            out.append(link_local)
        try:
            iface = interfaces.ipv4_interface(self.cfg.lan_interface, self.cfg.lan_address)
            out.append(str(iface.network.broadcast_address))
        except Exception:  # noqa: BLE001 - only a better guess; the wildcard check stays
            pass
        return out

    # -- sharing the box -------------------------------------------------------------
    async def _start_protocol(self, protocol: str) -> None:
        """Start one LAN protocol unless another daemon here serves it already."""
        other = self._scanner.check(protocol, self._local_addresses)
        if other is not None:
            self._degrade(protocol, other)
            return
        p = self.protocols[protocol]
        try:
            await p.start()
        except OSError as exc:
            port = coexist.PROTOCOL_PORTS[protocol][0][1]
            holder = self._scanner.check(protocol, self._local_addresses)
            self._degrade(
                protocol,
                holder or f"{protocol} could not bind (port {port}): {exc.strerror or exc}",
            )
            return
        except Exception as exc:  # noqa: BLE001 - one protocol's fault must not stop the edge
            log.exception(
                "%s", Line("protocol failed", protocol=protocol, action="start", error=repr(exc))
            )
            self._degrade(protocol, f"{protocol} failed to start: {exc!r}")
            return
        self._running.add(protocol)
        if protocol in self.lan_status and self.lan_status[protocol] != "ok":
            log.warning(
                "%s",
                Line("protocol restored", protocol=protocol,
                     reason="the other daemon is gone; the edge serves it again"),
            )  # fmt: skip
        self.lan_status[protocol] = "ok"
        if self.withdrawn:
            await self._call(protocol, p, "withdraw")

    def _degrade(self, protocol: str, why: str) -> None:
        if self.lan_status.get(protocol) != why:
            log.error("%s", Line("protocol degraded", protocol=protocol, reason=why))
        self.lan_status[protocol] = why

    async def _coexist_loop(self) -> None:
        while True:
            await asyncio.sleep(COEXIST_INTERVAL)
            changed = False
            for protocol in self.protocols:
                try:
                    other = self._scanner.check(protocol, self._local_addresses)
                except OSError as exc:  # /proc unreadable: keep what we have
                    log.debug("coexist check %s: %s", protocol, exc)
                    continue
                if other is not None:
                    self._absent.discard(protocol)
                if protocol in self._running and other is not None:
                    # Never two answerers for one name: the other daemon keeps it.
                    self._running.discard(protocol)
                    await self._call(protocol, self.protocols[protocol], "stop")
                    self._degrade(protocol, other)
                    changed = True
                elif protocol not in self._running and other is not None:
                    if self.lan_status.get(protocol) != other:
                        # The same hand-over, its daemon now another pid or holding
                        # other ports (restarted as the line said): the status is
                        # kept current, the line is not repeated.
                        self.lan_status[protocol] = other
                        changed = True
                elif protocol not in self._running and protocol not in self._absent:
                    # Gone at one look only: a `systemctl restart` of the other
                    # daemon (the fix named for a half-started one) is not a hand-back.
                    self._absent.add(protocol)
                elif protocol not in self._running:
                    self._absent.discard(protocol)
                    await self._start_protocol(protocol)
                    changed = True
            if changed:
                self._write_status()

    def names_status(self) -> dict[str, dict[str, str]]:
        """LAN protocol -> name -> its state now, for the protocols running that claim
        names: NetBIOS (``claimed``, ``registering``, ``conflict``...: RFC 1001 section
        15.2), LLMNR (``answering``, ``checking``, ``conflict``: RFC 4795 section 4) and
        mDNS (``published``, ``conflict``: RFC 6762 section 9)."""
        out: dict[str, dict[str, str]] = {}
        netbios = self.protocols.get("netbios")
        if "netbios" in self._running and isinstance(netbios, _NetbiosPresence):
            out["netbios"] = dict(netbios.service.statistics().names)
        llmnr = self.protocols.get("llmnr")
        if "llmnr" in self._running and llmnr is not None:
            conflicts = llmnr.conflicts
            out["llmnr"] = {
                str(n): "answering"
                if llmnr.claims.answering(n)
                else "conflict"
                if n in conflicts
                else "checking"
                for n in llmnr.settings.names
            }
        mdns = self.protocols.get("mdns")
        if "mdns" in self._running and mdns is not None:
            st = mdns.statistics()
            st = getattr(st, "publisher", st)  # printer_sync.MdnsWithPrintersStatistics
            state = {n: "published" for n in st.published}
            state.update({n: "conflict" for n in st.conflicts})
            out["mdns"] = state
        return out

    def pong_presence(self) -> control.Presence:
        """The LAN presence the edge's pongs carry to the hub (control.Presence): each
        virtual name's state over the protocols running (``ok`` when every one holds
        it, ``conflict`` when any lost it, ``pending`` while claiming, ``withdrawn``,
        ``off`` when none runs), HQ's printers advertised, and ``"protocol: why"`` per
        degraded protocol or listener; cut to the control message's bounds."""
        held = {"claimed", "answering", "published"}
        states: dict[str, list[str]] = {n.name.upper(): [] for n in self.cfg.names}
        for table in self.names_status().values():
            for key, state in table.items():
                base = str(key).split("<")[0].split(".")[0].strip().upper()
                if base in states:
                    states[base].append(state)
        names: dict[str, str] = {}
        for n in self.cfg.names:
            got = states[n.name.upper()]
            names[n.name] = (
                "withdrawn"
                if self.withdrawn
                else "off"
                if not got
                else "conflict"
                if "conflict" in got
                else "ok"
                if all(s in held for s in got)
                else "pending"
            )
        printers: tuple[str, ...] = ()
        mdns = self.protocols.get("mdns")
        if "mdns" in self._running and mdns is not None:
            sync = getattr(mdns.statistics(), "printers", None)
            printers = tuple(getattr(sync, "printers", ()))
        degraded = [f"{p}: {why}" for p, why in sorted(self.lan_status.items()) if why != "ok"]
        degraded += [f"{k}: {why}" for k, why in sorted(self.edge.degraded.items())]
        return control.fit_presence(names, printers, degraded)

    def lan_status_snapshot(self) -> stats.LanStatus:
        """What ``lan-status.json`` holds now (spokeshare.stats.LanStatus)."""
        return stats.LanStatus(
            up=self.up,
            withdrawn=self.withdrawn,
            lan=dict(self.lan_status),
            listeners_degraded=dict(self.edge.degraded),
            names=self.names_status(),
            certificate=self.edge.renewal_status(dt.datetime.now(dt.UTC)).to_json(),
            hub_clock=self.edge.hub_clock_status(),
            hub=self.edge.hub_state.value,
            withdrawals=dict(sorted(self.withdrawals.items())),
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            self._write_status()
            self._write_statistics()

    def _write_statistics(self) -> None:
        """``STATE_DIR/statistics.json``: everything the edge counts (:meth:`statistics`:
        the tunnel side, the LAN status and each LAN service's counters: answered,
        malformed, rate limited, dropped off-link, ...), for an office's admin; written
        when it changed, checked every STATUS_INTERVAL."""
        data = stats.to_json(self.statistics())
        text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
        if text != self._statistics_written and _replace_file(
            self.cfg.state_dir / "statistics.json", text
        ):
            self._statistics_written = text

    def _write_status(self) -> None:
        """``STATE_DIR/lan-status.json``: the LAN protocols and listeners, and the office
        certificate's expiry and renewal (``certificate``: RenewalStatus.to_json), the
        hub's clock against ours (``hub_clock``: Edge.hub_clock_status), whether
        start() has finished (``up``), the names each protocol holds (``names``:
        :meth:`names_status`), the hub's state (``hub``) and the withdrawals done per
        protocol (``withdrawals``), for operators and for whatever waits for the edge;
        written when it changed, checked every STATUS_INTERVAL and at each hub state
        change and withdraw/announce."""
        data = stats.to_json(self.lan_status_snapshot())
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        if text == self._status_written:
            return
        if _replace_file(self.cfg.state_dir / "lan-status.json", text):
            self._status_written = text

    @staticmethod
    async def _call(protocol: str, p: Any, what: str) -> None:
        try:
            await getattr(p, what)()
        except OSError as exc:
            log.warning("%s", Line("protocol failed", protocol=protocol, action=what, error=exc))

    async def close(self) -> None:
        if self._withdraw_timer is not None:
            self._withdraw_timer.cancel()
        await self.tasks.aclose()
        for protocol in reversed(list(self.protocols)):
            if protocol in self._running:
                self._running.discard(protocol)
                await self._call(protocol, self.protocols[protocol], "stop")
        await self.edge.close()

    # -- what is on the LAN ----------------------------------------------------------
    def _build_presence(self, link_local: str | None) -> dict[str, Any]:
        from spokeshare.lan.discovery_service import LlmnrService, WsdService
        from spokeshare.lan.discovery_settings import DiscoverySettings
        from spokeshare.lan.mdns import MdnsPublisher
        from spokeshare.lan.netbios_service import NetbiosService, NetbiosSettings
        from spokeshare.printing.printer_sync import with_printers

        cfg = self.cfg
        out: dict[str, Any] = {}
        if not cfg.names:
            # A printing-only office: no file-server name to register, announce or answer.
            log.info(
                "%s",
                Line("names off", protocols="netbios,wsd,llmnr,mdns",
                     reason="no virtual names in edge.toml (printing only)"),
            )  # fmt: skip
            # HQ's printers still: mDNS for a print host name (printing/print_host.py).
            from spokeshare.printing.print_host import print_host_presence

            printing = print_host_presence(cfg, self.bundle.office, self.edge, link_local)
            if printing is not None:
                out["mdns"] = printing
            return out
        iface = interfaces.ipv4_interface(cfg.lan_interface, cfg.lan_address)
        presence = cfg.presence()  # names, workgroup, addresses: validated at load
        if cfg.netbios.enabled:
            nb = cfg.netbios
            settings = NetbiosSettings.for_interface(
                iface,
                presence,
                announce_initial_interval=nb.announce_initial_interval,
                announce_max_interval=nb.announce_max_interval,
                wins_server=IPv4Address(nb.wins_server) if nb.wins_server else None,
            )
            out["netbios"] = _NetbiosPresence(NetbiosService(settings))
        d = cfg.discovery
        if d.wsd or d.llmnr or d.mdns:
            disc = DiscoverySettings(
                presence,
                uuid_namespace=uuid.uuid5(uuid.NAMESPACE_URL, f"spokeshare:{self.bundle.office}"),
                ipv6_link_local=link_local,
                smb_port=cfg.ports.get("smb", 445) or 445,
                state_dir=cfg.state_dir,
            )
            if d.llmnr:
                out["llmnr"] = LlmnrService(disc)
            if d.wsd:
                out["wsd"] = WsdService(disc)
            if d.mdns:
                # HQ's printers are published through the names' responder.
                out["mdns"] = with_printers(MdnsPublisher(disc), self.edge)
        return out

    # -- withdrawing while HQ is away ------------------------------------------------
    def _hub_state_changed(self, state: HubState) -> None:
        loop = asyncio.get_running_loop()
        if state in (HubState.DOWN, HubState.REVOKED):
            if self._withdraw_timer is None and not self.withdrawn and self.presence:
                self._withdraw_timer = loop.call_later(
                    self.cfg.discovery.withdraw_after, self._start_transition, True
                )
        elif state is HubState.UP:
            if self._withdraw_timer is not None:
                self._withdraw_timer.cancel()
                self._withdraw_timer = None
            if self.withdrawn:
                self._start_transition(False)
        self._write_status()  # the hub's state, for whatever waits on it

    def _start_transition(self, withdraw: bool) -> None:
        self._withdraw_timer = None
        previous = self._transition

        async def run() -> None:
            if previous is not None:
                # One transition at a time, in order; a failed one was logged by the
                # task set, and this one still runs.
                await asyncio.wait([previous])
            await self._apply(withdraw)

        self._transition = self.tasks.spawn(run(), name="withdraw" if withdraw else "announce")

    async def _apply(self, withdraw: bool) -> None:
        if withdraw == self.withdrawn:
            return
        if withdraw:
            log.warning(
                "%s",
                Line(
                    "lan withdrawn",
                    office=self.bundle.office,
                    names=",".join(n.name for n in self.cfg.names),
                    after_s=round(self.cfg.discovery.withdraw_after),
                    reason="hub unreachable",
                ),
            )
        else:
            log.info(
                "%s",
                Line(
                    "lan announced",
                    office=self.bundle.office,
                    names=",".join(n.name for n in self.cfg.names),
                    reason="hub reachable again",
                ),
            )
        self.withdrawn = withdraw
        for protocol, p in self.protocols.items():
            if protocol not in self._running:
                continue  # left to another daemon on this host
            try:
                await (p.withdraw() if withdraw else p.announce())
                if withdraw:
                    self.withdrawals[protocol] = self.withdrawals.get(protocol, 0) + 1
            except OSError as exc:
                log.error(
                    "%s",
                    Line(
                        "protocol failed",
                        protocol=protocol,
                        action="withdraw" if withdraw else "announce",
                        error=exc,
                    ),
                )
        self._write_status()


def _replace_file(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it); False,
    logged at debug level, when the state directory cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)
        return False
