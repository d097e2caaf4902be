"""The control plane: a lab's plan and Istio resources -> one configuration snapshot per sidecar.

What istiod's sidecar config generation does (pilot/pkg/networking/core: listener_builder.go, listener.go,
listener_inbound.go, cluster_builder.go, httproute.go), reduced to what a lab sidecar serves:
- virtualOutbound 0.0.0.0:15001 (use_original_dst): chain virtualOutbound-blackhole for destination port 15001,
  chain virtualOutbound-catchall-tcp to PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY);
- per service port: TCP and sniffed ports a listener VIP_PORT (bind_to_port false) whose TCP chain goes to
  outbound|PORT||HOST (a sniffed port also gets an HTTP chain, route HOST:PORT); HTTP ports one listener
  0.0.0.0_PORT with route PORT: a virtual host per service (its domains as a pod of this namespace may call it)
  and the catch-all allow_any (PassthroughCluster) or block_all (direct 502);
- virtualInbound 0.0.0.0:15006: chain virtualInbound-blackhole for 15006, a chain 0.0.0.0_TARGETPORT per port a
  Service selecting this pod declares (cluster inbound|TARGETPORT||), and the passthrough chains virtualInbound and
  virtualInbound-catchall-http (InboundPassthroughCluster, ...Ipv4 before 1.23);
- clusters named as Istio names them (model/service.go BuildSubsetKey), endpoints the ready pods' IP:targetPort,
  load balancing ROUND_ROBIN up to 1.13 and LEAST_REQUEST from 1.14.
A Sidecar resource (workload selector, else namespace-wide, else the root namespace's) limits which hosts the
proxy knows (egress hosts) and may override the outbound traffic policy. mTLS chains come with the security work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from netlab.mesh.authz import authorization
from netlab.mesh.gateway import router_snapshot
from netlab.mesh.registry import (
    AUTO,
    HTTP,
    UDP,
    MeshPort,
    MeshService,
    kubernetes_services,
    protocol_of,
    service_entry_services,
)
from netlab.mesh.security import DISABLE, PERMISSIVE, STRICT, MtlsPolicy, mtls_policy
from netlab.mesh.traffic import (
    cluster_settings,
    destination_rule_for,
    http_routes,
    retry_policy,
    subsets_of,
    tcp_cluster,
    virtual_service_for,
)
from netlab.mesh.types import (
    ANY_PATH,
    CLUSTER_DOMAIN,
    HTTP_CONNECTION_MANAGER,
    ROOT_NAMESPACE,
    TCP_PROXY,
    ChainMatch,
    Cluster,
    Endpoint,
    FilterChain,
    Listener,
    Node,
    RetryPolicy,
    Route,
    RouteConfig,
    Snapshot,
    VirtualHost,
)
from netlab.mesh.versions import MeshTraits, mesh_traits

if TYPE_CHECKING:  # the proxy builds standalone snapshots: nothing here may import pydantic at run time
    from netlab.model.istio import Resource, Sidecar, VirtualService
    from netlab.plan import LabPlan, PodPlan

OUTBOUND_PORT, INBOUND_PORT, HEALTH_PORT, STATS_PORT = 15001, 15006, 15021, 15090
PASSTHROUGH, BLACKHOLE = "PassthroughCluster", "BlackHoleCluster"
PASSTHROUGH_BIND = "127.0.0.6"
CONNECT_TIMEOUT = 10.0  # meshConfig.connectTimeout default
HTTP_ALPN = ("http/1.1", "h2c")
# What a server sidecar's mTLS chains match (pilot util.go, listener.go).
ISTIO_HTTP_ALPN = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
ISTIO_TCP_ALPN = ("istio-peer-exchange", "istio")


@dataclass(frozen=True)
class ProxySpec:
    """The sidecar a snapshot is for."""

    key: str  # the lab member
    name: str
    namespace: str
    ip: str
    istio: str
    mode: str = "REDIRECT"
    service_account: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    inbound_passthrough: bool | None = None  # PILOT_ENABLE_INBOUND_PASSTHROUGH; False: 1.9 targets on 1.10-1.20
    workload: str = ""  # the Deployment; "" means the pod's name

    @classmethod
    def of(cls, pod: PodPlan) -> ProxySpec:
        assert pod.sidecar is not None
        return cls(pod.key, pod.name, pod.namespace, str(pod.ip), pod.sidecar.istio, pod.sidecar.interception,
                   pod.service_account, dict(pod.labels), pod.sidecar.inbound_passthrough, pod.workload)


def outbound_cluster_name(port: int, host: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster_name(port: int) -> str:
    """`inbound|PORT||` since 1.8.1 (release-1.9 util.go BuildInboundSubsetKey)."""
    return f"inbound|{port}||"


def snapshots(plan: LabPlan, resources: Sequence[Resource], version: int,
              ready: frozenset[str] | None = None) -> dict[str, Snapshot]:
    """A snapshot for every pod with a sidecar. `ready`: the pods whose endpoints are sent (None: all)."""
    services = registry(plan, resources, ready)
    found = {}
    for key, pod in plan.pods.items():
        if pod.sidecar is None:
            continue
        ports: dict[int, str] = {}  # target port -> protocol, of the Services selecting this pod
        for svc in plan.services.values():
            if key in svc.endpoints:
                for p in svc.ports:
                    ports.setdefault(p.target_port, protocol_of(p.port, p.name, p.app_protocol))
        if pod.sidecar.mode == "router":  # a gateway: Sidecar resources and inbound ports do not apply
            base = build_snapshot(ProxySpec.of(pod), services, {}, version=version, resources=resources)
            served = {p.port: p.target_port for s in plan.services.values() if key in s.endpoints for p in s.ports}
            found[key] = router_snapshot(base, served, services, resources, mesh_traits(pod.sidecar.istio).retry_503,
                                         outbound_cluster_name)
            continue
        scope = sidecar_scope(pod.namespace, pod.labels, resources)
        mode = plan.mesh_config.outbound_traffic_policy.mode
        if scope is not None and scope.spec.outbound_traffic_policy is not None:
            mode = scope.spec.outbound_traffic_policy.mode
        found[key] = build_snapshot(ProxySpec.of(pod), services, ports, mode, scope, version, resources)
    return found


def registry(plan: LabPlan, resources: Sequence[Resource], ready: frozenset[str] | None = None) -> list[MeshService]:
    resolve: dict[str, list[str]] = {name: [str(e.ip)] for name, e in plan.externals.items()}
    services = kubernetes_services(plan, ready, resources)
    for resource in resources:
        if resource.kind == "ServiceEntry":
            services += service_entry_services(resource, resolve)
    return services


def build_snapshot(proxy: ProxySpec, services: Sequence[MeshService], inbound_ports: dict[int, str],
                   outbound_mode: str = "ALLOW_ANY", scope: Sidecar | None = None, version: int = 0,
                   resources: Sequence[Resource] = (), mtls: bool = True) -> Snapshot:
    """`resources`: the VirtualServices, DestinationRules and PeerAuthentications (any other kind is ignored
    here). `mtls`: False for a proxy without a certificate (mTLS DISABLE: plaintext chains only)."""
    traits = mesh_traits(proxy.istio)
    visible = [(s, port) for s in services if exported_to(s, proxy.namespace) for port in s.ports
               if port.protocol != UDP and imported(s, port, scope)]
    traffic = [r for r in resources if r.kind in ("VirtualService", "DestinationRule")]
    outbound, routes, clusters = _outbound(visible, proxy, traits, outbound_mode, traffic)
    # The inbound clusters' service metadata: the first service with this pod as an endpoint of the port.
    served = {e.ports.get(p.port, p.target_port): s.hostname for s in reversed(services) for e in s.endpoints
              if e.pod == proxy.key for p in s.ports}
    policy = mtls_policy(proxy.namespace, proxy.labels, resources) if mtls else MtlsPolicy(DISABLE)
    inbound, inbound_routes, inbound_clusters = _inbound(proxy, inbound_ports, traits, served, policy)
    node = Node(id=f"sidecar~{proxy.ip}~{proxy.name}.{proxy.namespace}~{proxy.namespace}.svc.{CLUSTER_DOMAIN}",
                pod=proxy.key, namespace=proxy.namespace, ip=proxy.ip, istio=proxy.istio, mode=proxy.mode,
                service_account=proxy.service_account, labels=dict(proxy.labels),
                workload=proxy.workload or proxy.name)
    static_clusters = [
        Cluster(BLACKHOLE, "STATIC", connect_timeout=CONNECT_TIMEOUT),
        Cluster(PASSTHROUGH, "ORIGINAL_DST", "CLUSTER_PROVIDED", CONNECT_TIMEOUT),
        Cluster(traits.inbound_passthrough_cluster, "ORIGINAL_DST", "CLUSTER_PROVIDED", CONNECT_TIMEOUT,
                PASSTHROUGH_BIND),
    ]
    return Snapshot(version, node, (*outbound, *inbound, *_admin_listeners()), (*routes, *inbound_routes),
                    (*static_clusters, *clusters, *inbound_clusters),
                    authorization(proxy.namespace, proxy.labels, resources))


# --- scope: which hosts a proxy knows ---------------------------------------------------------------------------


def sidecar_scope(namespace: str, labels: dict[str, str], resources: Iterable[Resource]) -> Sidecar | None:
    """The Sidecar resource that applies to a pod: one whose workloadSelector matches, else its namespace's
    without a selector, else the root namespace's without a selector (first one wins, as istiod's oldest)."""
    sidecars: list[Any] = [r for r in resources if r.kind == "Sidecar"]
    for s in sidecars:
        selector = s.spec.workload_selector
        if s.metadata.namespace == namespace and selector is not None and all(
                labels.get(k) == v for k, v in selector.labels.items()):
            return s
    for where in (namespace, ROOT_NAMESPACE):
        for s in sidecars:
            if s.metadata.namespace == where and s.spec.workload_selector is None:
                return s
    return None


def exported_to(service: MeshService, namespace: str) -> bool:
    return not service.export_to or "*" in service.export_to or (
        "." in service.export_to and service.namespace == namespace) or namespace in service.export_to


def imported(service: MeshService, port: MeshPort, scope: Sidecar | None) -> bool:
    """Whether the Sidecar's egress hosts (NAMESPACE/HOST, with '.', '*' and '~', and *.suffix hosts) import it."""
    if scope is None:
        return True
    for listener in scope.spec.egress:
        if listener.port is not None and listener.port.number != port.port:
            continue
        for entry in listener.hosts:
            ns, _, host = entry.partition("/")
            ns = scope.metadata.namespace if ns == "." else ns
            if ns != "*" and ns != service.namespace:
                continue
            if host == "*" or host == service.hostname or (
                    host.startswith("*.") and service.hostname.endswith(host[1:])):
                return True
    return False


# --- outbound ---------------------------------------------------------------------------------------------------


def _outbound(visible: list[tuple[MeshService, MeshPort]], proxy: ProxySpec, traits: MeshTraits,
              mode: str, traffic: Sequence[Resource]) -> tuple[list[Listener], list[RouteConfig], list[Cluster]]:
    namespace = proxy.namespace
    listeners: dict[tuple[str, int], Listener] = {}
    http_hosts: dict[int, list[VirtualHost]] = {}
    routes: list[RouteConfig] = []
    clusters: dict[str, Cluster] = {}
    for service, port in visible:
        cluster = outbound_cluster_name(port.port, service.hostname)
        rule = destination_rule_for(service.hostname, namespace, service.namespace, traffic)
        owner = f"{rule.metadata.name}.{rule.metadata.namespace}" if rule else ""
        settings = cluster_settings(rule.spec.traffic_policy if rule else None, traits.default_lb)
        clusters.setdefault(cluster, _outbound_cluster(cluster, service, port, settings, owner))
        vs = virtual_service_for(service.hostname, namespace, traffic)
        for subset, labels, policy in subsets_of(rule):
            name = outbound_cluster_name(port.port, service.hostname, subset)
            clusters.setdefault(name, _outbound_cluster(name, service, port, cluster_settings(
                policy, traits.default_lb), owner, labels))
        vhost = VirtualHost(f"{service.hostname}:{port.port}", _domains(service, port.port, namespace, traits),
                            _service_routes(service, port, proxy, traits, vs), include_request_attempt_count=True)
        if port.protocol == HTTP:
            http_hosts.setdefault(port.port, []).append(vhost)
            continue
        tcp_route = tcp_cluster(vs, port.port, [p.port for p in service.ports], proxy.namespace, proxy.labels,
                                outbound_cluster_name) if vs is not None else None
        tcp = FilterChain("", ChainMatch(), TCP_PROXY, cluster=tcp_route or cluster)
        chains: tuple[FilterChain, ...] = (tcp,)
        if port.protocol == AUTO:
            sniffed = FilterChain("", ChainMatch(transport_protocol="raw_buffer", application_protocols=HTTP_ALPN),
                                  HTTP_CONNECTION_MANAGER, route=vhost.name)
            chains = (sniffed, tcp)
            routes.append(RouteConfig(vhost.name, (vhost,)))
        for address in service.addresses or ("0.0.0.0",):
            listeners.setdefault((address, port.port), Listener(f"{address}_{port.port}", address, port.port,
                                                                "outbound", chains, bind_to_port=False))
    catch_all = PASSTHROUGH if mode == "ALLOW_ANY" else BLACKHOLE
    for number, vhosts in sorted(http_hosts.items()):
        if mode == "ALLOW_ANY":
            fallback = VirtualHost("allow_any", ("*",), (Route("allow_any", ANY_PATH, PASSTHROUGH),), True)
        else:
            fallback = VirtualHost("block_all", ("*",), (Route("block_all", ANY_PATH, "", direct_response=502),), True)
        # Sorted by name, the catch-all last (httproute.go, util.SortVirtualHosts).
        routes.append(RouteConfig(str(number), (*sorted(vhosts, key=lambda v: v.name), fallback)))
        chains = (FilterChain("", ChainMatch(transport_protocol="raw_buffer", application_protocols=HTTP_ALPN),
                              HTTP_CONNECTION_MANAGER, route=str(number)),
                  # appendListenerFallthroughRouteForCompleteListener: non-HTTP bytes follow the catch-all.
                  FilterChain("PassthroughFilterChain", ChainMatch(), TCP_PROXY, cluster=catch_all))
        listeners.setdefault(("0.0.0.0", number), Listener(f"0.0.0.0_{number}", "0.0.0.0", number, "outbound",
                                                           chains, bind_to_port=False))
    virtual = Listener("virtualOutbound", "0.0.0.0", OUTBOUND_PORT, "outbound", (
        FilterChain("virtualOutbound-blackhole", ChainMatch(destination_port=OUTBOUND_PORT), TCP_PROXY,
                    cluster=BLACKHOLE),
        FilterChain("virtualOutbound-catchall-tcp", ChainMatch(), TCP_PROXY, cluster=catch_all),
    ), use_original_dst=True)
    return [virtual, *listeners.values()], routes, list(clusters.values())


def _service_routes(service: MeshService, port: MeshPort, proxy: ProxySpec, traits: MeshTraits,
                    vs: VirtualService | None) -> tuple[Route, ...]:
    """The service's VirtualService routes, or BuildDefaultHTTPOutboundRoute: the service's cluster, no timeout,
    Istio's default retry policy (2 retries on connect failures and, until 1.23, on a 503)."""
    decorator = f"{service.hostname}:{port.port}/*" if traits.default_tracer else ""
    if vs is not None and vs.spec.http:
        found = http_routes(vs, port.port, [p.port for p in service.ports], proxy.namespace, proxy.labels,
                            traits.retry_503, outbound_cluster_name)
        return tuple(replace(r, decorator=decorator) for r in found)
    cluster = outbound_cluster_name(port.port, service.hostname)
    return (Route("default", ANY_PATH, cluster, retry=retry_policy(None, traits.retry_503), decorator=decorator),)


def _outbound_cluster(name: str, service: MeshService, port: MeshPort, settings: dict[str, Any], rule: str,
                      subset_labels: dict[str, str] | None = None) -> Cluster:
    """A service port's cluster, or a subset's: the endpoints whose labels the subset names."""
    if service.resolution == "NONE":
        return Cluster(name, "ORIGINAL_DST", "CLUSTER_PROVIDED", CONNECT_TIMEOUT, destination_rule=rule,
                       service=service.hostname)
    endpoints = tuple(Endpoint(e.address, e.ports.get(port.port, port.target_port), pod=e.pod, labels=e.labels,
                               workload=e.workload, tls_mode="istio" if port.port in e.mtls_ports else "",
                               identity=e.identity)
                      for e in service.endpoints
                      if subset_labels is None or all(e.labels.get(k) == v for k, v in subset_labels.items()))
    kind = "STRICT_DNS" if service.resolution == "DNS" else "EDS"
    subset = name.split("|")[2]
    # Istio's mTLS SNI (BuildDNSSrvSubsetKey); TLS origination (SIMPLE, MUTUAL) presents the host unless told.
    originating = settings.get("tls_mode") in ("SIMPLE", "MUTUAL")
    sni = service.hostname if originating else f"outbound_.{port.port}_.{subset}_.{service.hostname}"
    return Cluster(name, kind, endpoints=endpoints, destination_rule=rule, service=service.hostname,
                   **{"connect_timeout": CONNECT_TIMEOUT, "sni": sni, **settings})


def _domains(service: MeshService, port: int, namespace: str, traits: MeshTraits) -> tuple[str, ...]:
    """What a pod in `namespace` may put in its Host header for the service (httproute.go
    generateVirtualHostDomains): the hostname, the short names its search domains allow, the address; each also
    with :PORT up to 1.15."""
    host = service.hostname
    names = [host]
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if host.endswith(suffix):
        name, _, ns = host.removesuffix(suffix).partition(".")
        short = [name, f"{name}.{ns}.svc", f"{name}.{ns}"] if ns == namespace else [f"{name}.{ns}",
                                                                                   f"{name}.{ns}.svc"]
        names += short
    names += list(service.addresses)
    if not traits.vhost_domains_with_port:
        return tuple(names)
    return tuple(d for name in names for d in (name, f"{name}:{port}"))


# --- inbound ----------------------------------------------------------------------------------------------------


def _inbound(proxy: ProxySpec, ports: dict[int, str], traits: MeshTraits, served: dict[int, str],
             mtls: MtlsPolicy) -> tuple[list[Listener], list[RouteConfig], list[Cluster]]:
    original_dst = traits.inbound_to_original_dst and proxy.inbound_passthrough is not False
    chains = [FilterChain("virtualInbound-blackhole", ChainMatch(destination_port=INBOUND_PORT), TCP_PROXY,
                          cluster=BLACKHOLE)]
    routes, clusters = [], []
    for number, protocol in sorted(ports.items()):
        if protocol == UDP:
            continue
        name = inbound_cluster_name(number)
        if original_dst:
            clusters.append(Cluster(name, "ORIGINAL_DST", "CLUSTER_PROVIDED", CONNECT_TIMEOUT, PASSTHROUGH_BIND,
                                    service=served.get(number, "")))
        else:  # 1.9: forwarded to localhost, which exposed apps bound to 127.0.0.1
            clusters.append(Cluster(name, "STATIC", traits.default_lb, CONNECT_TIMEOUT,
                                    endpoints=(Endpoint("127.0.0.1", number, pod=proxy.key),),
                                    service=served.get(number, "")))
        if protocol in (HTTP, AUTO):
            routes.append(_inbound_route_config(name, number, traits))
        chains += _port_chains(f"0.0.0.0_{number}", mtls.for_port(number), protocol, name,
                               ChainMatch(destination_port=number))
    passthrough = traits.inbound_passthrough_cluster
    routes.append(_inbound_route_config(passthrough, 0, traits))
    # Passthrough chains, named as Istio names the plaintext ones; the workload's mode applies to them too.
    anywhere = ChainMatch(prefix_ranges=("0.0.0.0/0",))
    for chain in _port_chains("virtualInbound", mtls.mode, AUTO, passthrough, anywhere):
        if chain.filter == HTTP_CONNECTION_MANAGER and chain.match.transport_protocol == "raw_buffer":
            chain = replace(chain, name="virtualInbound-catchall-http")
        chains.append(chain)
    listener = Listener("virtualInbound", "0.0.0.0", INBOUND_PORT, "inbound", tuple(chains), use_original_dst=True)
    return [listener], routes, clusters


def _port_chains(name: str, mode: str, protocol: str, cluster: str, match: ChainMatch) -> list[FilterChain]:
    """An inbound port's filter chains for its mTLS mode (listener_inbound.go; MESH-FACTS §2): PERMISSIVE has
    mTLS chains (istio-http/* ALPN to HTTP, istio-peer-exchange/istio to TCP), the plaintext chains and a TLS
    chain that relays a client's own TLS untouched; STRICT only mTLS chains (any TLS is terminated, plaintext
    finds no chain); DISABLE only the plaintext chains."""
    def chain(transport: str, alpn: tuple[str, ...], http: bool, tls: bool = False) -> FilterChain:
        m = replace(match, transport_protocol=transport, application_protocols=alpn)
        if http:
            return FilterChain(name, m, HTTP_CONNECTION_MANAGER, route=cluster, tls=tls)
        return FilterChain(name, m, TCP_PROXY, cluster=cluster, tls=tls)

    http, tcp = protocol in (HTTP, AUTO), protocol != HTTP
    found: list[FilterChain] = []
    if mode != DISABLE:
        if http:
            found.append(chain("tls", ISTIO_HTTP_ALPN, True, tls=True))
        if tcp:
            found.append(chain("tls", ISTIO_TCP_ALPN if mode == PERMISSIVE else (), False, tls=True))
        elif mode == STRICT:
            found.append(chain("tls", (), True, tls=True))
    if mode != STRICT:
        if http:
            found.append(chain("raw_buffer", HTTP_ALPN if protocol == AUTO else (), True))
        if tcp:
            found.append(chain("raw_buffer", (), False))
            if mode == PERMISSIVE:
                found.append(chain("tls", (), False))  # the client's own TLS, passed through
    return found


def _inbound_route_config(cluster: str, port: int, traits: MeshTraits) -> RouteConfig:
    """buildSidecarInboundHTTPRouteConfig: named after the cluster, one virtual host for every domain, the default
    inbound route (no timeout; from 1.24 two retries of a reset before the request went out)."""
    retry = RetryPolicy(2, "reset-before-request", previous_hosts=False) if traits.inbound_retry else None
    return RouteConfig(cluster, (VirtualHost(f"inbound|http|{port}", ("*",),
                                             (Route("default", ANY_PATH, cluster, retry=retry),)),))


def _admin_listeners() -> list[Listener]:
    """The proxy's own ports, as Envoy's bootstrap has them."""
    return [
        Listener(f"0.0.0.0_{STATS_PORT}", "0.0.0.0", STATS_PORT, "", (
            FilterChain("", ChainMatch(), HTTP_CONNECTION_MANAGER, inline_route="/stats/prometheus*"),)),
        Listener(f"0.0.0.0_{HEALTH_PORT}", "0.0.0.0", HEALTH_PORT, "", (
            FilterChain("", ChainMatch(), HTTP_CONNECTION_MANAGER, inline_route="/healthz/ready*"),)),
    ]


def standalone_snapshot(istio: str, mode: str = "REDIRECT", inbound_ports: Iterable[int] = (),
                        inbound_passthrough: bool = True, version: int = 0) -> Snapshot:
    """A sidecar that knows no service and has no certificate: passthrough both ways, plus inbound clusters for
    `inbound_ports` (as if a Service selecting the pod declared them as TCP). For running the proxy on its own, in
    tests and benchmarks."""
    proxy = ProxySpec("pod", "pod", "default", "0.0.0.0", istio, mode,
                      inbound_passthrough=None if inbound_passthrough else False)
    return build_snapshot(proxy, [], {p: "TCP" for p in inbound_ports}, version=version, mtls=False)
