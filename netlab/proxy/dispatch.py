"""Routing from a snapshot: which listener, filter chain and cluster an original destination takes, as Envoy
matches them, and the Route a connection then follows.

Outbound (15001, virtualOutbound with use_original_dst): the listener bound to ADDRESS:PORT (a service VIP), else
the one on 0.0.0.0:PORT, else virtualOutbound's own chains (its blackhole for port 15001, its catch-all). Inbound
(15006, virtualInbound): the chain whose destination_port is the port, else the passthrough chain.

The sidecar relays bytes only (no HTTP parsing yet): of a listener's chains it takes the TCP one; on a listener
whose only traffic chain is HTTP (a service port named http*), the route's virtual host is chosen by the
destination address among its domains, which is what Envoy does when the client addresses the service by its IP
(the Host header is then IP:PORT), and by the catch-all (allow_any / block_all) otherwise.
"""

from __future__ import annotations

from netlab.mesh.types import HTTP_CONNECTION_MANAGER, TCP_PROXY, FilterChain, Listener, Snapshot
from netlab.proxy.lb import LoadBalancer
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import BLACKHOLE, Route, refused


class Dispatch:
    """A snapshot turned into lookup tables; one per worker, rebuilt on every reload."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.transparent = snapshot.node.mode == "TPROXY"
        self.clusters = {c.name: c for c in snapshot.clusters}
        self.balancers = {c.name: LoadBalancer.of(c) for c in snapshot.clusters
                          if c.type in ("EDS", "STATIC", "STRICT_DNS") and c.endpoints}
        routes = {r.name: r for r in snapshot.routes}
        self.by_address: dict[Addr, str | dict[str, str]] = {}
        self.by_port: dict[int, str | dict[str, str]] = {}
        self.outbound_default = BLACKHOLE
        self.outbound_blackhole_port = -1
        self.inbound_by_port: dict[int, str] = {}
        self.inbound_default = BLACKHOLE
        for listener in snapshot.listeners:
            if listener.name == "virtualOutbound":
                self._virtual_outbound(listener)
            elif listener.name == "virtualInbound":
                self._virtual_inbound(listener)
            elif listener.direction == "outbound":
                target = self._target(listener, routes)
                if listener.address == "0.0.0.0":
                    self.by_port.setdefault(listener.port, target)
                else:
                    self.by_address.setdefault((listener.address, listener.port), target)

    # --- building ---------------------------------------------------------------------------------------------

    def _virtual_outbound(self, listener: Listener) -> None:
        for chain in listener.filter_chains:
            if chain.match.destination_port is not None:
                self.outbound_blackhole_port = chain.match.destination_port
            else:
                self.outbound_default = chain.cluster

    def _virtual_inbound(self, listener: Listener) -> None:
        for chain in listener.filter_chains:
            if chain.filter != TCP_PROXY or chain.cluster == BLACKHOLE:
                continue
            port = chain.match.destination_port
            if port is None:
                self.inbound_default = chain.cluster
            else:
                self.inbound_by_port.setdefault(port, chain.cluster)
        for chain in listener.filter_chains:  # ports served by an HTTP chain only: its route's cluster
            port = chain.match.destination_port
            if chain.filter == HTTP_CONNECTION_MANAGER and port is not None and port not in self.inbound_by_port:
                route = self.snapshot.route(chain.route)
                if route is not None and route.virtual_hosts and route.virtual_hosts[0].routes:
                    self.inbound_by_port[port] = route.virtual_hosts[0].routes[0].cluster

    def _target(self, listener: Listener, routes: dict) -> str | dict[str, str]:
        """A listener's TCP chain's cluster; for an HTTP-only listener, cluster by destination address."""
        tcp: FilterChain | None = next((c for c in listener.filter_chains if c.filter == TCP_PROXY), None)
        http = next((c for c in listener.filter_chains if c.filter == HTTP_CONNECTION_MANAGER), None)
        if http is None or (tcp is not None and tcp.cluster != "PassthroughCluster"):
            return tcp.cluster if tcp is not None else BLACKHOLE
        by_ip: dict[str, str] = {}
        route = routes.get(http.route)
        for vhost in route.virtual_hosts if route else ():
            cluster = vhost.routes[0].cluster if vhost.routes and vhost.routes[0].cluster else BLACKHOLE
            for domain in vhost.domains:
                by_ip.setdefault(domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain, cluster)
        return by_ip

    # --- lookups ----------------------------------------------------------------------------------------------

    def outbound(self, orig: Addr) -> Route:
        if orig[1] == self.outbound_blackhole_port:
            return refused("outbound", "virtualOutbound-blackhole")
        target = self.by_address.get(orig) or self.by_port.get(orig[1]) or self.outbound_default
        cluster = target if isinstance(target, str) else target.get(orig[0]) or target.get("*", BLACKHOLE)
        return self._route("outbound", cluster, orig)

    def inbound(self, orig: Addr) -> Route:
        cluster = self.inbound_by_port.get(orig[1], self.inbound_default)
        return self._route("inbound", cluster, orig)

    def _route(self, direction: str, name: str, orig: Addr) -> Route:
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
        return Route(direction, name, lb=balancer, bind_ip=cluster.upstream_bind or None, transparent=transparent)
