"""One worker's event-loop side: listeners → Protocol factories, admin endpoints, the 1-second housekeeping tick,
and the reload of its configuration snapshot (new connections follow the new one, open ones keep their route)."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from functools import partial

from netlab.mesh.types import Snapshot
from netlab.mesh.versions import mesh_traits
from netlab.mesh.workload import spiffe_id
from netlab.proxy.accesslog import AccessLog
from netlab.proxy.admin import HttpOnce, config_dump_handler, health_handler, stats_handler
from netlab.proxy.config import ProxyConfig
from netlab.proxy.dispatch import Dispatch
from netlab.proxy.http.headers import Edge
from netlab.proxy.origdst import Resolver, local_address, redirect_original_dst, resolver_for
from netlab.proxy.relay import Context, quiet_relay_error
from netlab.proxy.stats import Stats
from netlab.proxy.telemetry import Telemetry
from netlab.proxy.tls import Identity
from netlab.proxy.upstream import IP_TRANSPARENT

BACKLOG = 4096  # asyncio re-listens with 100 unless told: 1000 simultaneous connects would see SYN retries
CLOSE_GRACE = 1.0  # seconds for closed connections to report (and log) before the worker exits


@dataclass
class Listeners:
    """A sidecar's capture listeners (15006, 15001), or a gateway's listeners (its Gateway servers' ports), and the
    proxy's own ports."""

    inbound: socket.socket | None = None
    outbound: socket.socket | None = None
    gateway: list[socket.socket] = field(default_factory=list)
    health: socket.socket | None = None
    stats: socket.socket | None = None
    admin: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [s for s in (self.inbound, self.outbound, *self.gateway, self.health, self.stats, self.admin)
                if s is not None]

    def close(self) -> None:
        for s in self.all():
            s.close()


def listen(host: str, port: int, reuseport: bool = False, transparent: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:  # one accept queue per worker, the kernel spreads connections
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if transparent:  # TPROXY: accept connections addressed to any IP (needs CAP_NET_ADMIN, bound as root)
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        # Accepted sockets inherit TCP_NODELAY from the listener on Linux: one setsockopt here, none per connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def gateway_ports(snapshot: Snapshot) -> list[int]:
    return [x.port for x in snapshot.listeners if x.direction == "gateway" and x.bind_to_port]


def bind_listeners(cfg: ProxyConfig, admin: bool, reuseport: bool) -> Listeners:
    host = cfg.bind_address
    own = Listeners(health=listen(host, cfg.health_port) if admin else None,
                    stats=listen(host, cfg.stats_port) if admin else None,
                    admin=listen(cfg.admin_address, cfg.admin_port) if admin else None)
    if cfg.snapshot.node.type == "router":
        own.gateway = [listen(host, port, reuseport) for port in gateway_ports(cfg.snapshot)]
        return own
    transparent = cfg.mode == "TPROXY"
    own.inbound = listen(host, cfg.inbound_port, reuseport, transparent)
    own.outbound = listen(host, cfg.outbound_port, reuseport, transparent)
    return own


def _stamp(directory: str | None) -> tuple[int, int] | None:
    """When the certificate was last written (a rotation replaces it)."""
    try:
        info = os.stat(os.path.join(directory or "", "cert-chain.pem"))
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


class Worker:
    def __init__(self, cfg: ProxyConfig, stats: Stats, log: AccessLog | None,
                 inbound_resolver: Resolver | None = None, outbound_resolver: Resolver | None = None,
                 parent_pid: int | None = None, identity: Identity | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.log = log
        self.inbound_resolver = inbound_resolver or resolver_for(cfg.mode)
        # Outbound capture is a nat REDIRECT to 15001 in both modes.
        self.outbound_resolver = outbound_resolver or redirect_original_dst
        self.parent_pid = parent_pid  # children stop when the parent (worker 0) is gone
        # Loaded before the workers fork, it is one SSLContext for all: a session ticket one worker issued is
        # resumed by another. Kept across reloads while the certificate files stay the same.
        self.identity = identity
        self.certs_stamp = _stamp(cfg.certs) if identity is not None else None
        self.dispatch = Dispatch(cfg.snapshot, cfg.certs)
        self.reload_error = ""  # why the last reload was refused ("" when it went well)
        stats.register(c.name for c in cfg.snapshot.clusters)
        self.ready = False
        self.stopped = asyncio.Event()
        self.servers: list[asyncio.AbstractServer] = []
        self.contexts: list[Context] = []

    async def start(self, listeners: Listeners) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        redirect = cfg.mode == "REDIRECT"
        loop.set_exception_handler(quiet_relay_error)
        if self.log is not None:
            self.log.defer = loop.call_soon
        telemetry = Telemetry(cfg.snapshot, self.stats)
        served: list[tuple[Context, socket.socket]] = []
        if listeners.inbound is not None and listeners.outbound is not None:
            capture_ports = frozenset((listeners.inbound.getsockname()[1], listeners.outbound.getsockname()[1]))
            inbound = Context(loop, "inbound", self.inbound_resolver, self.dispatch.inbound, self.stats,
                              self.log, cfg.connect_timeout, capture_ports, redirect, telemetry)
            outbound = Context(loop, "outbound", self.outbound_resolver, self.dispatch.outbound, self.stats,
                               self.log, cfg.connect_timeout, capture_ports, redirect, telemetry)
            served = [(inbound, listeners.inbound), (outbound, listeners.outbound)]
        if listeners.gateway:  # a router: connections are for the listener's own address, nothing is captured
            settings = Edge(mesh_traits(cfg.snapshot.node.istio).private_is_internal)
            edge = Context(loop, "outbound", local_address, self.dispatch.gateway, self.stats, self.log,
                           cfg.connect_timeout, frozenset(), False, telemetry, edge=settings)
            served += [(edge, sock) for sock in listeners.gateway]
        self.contexts = list(dict.fromkeys(ctx for ctx, _ in served))
        self.configure(cfg.snapshot, self.dispatch, self.load_identity(cfg.snapshot), telemetry)
        for ctx, sock in served:
            self.servers.append(await loop.create_server(ctx.accept, sock=sock, backlog=BACKLOG))
        if listeners.health is not None:
            handler = health_handler(lambda: self.ready)
            self.servers.append(await loop.create_server(partial(HttpOnce, handler), sock=listeners.health))
        if listeners.stats is not None:
            handler = stats_handler(lambda: self.stats.prometheus(self.contexts[0].telemetry.build_tag))
            self.servers.append(await loop.create_server(partial(HttpOnce, handler), sock=listeners.stats))
        if listeners.admin is not None:
            handler = config_dump_handler(lambda: (self.dispatch, self.reload_error))
            self.servers.append(await loop.create_server(partial(HttpOnce, handler), sock=listeners.admin))
        self.interval = min(1.0, cfg.idle_timeout / 4)
        self._tick_handle = loop.call_later(self.interval, self._tick)
        self.ready = True

    def reload(self, snapshot: Snapshot) -> None:
        """Route new connections by `snapshot`; connections already open keep the route they took."""
        if snapshot.node.mode != self.cfg.mode:
            self.reload_error = (f"version {snapshot.version} refused: interception mode {snapshot.node.mode} "
                                 f"differs from the running {self.cfg.mode} (restart the proxy to change it)")
            return
        new_ports = set(gateway_ports(snapshot)) - set(gateway_ports(self.cfg.snapshot))
        if new_ports:
            self.reload_error = (f"version {snapshot.version} refused: it listens on new port(s) "
                                 f"{', '.join(map(str, sorted(new_ports)))}; a Gateway server's port must be a "
                                 "port of the gateway's Service (restart the lab to add one)")
            return
        try:
            dispatch = Dispatch(snapshot, self.cfg.certs)  # loads TLS files: origination, gateway credentials
            identity = self.load_identity(snapshot)  # a rotated certificate is taken with the new version
        except (OSError, ValueError) as err:
            self.reload_error = f"version {snapshot.version} refused: cannot load a certificate: {err}"
            return
        self.stats.register(c.name for c in snapshot.clusters)
        changed = {name for name, c in dispatch.clusters.items() if self.dispatch.clusters.get(name) != c}
        for ctx in self.contexts:
            ctx.pool.drain(changed)
        self.dispatch, self.reload_error = dispatch, ""
        self.configure(snapshot, dispatch, identity, Telemetry(snapshot, self.stats))

    def configure(self, snapshot: Snapshot, dispatch: Dispatch, identity: Identity | None,
                  telemetry: Telemetry) -> None:
        """What a snapshot decides for new connections: routing, telemetry, certificate, authorization."""
        for ctx in self.contexts:
            if ctx.edge is not None:
                ctx.choose = dispatch.gateway
            else:
                ctx.choose = dispatch.inbound if ctx.direction == "inbound" else dispatch.outbound
            ctx.telemetry, ctx.identity = telemetry, identity
            ctx.authz = snapshot.authorization if ctx.direction == "inbound" else ()
            ctx.routes.clear()

    def load_identity(self, snapshot: Snapshot) -> Identity | None:
        if self.cfg.certs is None:
            return None
        stamp = _stamp(self.cfg.certs)
        if self.identity is None or stamp != self.certs_stamp:
            node = snapshot.node
            self.identity = Identity(self.cfg.certs, spiffe_id(node.namespace, node.service_account))
            self.certs_stamp = stamp
        return self.identity

    def _tick(self) -> None:
        """Publish live byte counts, close idle connections, flush the access log, watch the parent."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self.cfg.idle_timeout
        for ctx in self.contexts:
            for conn in list(ctx.active):
                conn.measure()
                conn.publish()
                moved = conn.rx + conn.tx
                if moved != conn.idle_mark:
                    conn.idle_mark, conn.idle_since = moved, now
                elif now - conn.idle_since >= idle:
                    conn.idle_close()
        if self.log is not None:
            self.log.flush()
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.stopped.set()
        self._tick_handle = loop.call_later(self.interval, self._tick)

    async def close(self) -> None:
        self.ready = False
        self._tick_handle.cancel()
        for server in self.servers:
            server.close()
        for ctx in self.contexts:
            for conn in list(ctx.active):
                conn.close()
            for session in list(ctx.sessions):
                session.close()
            ctx.pool.close()
        # Closed transports report connection_lost from the loop: let them, so that each connection is logged.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE
        while any(ctx.active for ctx in self.contexts) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.log is not None:
            self.log.flush()
