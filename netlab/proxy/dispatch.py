"""Routing from a snapshot: which listener and filter chains an original destination takes, as Envoy matches
them, and the Route a connection then follows.

Outbound (15001, virtualOutbound with use_original_dst): the listener bound to ADDRESS:PORT (a service VIP), else
the one on 0.0.0.0:PORT, else virtualOutbound's own chains (its blackhole for port 15001, its catch-all). Inbound
(15006, virtualInbound): the chains whose destination_port is the port, else the passthrough chains.

Of a listener's chains, a TCP chain alone relays bytes to its cluster; an HTTP connection manager chain alone
(an inbound port declared HTTP) parses every connection as HTTP; both (sniffed ports, whose HTTP chain matches
the application protocols http/1.1 and h2c) go to HTTP when the connection's first bytes are an HTTP request and
to the TCP chain otherwise, as http_inspector decides.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, replace

from netlab.mesh.types import (
    CREDENTIALS,
    HTTP_CONNECTION_MANAGER,
    SDS_KUBERNETES,
    TCP_PROXY,
    Listener,
    RouteConfig,
    Snapshot,
)
from netlab.proxy.http.router import HttpRouter
from netlab.proxy.lb import LoadBalancer
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import BLACKHOLE, Route, TlsChain, refused
from netlab.proxy.tls import credential_context, origination_context

ROUTE_CACHE = 4096  # routes kept (passthrough clusters make one per original destination)


@dataclass(frozen=True, slots=True)
class TlsChainConfig:
    alpn: frozenset[str]
    terminate: bool
    http: HttpRouter | None
    cluster: str
    server_names: tuple[str, ...] = ()
    context: ssl.SSLContext | None = None  # a gateway credential's (SIMPLE TLS)


@dataclass(frozen=True, slots=True)
class Chains:
    """A listener's (or an inbound port's) traffic chains: the plaintext ones (a TCP chain's cluster, an HTTP
    chain's routes; none under STRICT) and the TLS ones."""

    tcp: str | None = None
    http: HttpRouter | None = None
    tls: tuple[TlsChainConfig, ...] = ()
    plaintext: bool = True


class Dispatch:
    """A snapshot turned into lookup tables; one per worker, rebuilt on every reload."""

    def __init__(self, snapshot: Snapshot, certs: str | None = None) -> None:
        """`certs`: the proxy's certificate directory, where a gateway's credentials are (credentials/NAME/)."""
        self.snapshot = snapshot
        self.certs = certs
        self.transparent = snapshot.node.mode == "TPROXY"
        self.clusters = {c.name: c for c in snapshot.clusters}
        self.balancers = {c.name: LoadBalancer.of(c) for c in snapshot.clusters
                          if c.type in ("EDS", "STATIC", "STRICT_DNS") and c.endpoints}
        # SIMPLE/MUTUAL TLS origination; files that cannot be loaded refuse the reload (OSError, ssl.SSLError).
        self.originations = {c.name: origination_context(c.tls_files, c.sni, c.tls_skip_verify)
                             for c in snapshot.clusters if c.tls_mode in ("SIMPLE", "MUTUAL")}
        self.route_configs = {r.name: r for r in snapshot.routes}
        self._routes: dict[tuple[str, str, Addr], Route] = {}
        self.by_address: dict[Addr, Chains] = {}
        self.by_port: dict[int, Chains] = {}
        self.outbound_default = BLACKHOLE
        self.outbound_blackhole_port = -1
        self.inbound_by_port: dict[int, Chains] = {}
        self.inbound_default = Chains(BLACKHOLE)
        self.gateway_by_port: dict[int, Chains] = {}
        for listener in snapshot.listeners:
            if listener.direction == "gateway":
                if listener.filter_chains:
                    self.gateway_by_port[listener.port] = self._chains(listener.filter_chains, "outbound")
            elif listener.name == "virtualOutbound":
                self._virtual_outbound(listener)
            elif listener.name == "virtualInbound":
                self._virtual_inbound(listener)
            elif listener.direction == "outbound":
                chains = self._chains(listener.filter_chains, "outbound")
                if listener.address == "0.0.0.0":
                    self.by_port.setdefault(listener.port, chains)
                else:
                    self.by_address.setdefault((listener.address, listener.port), chains)

    # --- building ---------------------------------------------------------------------------------------------

    def _virtual_outbound(self, listener: Listener) -> None:
        for chain in listener.filter_chains:
            if chain.match.destination_port is not None:
                self.outbound_blackhole_port = chain.match.destination_port
            else:
                self.outbound_default = chain.cluster

    def _virtual_inbound(self, listener: Listener) -> None:
        by_port: dict[int | None, list] = {}
        for chain in listener.filter_chains:
            if chain.cluster == BLACKHOLE:  # virtualInbound-blackhole (15006 itself: the loop guard's job)
                continue
            by_port.setdefault(chain.match.destination_port, []).append(chain)
        for port, chains in by_port.items():
            if port is None:
                self.inbound_default = self._chains(chains, "inbound")
            else:
                self.inbound_by_port[port] = self._chains(chains, "inbound")

    def _chains(self, chains: tuple | list, direction: str) -> Chains:
        plain = [c for c in chains if c.match.transport_protocol != "tls"]
        tcp = next((c.cluster for c in plain if c.filter == TCP_PROXY), None)
        http = next((c.route for c in plain if c.filter == HTTP_CONNECTION_MANAGER and c.route), None)
        tls = tuple(TlsChainConfig(frozenset(c.match.application_protocols), c.tls or bool(c.credential),
                                   self._router(c.route, direction) if c.filter == HTTP_CONNECTION_MANAGER else None,
                                   c.cluster, c.match.server_names, self._credential(c.credential))
                    for c in chains if c.match.transport_protocol == "tls")
        return Chains(tcp, self._router(http, direction) if http else None, tls, bool(plain))

    def _credential(self, name: str) -> ssl.SSLContext | None:
        """SDS `kubernetes://NAME`: the files the lab wrote into the proxy's certificate directory; files that cannot
        be loaded refuse the reload (OSError, ssl.SSLError)."""
        if not name:
            return None
        if self.certs is None:
            raise ValueError(f"the secret {name} needs the proxy's certificate directory (--certs DIR)")
        return credential_context(os.path.join(self.certs, CREDENTIALS, name.removeprefix(SDS_KUBERNETES)))

    def _router(self, name: str, direction: str) -> HttpRouter:
        config = self.route_configs.get(name)
        if config is None:
            config = RouteConfig(name, ())  # a route configuration not sent (yet): every request gets 404 NR
        return HttpRouter(config, lambda cluster, orig: self._route(direction, cluster, orig), self.clusters)

    # --- lookups ----------------------------------------------------------------------------------------------

    def outbound(self, orig: Addr) -> Route:
        if orig[1] == self.outbound_blackhole_port:
            return refused("outbound", "virtualOutbound-blackhole")
        chains = self.by_address.get(orig) or self.by_port.get(orig[1])
        if chains is None:
            return self._route("outbound", self.outbound_default, orig)
        return self._follow("outbound", chains, orig)

    def inbound(self, orig: Addr) -> Route:
        return self._follow("inbound", self.inbound_by_port.get(orig[1], self.inbound_default), orig)

    def gateway(self, local: Addr) -> Route:
        """A gateway's listener: its Gateway servers' routes; a port without a server has no filter chain."""
        chains = self.gateway_by_port.get(local[1])
        if chains is None:
            return refused("outbound", "filter_chain_not_found")
        return self._follow("outbound", chains, local)

    def _follow(self, direction: str, chains: Chains, orig: Addr) -> Route:
        if not chains.plaintext:
            route = Route(direction, "", plaintext=False)
        elif chains.http is None:
            route = self._route(direction, chains.tcp or BLACKHOLE, orig)
        elif chains.tcp is None:
            route = Route(direction, "", http=chains.http)
        else:
            route = replace(self._route(direction, chains.tcp, orig), http=chains.http, sniff=True)
        if not chains.tls:
            return route
        tls = tuple(TlsChain(c.alpn, c.terminate, c.http, self._route(direction, c.cluster, orig) if c.cluster
                             else None, c.server_names, c.context) for c in chains.tls)
        return replace(route, tls=tls)

    def _route(self, direction: str, name: str, orig: Addr) -> Route:
        """Routes are immutable and looked up for every connection and HTTP request: each is made once."""
        key = (direction, name, orig)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= ROUTE_CACHE:
                self._routes.clear()
            route = self._routes[key] = self._new_route(direction, name, orig)
        return route

    def _new_route(self, direction: str, name: str, orig: Addr) -> Route:
        cluster = self.clusters.get(name)
        if cluster is None:  # counted under BlackHoleCluster: a missing cluster has no stats of its own
            return refused(direction, f"cluster_not_found:{name}", BLACKHOLE, "NC")
        if cluster.type == "ORIGINAL_DST":
            if direction == "inbound" and self.transparent:
                return Route(direction, name, orig, transparent=True)
            return Route(direction, name, orig, bind_ip=cluster.upstream_bind or None)
        balancer = self.balancers.get(name)
        if balancer is None:  # BlackHoleCluster, or a cluster without endpoints
            return refused(direction, "no_healthy_upstream", name, "UH")
        transparent = direction == "inbound" and self.transparent
        return Route(direction, name, lb=balancer, bind_ip=cluster.upstream_bind or None, transparent=transparent,
                     sni=cluster.sni, origination=self.originations.get(name))
