"""A proxy's configuration snapshot, shaped like what istiod sends Envoy over xDS: listeners with filter chains,
route configurations with virtual hosts, clusters, and the endpoints of each cluster.

Plain dataclasses and the standard library only: the proxy imports this module to load its snapshot, and must
stay light (no pydantic) and quick (a snapshot of 1000 services and 10 000 endpoints loads well under 200 ms).
Names and enum values are Envoy's (`EDS`, `ORIGINAL_DST`, `ROUND_ROBIN`, `envoy.filters.network.tcp_proxy`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

CLUSTER_DOMAIN = "cluster.local"  # Kubernetes' default cluster domain (pod DNS: NAME.NS.svc.cluster.local)
ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace: mesh-wide Sidecar, PeerAuthentication, ...
TCP_PROXY = "envoy.filters.network.tcp_proxy"
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
HEALTHY, UNHEALTHY = "HEALTHY", "UNHEALTHY"
# A gateway credential (SDS kubernetes://NAME) is a kubernetes.io/tls Secret's keys, which the proxy finds in its
# certificate directory as credentials/NAME/tls.crt, tls.key, ca.crt (written by netlab.pki).
SDS_KUBERNETES, CREDENTIALS = "kubernetes://", "credentials"
TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True, slots=True)
class ChainMatch:
    """FilterChainMatch: what a connection must have to take the chain (unset fields match anything)."""

    destination_port: int | None = None
    prefix_ranges: tuple[str, ...] = ()
    transport_protocol: str = ""  # "raw_buffer" or "tls"
    application_protocols: tuple[str, ...] = ()
    server_names: tuple[str, ...] = ()  # the ClientHello's SNI: exact names or "*.suffix" (a gateway's HTTPS hosts)


@dataclass(frozen=True, slots=True)
class FilterChain:
    name: str
    match: ChainMatch
    filter: str  # TCP_PROXY or HTTP_CONNECTION_MANAGER
    cluster: str = ""  # tcp_proxy's cluster
    route: str = ""  # the HTTP connection manager's RDS route configuration
    inline_route: str = ""  # an inline route (the admin listeners' /healthz/ready*, /stats/prometheus*)
    tls: bool = False  # terminates Istio's mTLS (DownstreamTlsContext with the workload certificate, client cert
    #                    required); a tls chain without it (or a credential) relays the client's own TLS untouched
    credential: str = ""  # terminates TLS with this SDS secret, "kubernetes://NAME" (a gateway's HTTPS server)


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: str
    port: int
    direction: str  # "outbound", "inbound", "gateway" (a router's listeners) or "" (admin listeners)
    filter_chains: tuple[FilterChain, ...]
    bind_to_port: bool = True
    use_original_dst: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy's route retry policy, as Istio fills it in (route/retry/retry.go)."""

    num_retries: int
    retry_on: str  # Envoy's comma-separated conditions, e.g. "connect-failure,retriable-status-codes"
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout: float = 0.0  # seconds; 0: none
    previous_hosts: bool = True  # retry_host_predicate envoy.retry_host_predicates.previous_hosts


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """Envoy's StringMatcher: exact, prefix or regex (a full match), or `present` (any value)."""

    kind: str
    value: str = ""
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    name: str  # lower case; ":method", ":authority" and ":scheme" for the pseudo-headers
    match: StringMatcher
    invert: bool = False  # withoutHeaders


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What a request must have to take a route: the path (prefix "/" takes all), headers, query parameters."""

    path: StringMatcher = StringMatcher("prefix", "/")
    headers: tuple[HeaderMatcher, ...] = ()
    query: tuple[HeaderMatcher, ...] = ()


ANY_PATH = RouteMatch()


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """The HTTP fault filter's per-route settings (percentages 0..100)."""

    delay: float = 0.0  # seconds
    delay_percent: float = 0.0
    abort_status: int = 0
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Redirect:
    path: str = ""  # "" keeps the request's path
    authority: str = ""
    code: int = 301
    port: int = 0
    scheme: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch
    cluster: str  # "" for weighted clusters, a redirect or a direct response
    weighted: tuple[WeightedCluster, ...] = ()
    direct_response: int = 0  # e.g. 502 for block_all
    redirect: Redirect | None = None
    virtual_service: str = ""  # "name.namespace" of the VirtualService it came from
    timeout: float = 0.0  # seconds for the whole request, retries included; 0: none (Istio's default)
    retry: RetryPolicy | None = None
    decorator: str = ""  # the route's decorator operation (tracing), e.g. "reviews.default.svc.cluster.local:9080/*"
    prefix_rewrite: str | None = None  # VirtualService rewrite.uri: replaces the matched prefix
    host_rewrite: str = ""  # rewrite.authority
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    fault: Fault | None = None
    mirror_cluster: str = ""
    mirror_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    include_request_attempt_count: bool = False  # x-envoy-attempt-count on upstream requests (outbound hosts)
    require_tls: bool = False  # require_tls ALL: a plaintext request is redirected to https (tls.httpsRedirect)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    health: str = HEALTHY
    pod: str = ""  # the lab member behind it, for people reading proxy-config
    labels: dict[str, str] = field(default_factory=dict)
    workload: str = ""  # istiod's endpoint metadata istio.workload (netlab.mesh.workload.endpoint_metadata)
    tls_mode: str = ""  # "istio": the pod has a sidecar that accepts mTLS (label security.istio.io/tlsMode)
    identity: str = ""  # the SPIFFE id its certificate must carry


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Outlier detection (Envoy's defaults where the DestinationRule leaves a field out)."""

    consecutive_5xx: int = 5  # 0: not ejected for 5xx
    consecutive_gateway: int = 0  # 502/503/504 and connect failures; 0: off (Envoy's enforcing default)
    interval: float = 10.0
    base_ejection: float = 30.0  # an ejection lasts base_ejection x the times the host was ejected
    max_ejection_percent: int = 10  # at least one host may always be ejected


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    type: str  # EDS, STATIC, STRICT_DNS, ORIGINAL_DST
    lb_policy: str = "ROUND_ROBIN"  # ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, CLUSTER_PROVIDED
    connect_timeout: float = 10.0
    upstream_bind: str = ""  # source address of upstream connections (127.0.0.6 for inbound passthrough)
    endpoints: tuple[Endpoint, ...] = ()
    destination_rule: str = ""  # "name.namespace" of the DestinationRule applied to it
    # Circuit breakers (0: Istio's default, unlimited), and what RING_HASH hashes.
    max_connections: int = 0
    max_pending_requests: int = 0
    max_requests: int = 0
    max_retries: int = 0
    max_requests_per_connection: int = 0
    outlier: OutlierPolicy | None = None
    hash_on: str = ""  # "header:NAME", "query:NAME" or "source_ip"
    service: str = ""  # the host of the service it is for (its metadata istio.services[0].host), "" for none
    sni: str = ""  # auto mTLS: endpoints with tls_mode "istio" get ISTIO_MUTUAL with this SNI, the others plaintext
    tls_mode: str = ""  # a DestinationRule's trafficPolicy.tls.mode (DISABLE, ISTIO_MUTUAL); "": auto mTLS
    subject_alt_names: tuple[str, ...] = ()  # its subjectAltNames: the identity the server must present
    tls_files: tuple[str, str, str] = ("", "", "")  # SIMPLE/MUTUAL: caCertificates, clientCertificate, privateKey
    tls_skip_verify: bool = False  # insecureSkipVerify


@dataclass(frozen=True, slots=True)
class Node:
    """The proxy this snapshot is for (Envoy's node, plus the settings a lab sidecar needs)."""

    id: str  # sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local, as istiod names it
    pod: str  # the lab member
    namespace: str
    ip: str
    istio: str
    mode: str = "REDIRECT"  # interception: REDIRECT or TPROXY
    service_account: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    workload: str = ""  # the Deployment the pod belongs to (WORKLOAD_NAME)
    type: str = "sidecar"  # or "router": a gateway (no capture; listeners on its Gateway servers' ports)


Matchers = tuple[tuple[str, tuple[str, ...]], ...]  # (field, values) pairs: Istio's names, e.g. ("notPaths", (...))


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """One rule of an AuthorizationPolicy: any of its sources, any of its operations, all of its conditions."""

    sources: tuple[Matchers, ...] = ()
    operations: tuple[Matchers, ...] = ()
    conditions: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()  # (key, values, notValues)


@dataclass(frozen=True, slots=True)
class AuthzPolicy:
    """An AuthorizationPolicy that applies to this sidecar's workload (the RBAC filters of its inbound chains)."""

    name: str
    namespace: str
    action: str  # ALLOW, DENY, AUDIT
    rules: tuple[AuthzRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    node: Node
    listeners: tuple[Listener, ...]
    routes: tuple[RouteConfig, ...]
    clusters: tuple[Cluster, ...]
    authorization: tuple[AuthzPolicy, ...] = ()

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


def loads(text: str | bytes) -> Snapshot:
    """The inverse of Snapshot.dumps (KeyError/TypeError/ValueError on a malformed document)."""
    return from_json(json.loads(text))


def from_json(d: dict[str, Any]) -> Snapshot:
    return Snapshot(
        version=int(d["version"]),
        node=Node(**d["node"]),
        listeners=tuple(_listener(x) for x in d["listeners"]),
        routes=tuple(RouteConfig(r["name"], tuple(_virtual_host(v) for v in r["virtual_hosts"])) for r in d["routes"]),
        clusters=tuple(_cluster(c) for c in d["clusters"]),
        authorization=tuple(_policy(p) for p in d.get("authorization", ())),
    )


def _policy(d: dict[str, Any]) -> AuthzPolicy:
    def matchers(m: list[list[Any]]) -> Matchers:
        return tuple((name, tuple(values)) for name, values in m)

    rules = tuple(AuthzRule(tuple(matchers(s) for s in r["sources"]), tuple(matchers(o) for o in r["operations"]),
                            tuple((k, tuple(v), tuple(n)) for k, v, n in r["conditions"])) for r in d["rules"])
    return AuthzPolicy(d["name"], d["namespace"], d["action"], rules)


def _listener(d: dict[str, Any]) -> Listener:
    return Listener(**{**d, "filter_chains": tuple(_chain(c) for c in d["filter_chains"])})


def _chain(d: dict[str, Any]) -> FilterChain:
    m = d["match"]
    match = ChainMatch(m["destination_port"], tuple(m["prefix_ranges"]), m["transport_protocol"],
                       tuple(m["application_protocols"]), tuple(m.get("server_names", ())))
    return FilterChain(**{**d, "match": match})


def _cluster(d: dict[str, Any]) -> Cluster:
    outlier = d.get("outlier")
    return Cluster(**{**d, "endpoints": tuple(Endpoint(**e) for e in d["endpoints"]),
                      "outlier": OutlierPolicy(**outlier) if outlier else None,
                      "subject_alt_names": tuple(d.get("subject_alt_names", ())),
                      "tls_files": tuple(d.get("tls_files", ("", "", "")))})


def _virtual_host(d: dict[str, Any]) -> VirtualHost:
    return VirtualHost(**{**d, "domains": tuple(d["domains"]), "routes": tuple(_route(r) for r in d["routes"])})


def _route(d: dict[str, Any]) -> Route:
    """Nested parts are decoded only when set: most routes are a service's default route."""
    fields = {**d, "match": _match(d["match"])}
    if d.get("retry"):
        fields["retry"] = RetryPolicy(**{**d["retry"], "retriable_status_codes": tuple(
            d["retry"]["retriable_status_codes"])})
    fields["weighted"] = tuple(WeightedCluster(w["name"], w["weight"], _ops(w["request_headers"]),
                                               _ops(w["response_headers"])) for w in d["weighted"])
    for key, kind in (("redirect", Redirect), ("fault", Fault)):
        if d.get(key):
            fields[key] = kind(**d[key])
    fields["request_headers"] = _ops(d.get("request_headers"))
    fields["response_headers"] = _ops(d.get("response_headers"))
    return Route(**fields)


def _match(d: dict[str, Any]) -> RouteMatch:
    path = d["path"]
    if not d["headers"] and not d["query"] and path == {"kind": "prefix", "value": "/", "ignore_case": False}:
        return ANY_PATH
    return RouteMatch(StringMatcher(**path), *(tuple(HeaderMatcher(m["name"], StringMatcher(**m["match"]),
                                                                   m["invert"]) for m in d[key])
                                                for key in ("headers", "query")))


def _ops(d: dict[str, Any] | None) -> HeaderOps | None:
    if not d:
        return None
    return HeaderOps(tuple(tuple(p) for p in d["set"]), tuple(tuple(p) for p in d["add"]),  # type: ignore[misc]
                     tuple(d["remove"]))
