"""A gateway's snapshot (istio-proxy in `router` mode): listeners and routes from the Gateway resources that select
its pod and the VirtualServices bound to them, over the same outbound clusters a sidecar has.

As istiod builds it (pilot/pkg/model/gateway.go, pilot/pkg/networking/core/gateway.go; MESH-FACTS §9):
- a Gateway server's port number is a port of the gateway's Service, and the listener is on its target port
  (80 → `0.0.0.0_8080`); a number no Service of the pod declares is listened on as it is;
- one route configuration per listener, `http.TARGETPORT`, with a virtual host `HOST:NUMBER` for every host of a
  VirtualService bound to the gateway (its `gateways` name it: NAMESPACE/NAME, or NAME in the VirtualService's own
  namespace) that the server's hosts admit; with none, `blackhole:NUMBER` without routes (404, NR);
- an HTTPS server (tls mode SIMPLE) gets a filter chain of its own, matched on the SNI (its hosts; any SNI for '*'),
  terminating TLS with the certificate of its credentialName (SDS `kubernetes://NAME`), with a route
  configuration of its own, `https.NUMBER.PORTNAME.GATEWAY.NAMESPACE` (pilot/pkg/model/gateway.go
  gatewayRDSRouteName); servers of an HTTP port with tls.httpsRedirect give virtual hosts that require TLS;
- routes go to the endpoints of `outbound|PORT||HOST` themselves, with auto mTLS to meshed pods.
A listener port of the Service without any server gets a listener without chains: a connection is closed at once,
as Envoy has no listener there. The edge headers (use_remote_address) are the proxy's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from netlab.mesh.registry import MeshService
from netlab.mesh.traffic import fqdn, gateway_names, host_matches, http_routes
from netlab.mesh.types import (
    CLUSTER_DOMAIN,
    HTTP_CONNECTION_MANAGER,
    SDS_KUBERNETES,
    ChainMatch,
    FilterChain,
    Listener,
    RouteConfig,
    Snapshot,
    VirtualHost,
)

HEALTH_PORT = 15021  # the status port: the proxy's own readiness listener, not a Gateway server


def selecting_gateways(labels: dict[str, str], resources: Sequence[Any]) -> list[Any]:
    """The Gateways whose selector the pod's labels satisfy, in any namespace (PILOT_SCOPE_GATEWAY_TO_NAMESPACE
    is off by default)."""
    return [r for r in resources if r.kind == "Gateway" and r.spec.selector
            and all(labels.get(k) == v for k, v in r.spec.selector.items())]


def credential_hosts(labels: dict[str, str], resources: Sequence[Any]) -> dict[str, tuple[str, ...]]:
    """The Secrets a gateway pod's HTTPS servers name (credentialName) and the hosts each certificate must cover:
    the servers' hosts, or for a '*' server the hosts of the VirtualServices bound to its Gateway."""
    found: dict[str, dict[str, None]] = {}
    for gateway in selecting_gateways(labels, resources):
        for server in gateway.spec.servers:
            if server.tls is None or not server.tls.credential_name:
                continue
            bound = [host for vs in _bound(gateway, resources)
                     for host in _admitted(server.hosts, vs, gateway.metadata.namespace) if host != "*"]
            hosts = found.setdefault(server.tls.credential_name, {})
            hosts.update(dict.fromkeys(_sni_hosts(server.hosts) or bound))
    # A '*' server without a VirtualService bound yet still needs a name in its certificate.
    return {name: tuple(hosts) or ("localhost",) for name, hosts in found.items()}


def router_snapshot(base: Snapshot, service_ports: dict[int, int], services: Sequence[MeshService],
                    resources: Sequence[Any], retry_503: bool,
                    cluster_name: Callable[[int, str, str], str]) -> Snapshot:
    """`base`: the pod's sidecar snapshot (its clusters are the gateway's); `service_ports`: service port → target
    port of the Services selecting the gateway pod."""
    node = base.node
    servers: dict[int, list[tuple[Any, Any]]] = {}  # listener port -> (gateway, server)
    for gateway in selecting_gateways(node.labels, resources):
        for server in gateway.spec.servers:
            number = server.port.number
            servers.setdefault(service_ports.get(number, number), []).append((gateway, server))
    ports_of = {s.hostname: [p.port for p in s.ports] for s in services}

    def virtual_hosts(chosen: list[tuple[Any, Any]]) -> tuple[VirtualHost, ...]:
        found = _virtual_hosts(chosen, resources, node.namespace, node.labels, retry_503, cluster_name,
                               lambda host: ports_of.get(host, ()))
        return found or (VirtualHost(f"blackhole:{chosen[0][1].port.number}", ("*",), ()),)

    listeners, routes = [], []
    for port in sorted({*(t for t in service_ports.values() if t != HEALTH_PORT), *servers}):
        chains: list[FilterChain] = []
        merged = _mergeable(servers.get(port, []))
        if merged and merged[0][1].port.protocol == "HTTPS":
            for gateway, server in merged:  # a chain per server, picked by SNI, each with its own routes
                name = (f"https.{server.port.number}.{server.port.name}.{gateway.metadata.name}."
                        f"{gateway.metadata.namespace}")
                routes.append(RouteConfig(name, virtual_hosts([(gateway, server)])))
                match = ChainMatch(transport_protocol="tls", server_names=_sni_hosts(server.hosts))
                chains.append(FilterChain(name, match, HTTP_CONNECTION_MANAGER, route=name,
                                          credential=SDS_KUBERNETES + server.tls.credential_name))
        elif merged:
            name = f"http.{port}"
            routes.append(RouteConfig(name, virtual_hosts(merged)))
            chains.append(FilterChain("", ChainMatch(), HTTP_CONNECTION_MANAGER, route=name))
        listeners.append(Listener(f"0.0.0.0_{port}", "0.0.0.0", port, "gateway", tuple(chains)))
    admin = tuple(x for x in base.listeners if x.direction == "")
    router = replace(node, type="router", id=f"router~{node.ip}~{node.pod.rpartition('/')[2]}.{node.namespace}~"
                                             f"{node.namespace}.svc.{CLUSTER_DOMAIN}")
    return replace(base, node=router, listeners=(*listeners, *admin), routes=tuple(routes), authorization=())


def _virtual_hosts(servers: list[tuple[Any, Any]], resources: Sequence[Any], namespace: str, labels: dict[str, str],
                   retry_503: bool, cluster_name: Callable[[int, str, str], str],
                   ports_of: Callable[[str], Sequence[int]]) -> tuple[VirtualHost, ...]:
    found: dict[str, VirtualHost] = {}
    for gateway, server in servers:
        full = f"{gateway.metadata.namespace}/{gateway.metadata.name}"
        number = server.port.number
        redirect = server.tls is not None and server.tls.https_redirect
        for vs in _bound(gateway, resources):
            for host in _admitted(server.hosts, vs, gateway.metadata.namespace):
                name = f"{host}:{number}"
                if name not in found:
                    routes = http_routes(vs, number, ports_of, namespace, labels, retry_503, cluster_name,
                                         gateway=full)
                    found[name] = VirtualHost(name, _domains(host), routes, include_request_attempt_count=True)
                if redirect:
                    found[name] = replace(found[name], require_tls=True)
        if not redirect:
            continue
        # A redirecting server's hosts redirect with or without a VirtualService (buildGatewayHTTPRouteConfig).
        for host in _sni_hosts(server.hosts) or ("*",):
            name = f"{host}:{number}"
            found[name] = replace(found[name], require_tls=True) if name in found else VirtualHost(
                name, _domains(host), (), include_request_attempt_count=True, require_tls=True)
    return tuple(found.values())


def _bound(gateway: Any, resources: Sequence[Any]) -> list[Any]:
    """The VirtualServices bound to a Gateway: their `gateways` name it (NAMESPACE/NAME, or NAME in the
    VirtualService's own namespace)."""
    full = f"{gateway.metadata.namespace}/{gateway.metadata.name}"
    return [vs for vs in resources
            if vs.kind == "VirtualService" and full in gateway_names(vs.spec.gateways, vs.metadata.namespace)]


def _domains(host: str) -> tuple[str, ...]:
    return ("*",) if host == "*" else (host, f"{host}:*")


def _mergeable(servers: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The servers one listener takes: those whose protocol can share it with the first one (HTTP, HTTP2 and GRPC
    merge; HTTPS only with HTTPS). Istio's MergeGateways skips the others with a warning."""
    if not servers:
        return []
    secure = servers[0][1].port.protocol == "HTTPS"
    return [(g, s) for g, s in servers if (s.port.protocol == "HTTPS") == secure]


def _sni_hosts(hosts: list[str]) -> tuple[str, ...]:
    """The server names an HTTPS server's filter chain matches: its hosts without their namespace; none (any SNI)
    when one of them is '*' (Istio's getSNIHostsForServer)."""
    names = tuple(dict.fromkeys(h.rpartition("/")[2] for h in hosts))
    return () if "*" in names else names


def _admitted(server_hosts: list[str], vs: Any, gateway_namespace: str) -> list[str]:
    """The VirtualService's hosts a server serves (the narrower of the two where one is a wildcard)."""
    found = []
    for entry in server_hosts:
        ns, _, pattern = entry.rpartition("/")
        where = gateway_namespace if ns == "." else ns
        if where not in ("", "*", vs.metadata.namespace):
            continue
        for host in vs.spec.hosts:
            host = host if "." in host or host == "*" else fqdn(host, vs.metadata.namespace)
            if host_matches(pattern, host):
                found.append(host)
            elif host_matches(host, pattern):
                found.append(pattern)
    return list(dict.fromkeys(found))
