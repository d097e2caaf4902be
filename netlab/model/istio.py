"""Istio resources as users apply them to a cluster (apiVersion, kind, metadata, spec), validated strictly.

Field names and enum values follow istio/api (networking/v1alpha3/service_entry.proto, sidecar.proto,
virtual_service.proto, destination_rule.proto); a field netlab does not model is an error naming it, never
silently ignored; PeerAuthentication and AuthorizationPolicy follow security/v1beta1/peer_authentication.proto and
authorization.proto; Gateway networking/v1alpha3/gateway.proto.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from netlab.duration import seconds
from netlab.model.base import NAMESPACE_NAME, Labels, Port, Strict, matching

NETWORKING_VERSIONS = Literal["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain
HOST = re.compile(r"(\*|\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\*")
SUBSET_NAME = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?")
# Istio's protocol names (pkg/config/protocol): what a ServiceEntry port may declare.
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP")


HOST_PROBLEM = "'{}' is not a host name (e.g. api.example.com or *.example.com)"
Host = Annotated[str, matching(HOST, HOST_PROBLEM)]


def check_namespaced_host(entry: str, namespace: str, host: str, specials: tuple[str, ...]) -> None:
    """NAMESPACE/HOST of a Sidecar's egress or a Gateway server's hosts: a namespace (or one of `specials`), a
    host name."""
    if namespace not in specials and not NAMESPACE_NAME.fullmatch(namespace):
        shown = ", ".join(f"'{s}'" for s in specials if s)
        raise ValueError(f"'{entry}': '{namespace}' is not a namespace, {shown}")
    if not HOST.fullmatch(host):
        raise ValueError(HOST_PROBLEM.format(host))


class ObjectMeta(Strict):
    name: Annotated[str, matching(RESOURCE_NAME, "'{}' is not a resource name (lower case a-z, 0-9, '-' and '.')")]
    namespace: Annotated[str, matching(NAMESPACE_NAME, "'{}' is not a namespace name (a DNS label)")] = "default"
    labels: Labels
    annotations: dict[str, str] = Field(default_factory=dict)


class _Resource(Strict):
    """What every Istio resource has besides its kind and spec."""

    api_version: NETWORKING_VERSIONS = Field(alias="apiVersion")
    metadata: ObjectMeta


class WorkloadSelector(Strict):
    labels: Labels


# --- ServiceEntry ---------------------------------------------------------------------------------------------


class ServiceEntryPort(Strict):
    number: Port = Field(strict=True)
    protocol: str = "TCP"
    name: str
    target_port: Port | None = Field(None, alias="targetPort", strict=True)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value.upper() not in PROTOCOLS:
            raise ValueError(f"protocol '{value}' is not one of {', '.join(PROTOCOLS)}")
        return value.upper()


class ServiceEntryEndpoint(Strict):
    """A WorkloadEntry inline: an address (IP or host name) and per-port overrides."""

    address: str
    ports: dict[str, Port] = Field(default_factory=dict)
    labels: Labels
    network: str | None = None
    locality: str | None = None
    weight: int | None = Field(None, ge=0)
    service_account: str | None = Field(None, alias="serviceAccount")


class ServiceEntrySpec(Strict):
    hosts: list[Host] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServiceEntryPort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[ServiceEntryEndpoint] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")
    export_to: list[str] = Field(default_factory=list, alias="exportTo")
    subject_alt_names: list[str] = Field(default_factory=list, alias="subjectAltNames")

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"'{address}' is not an IP address or CIDR") from None
        return value

    @model_validator(mode="after")
    def _istio_rules(self) -> ServiceEntrySpec:
        """What istiod's validation (pkg/config/validation ValidateServiceEntry) refuses."""
        if self.resolution == "STATIC" and not self.endpoints and self.workload_selector is None:
            raise ValueError("resolution STATIC needs endpoints (or a workloadSelector)")
        if self.resolution == "NONE" and self.endpoints:
            raise ValueError("resolution NONE takes no endpoints: use STATIC or DNS")
        if self.resolution in ("DNS", "DNS_ROUND_ROBIN") and any(h.startswith("*") for h in self.hosts) \
                and not self.endpoints:
            raise ValueError("wildcard hosts cannot be resolved by DNS without endpoints")
        if self.endpoints and self.workload_selector is not None:
            raise ValueError("give endpoints or a workloadSelector, not both")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError(f"port names repeat: {names}")
        numbers = [p.number for p in self.ports]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"port numbers repeat: {numbers}")
        for endpoint in self.endpoints:
            unknown = sorted(set(endpoint.ports) - set(names))
            if unknown:
                raise ValueError(f"endpoint {endpoint.address}: ports {unknown} are not port names of this entry")
        return self


class ServiceEntry(_Resource):
    kind: Literal["ServiceEntry"]
    spec: ServiceEntrySpec


# --- Sidecar --------------------------------------------------------------------------------------------------


class SidecarPort(Strict):
    number: Port = Field(strict=True)
    protocol: str | None = None
    name: str | None = None


class EgressListener(Strict):
    hosts: list[str] = Field(min_length=1)
    port: SidecarPort | None = None
    bind: str | None = None
    capture_mode: Literal["DEFAULT", "IPTABLES", "NONE"] | None = Field(None, alias="captureMode")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            namespace, sep, name = host.partition("/")
            if not sep or not namespace or not name:
                raise ValueError(f"'{host}' is not NAMESPACE/HOST (e.g. ./*, istio-system/*, "
                                 "default/reviews.default.svc.cluster.local)")
            check_namespaced_host(host, namespace, name, (".", "*", "~"))
        return value


class OutboundTrafficPolicy(Strict):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


class SidecarSpec(Strict):
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")
    egress: list[EgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = Field(None, alias="outboundTrafficPolicy")
    ingress: list[Any] | None = Field(None, description="not modelled")

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("Sidecar ingress listeners are not modelled by netlab; leave 'ingress' out")
        return value


class Sidecar(_Resource):
    kind: Literal["Sidecar"]
    spec: SidecarSpec


# --- shared by VirtualService and DestinationRule ------------------------------------------------------------

Duration = Annotated[str, AfterValidator(lambda v: (seconds(v), v)[1])]  # checked, kept as written


class Percent(Strict):
    value: float = Field(ge=0, le=100)


class PortSelector(Strict):
    number: Port = Field(strict=True)


class StringMatch(Strict):
    """One of exact, prefix or regex (RE2 syntax; netlab uses Python's re, which agrees on the common subset)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex '{self.regex}' does not compile: {err}") from None
        return self


class Destination(Strict):
    host: Host
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Strict):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


# --- VirtualService -------------------------------------------------------------------------------------------


class HTTPMatchRequest(Strict):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: Port | None = Field(None, strict=True)
    source_labels: Labels = Field(alias="sourceLabels")
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict, alias="queryParams")
    ignore_uri_case: bool = Field(False, alias="ignoreUriCase")
    without_headers: dict[str, StringMatch] = Field(default_factory=dict, alias="withoutHeaders")
    source_namespace: str | None = Field(None, alias="sourceNamespace")


class HTTPRouteDestination(Strict):
    destination: Destination
    weight: int = Field(0, strict=True, ge=0)
    headers: Headers | None = None


class HTTPRedirect(Strict):
    uri: str | None = None
    authority: str | None = None
    port: Port | None = Field(None, strict=True)
    scheme: str | None = None
    redirect_code: int = Field(301, strict=True, alias="redirectCode", ge=300, le=399)


class HTTPRewrite(Strict):
    uri: str | None = None
    authority: str | None = None


class HTTPRetry(Strict):
    attempts: int = Field(strict=True, ge=0)
    per_try_timeout: Duration | None = Field(None, alias="perTryTimeout")
    retry_on: str | None = Field(None, alias="retryOn")
    retry_remote_localities: bool | None = Field(None, alias="retryRemoteLocalities")


class FaultDelay(Strict):
    fixed_delay: Duration = Field(alias="fixedDelay")
    percentage: Percent | None = None
    percent: int | None = Field(None, ge=0, le=100, description="deprecated: use percentage")


class FaultAbort(Strict):
    http_status: int = Field(strict=True, alias="httpStatus", ge=200, le=599)
    percentage: Percent | None = None


class HTTPFaultInjection(Strict):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPRoute(Strict):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = Field(None, alias="mirrorPercentage")
    headers: Headers | None = None
    cors_policy: Any = Field(None, alias="corsPolicy", description="not modelled")

    @model_validator(mode="after")
    def _istio_rules(self) -> HTTPRoute:
        """What istiod's validation (validateHTTPRoute) refuses."""
        if self.cors_policy is not None:
            raise ValueError("corsPolicy is not modelled by netlab; leave it out")
        if self.redirect is not None and self.route:
            raise ValueError("a route has either `route` destinations or a `redirect`, not both")
        if self.redirect is None and not self.route:
            raise ValueError("a route needs `route` destinations (or a `redirect`)")
        if self.redirect is not None and self.rewrite is not None:
            raise ValueError("`rewrite` cannot go with `redirect`")
        if len(self.route) > 1 and sum(d.weight for d in self.route) == 0:
            raise ValueError("the weights of several destinations add up to 0")
        return self


class L4MatchAttributes(Strict):
    destination_subnets: list[str] = Field(default_factory=list, alias="destinationSubnets")
    port: Port | None = Field(None, strict=True)
    source_labels: Labels = Field(alias="sourceLabels")
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = Field(None, alias="sourceNamespace")


class RouteDestination(Strict):
    destination: Destination
    weight: int = Field(0, strict=True, ge=0)


class TCPRoute(Strict):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(min_length=1)

    @field_validator("route")
    @classmethod
    def _one(cls, value: list[RouteDestination]) -> list[RouteDestination]:
        if len(value) > 1:
            raise ValueError("netlab relays a TCP route to one destination; weighted TCP routes are not modelled")
        return value


class VirtualServiceSpec(Strict):
    hosts: list[Host] = Field(min_length=1)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    tls: Any = Field(None, description="not modelled")
    export_to: list[str] = Field(default_factory=list, alias="exportTo")

    @model_validator(mode="after")
    def _something(self) -> VirtualServiceSpec:
        if self.tls is not None:
            raise ValueError("tls routes are not modelled by netlab yet; use http or tcp")
        if not self.http and not self.tcp:
            raise ValueError("a VirtualService needs http or tcp routes")
        return self


class VirtualService(_Resource):
    kind: Literal["VirtualService"]
    spec: VirtualServiceSpec


# --- Gateway (networking/v1alpha3/gateway.proto) -----------------------------------------------------------------

GATEWAY_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "HTTPS")  # served by netlab's router; TLS and TCP servers are not


class GatewayPort(Strict):
    number: Port = Field(strict=True)
    name: str | None = None
    protocol: str
    target_port: Port | None = Field(None, alias="targetPort", strict=True)

    @field_validator("protocol")
    @classmethod
    def _served(cls, value: str) -> str:
        if value.upper() not in GATEWAY_PROTOCOLS:
            raise ValueError(f"protocol {value}: netlab's gateway serves {', '.join(GATEWAY_PROTOCOLS)} servers "
                             "(TLS and TCP servers are not modelled yet)")
        return value.upper()


class ServerTls(Strict):
    """ServerTLSSettings: an HTTPS server terminates TLS (mode SIMPLE) with the certificate of `credentialName`, a
    secret the lab makes (netlab.pki.issue_credential); an HTTP server may redirect every request to HTTPS."""

    https_redirect: bool = Field(False, alias="httpsRedirect")
    mode: str | None = None
    credential_name: Annotated[str, matching(RESOURCE_NAME, "credentialName '{}' is not a Secret name (lower case "
                                                            "a-z, 0-9, '-' and '.')")] | None = Field(
        None, alias="credentialName")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value is not None and value.upper() != "SIMPLE":
            raise ValueError(f"tls.mode {value}: netlab's gateway terminates TLS in mode SIMPLE only "
                             "(PASSTHROUGH, MUTUAL, ISTIO_MUTUAL and AUTO_PASSTHROUGH are not modelled yet)")
        return value if value is None else value.upper()


class GatewayServer(Strict):
    port: GatewayPort
    hosts: list[str] = Field(min_length=1, description="HOST or NAMESPACE/HOST; '*' for every host")
    name: str | None = None
    bind: str | None = None
    tls: ServerTls | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            namespace, _, host = entry.rpartition("/")
            check_namespaced_host(entry, namespace, host, ("", ".", "*"))
        return value

    @model_validator(mode="after")
    def _tls(self) -> GatewayServer:
        tls, port = self.tls, self.port
        if port.protocol == "HTTPS":
            if tls is None or tls.mode != "SIMPLE" or not tls.credential_name:
                raise ValueError(f"the HTTPS server on port {port.number} needs `tls: {{mode: SIMPLE, "
                                 "credentialName: NAME}` (the lab makes that secret for the server's hosts)")
            if not port.name:
                raise ValueError(f"the HTTPS server on port {port.number} needs a port name (its route "
                                 "configuration is named https.NUMBER.NAME.GATEWAY.NAMESPACE)")
        elif tls is not None and (tls.mode is not None or tls.credential_name is not None):
            raise ValueError(f"the {port.protocol} server on port {port.number} takes `tls.httpsRedirect` only; "
                             "TLS settings belong to an HTTPS server")
        return self


class GatewaySpec(Strict):
    selector: Labels
    servers: list[GatewayServer] = Field(min_length=1)

    @field_validator("servers")
    @classmethod
    def _unique_port_names(cls, value: list[GatewayServer]) -> list[GatewayServer]:
        names = [s.port.name for s in value if s.port.name]
        for name in names:
            if names.count(name) > 1:  # as istiod's validation (ValidateGateway) has it
                raise ValueError(f"port names in servers must be unique: duplicate name {name}")
        return value


class Gateway(_Resource):
    kind: Literal["Gateway"]
    spec: GatewaySpec


# --- DestinationRule ------------------------------------------------------------------------------------------


class ConsistentHash(Strict):
    http_header_name: str | None = Field(None, alias="httpHeaderName")
    use_source_ip: bool | None = Field(None, alias="useSourceIp")
    http_query_parameter_name: str | None = Field(None, alias="httpQueryParameterName")
    minimum_ring_size: int | None = Field(None, alias="minimumRingSize")

    @model_validator(mode="after")
    def _one(self) -> ConsistentHash:
        given = [k for k in ("http_header_name", "use_source_ip", "http_query_parameter_name")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("consistentHash takes one of httpHeaderName, useSourceIp, httpQueryParameterName "
                             "(httpCookie is not modelled)")
        return self


class LoadBalancerSettings(Strict):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHash | None = Field(None, alias="consistentHash")

    @model_validator(mode="after")
    def _one(self) -> LoadBalancerSettings:
        if (self.simple is None) == (self.consistent_hash is None):
            raise ValueError("loadBalancer takes `simple` or `consistentHash`")
        return self


class TCPSettings(Strict):
    max_connections: int | None = Field(None, alias="maxConnections", ge=1)
    connect_timeout: Duration | None = Field(None, alias="connectTimeout")


class HTTPSettings(Strict):
    http1_max_pending_requests: int | None = Field(None, alias="http1MaxPendingRequests", ge=1)
    http2_max_requests: int | None = Field(None, alias="http2MaxRequests", ge=1)
    max_requests_per_connection: int | None = Field(None, alias="maxRequestsPerConnection", ge=0)
    max_retries: int | None = Field(None, alias="maxRetries", ge=0)
    idle_timeout: Duration | None = Field(None, alias="idleTimeout")


class ConnectionPoolSettings(Strict):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Strict):
    consecutive_5xx_errors: int | None = Field(None, alias="consecutive5xxErrors", ge=0)
    consecutive_gateway_errors: int | None = Field(None, alias="consecutiveGatewayErrors", ge=0)
    consecutive_errors: int | None = Field(None, alias="consecutiveErrors", ge=0, description="deprecated")
    interval: Duration | None = None
    base_ejection_time: Duration | None = Field(None, alias="baseEjectionTime")
    max_ejection_percent: int | None = Field(None, alias="maxEjectionPercent", ge=0, le=100)
    min_health_percent: int | None = Field(None, alias="minHealthPercent", ge=0, le=100)


class ClientTlsSettings(Strict):
    """destination_rule.proto ClientTLSSettings: the mesh's mTLS (ISTIO_MUTUAL), none (DISABLE), or TLS
    origination to a server with its own certificate (SIMPLE), presenting a client certificate (MUTUAL). Files are
    paths on the lab's machine (a cluster mounts them into the sidecar)."""

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    sni: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list, alias="subjectAltNames")
    ca_certificates: str | None = Field(None, alias="caCertificates")
    client_certificate: str | None = Field(None, alias="clientCertificate")
    private_key: str | None = Field(None, alias="privateKey")
    insecure_skip_verify: bool | None = Field(None, alias="insecureSkipVerify")
    credential_name: str | None = Field(None, alias="credentialName")

    @model_validator(mode="after")
    def _files(self) -> ClientTlsSettings:
        if self.credential_name is not None:
            raise ValueError("credentialName names a Kubernetes secret, which a lab does not have; give "
                             "caCertificates, clientCertificate and privateKey as file paths")
        if self.mode == "MUTUAL" and not (self.client_certificate and self.private_key):
            raise ValueError("tls.mode MUTUAL needs clientCertificate and privateKey (file paths)")
        for path in (self.ca_certificates, self.client_certificate, self.private_key):
            if path is not None and not path.startswith("/"):
                raise ValueError(f"'{path}' is not an absolute file path")
        return self


class TrafficPolicy(Strict):
    load_balancer: LoadBalancerSettings | None = Field(None, alias="loadBalancer")
    connection_pool: ConnectionPoolSettings | None = Field(None, alias="connectionPool")
    outlier_detection: OutlierDetection | None = Field(None, alias="outlierDetection")
    tls: ClientTlsSettings | None = None
    port_level_settings: Any = Field(None, alias="portLevelSettings", description="not modelled")

    @model_validator(mode="after")
    def _modelled(self) -> TrafficPolicy:
        if self.port_level_settings is not None:
            raise ValueError("portLevelSettings is not modelled by netlab; set the policy for every port")
        return self


class Subset(Strict):
    name: Annotated[str, matching(SUBSET_NAME, "'{}' is not a subset name (letters, digits, '-', '_', '.')")]
    labels: Labels
    traffic_policy: TrafficPolicy | None = Field(None, alias="trafficPolicy")


class DestinationRuleSpec(Strict):
    host: Host
    traffic_policy: TrafficPolicy | None = Field(None, alias="trafficPolicy")
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list, alias="exportTo")
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")

    @model_validator(mode="after")
    def _unique(self) -> DestinationRuleSpec:
        names = [s.name for s in self.subsets]
        if len(set(names)) != len(names):
            raise ValueError(f"subset names repeat: {names}")
        return self


class DestinationRule(_Resource):
    kind: Literal["DestinationRule"]
    spec: DestinationRuleSpec


# --- PeerAuthentication (security/v1beta1/peer_authentication.proto) ------------------------------------------

SECURITY_VERSIONS = Literal["security.istio.io/v1", "security.istio.io/v1beta1"]
MTLS_MODES = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTls(Strict):
    mode: MTLS_MODES = "UNSET"


class PeerSelector(Strict):
    match_labels: Labels = Field(alias="matchLabels")


class PeerAuthenticationSpec(Strict):
    selector: PeerSelector | None = None
    mtls: MutualTls | None = None
    port_level_mtls: dict[Port, MutualTls] = Field(default_factory=dict, alias="portLevelMtls")

    @model_validator(mode="after")
    def _ports_need_a_selector(self) -> PeerAuthenticationSpec:
        if self.port_level_mtls and (self.selector is None or not self.selector.match_labels):
            raise ValueError("portLevelMtls needs a selector (Istio applies port-level modes to selected workloads "
                             "only); add selector: {matchLabels: {...}}")
        return self


class _SecurityResource(_Resource):
    api_version: SECURITY_VERSIONS = Field(alias="apiVersion")  # type: ignore[assignment]


class PeerAuthentication(_SecurityResource):
    kind: Literal["PeerAuthentication"]
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


# --- AuthorizationPolicy (security/v1beta1/authorization.proto) --------------------------------------------------

# The `when` keys a lab can evaluate (Istio's conditions reference); JWT claims (request.auth.*) are not modelled.
CONDITION_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal", "destination.ip",
                  "destination.port", "connection.sni")
HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")
StringList = list[str]


class AuthzSource(Strict):
    principals: StringList = Field(default_factory=list)
    not_principals: StringList = Field(default_factory=list, alias="notPrincipals")
    namespaces: StringList = Field(default_factory=list)
    not_namespaces: StringList = Field(default_factory=list, alias="notNamespaces")
    ip_blocks: StringList = Field(default_factory=list, alias="ipBlocks")
    not_ip_blocks: StringList = Field(default_factory=list, alias="notIpBlocks")
    remote_ip_blocks: StringList = Field(default_factory=list, alias="remoteIpBlocks")
    not_remote_ip_blocks: StringList = Field(default_factory=list, alias="notRemoteIpBlocks")
    request_principals: Any = Field(None, alias="requestPrincipals", description="JWT: not modelled")
    not_request_principals: Any = Field(None, alias="notRequestPrincipals", description="JWT: not modelled")

    @model_validator(mode="after")
    def _modelled(self) -> AuthzSource:
        if self.request_principals is not None or self.not_request_principals is not None:
            raise ValueError("requestPrincipals need RequestAuthentication (JWT), which netlab does not model")
        for block in (*self.ip_blocks, *self.not_ip_blocks, *self.remote_ip_blocks, *self.not_remote_ip_blocks):
            try:
                ipaddress.ip_network(block, strict=False)
            except ValueError:
                raise ValueError(f"'{block}' is not an IP address or CIDR block (e.g. 10.244.0.0/16)") from None
        return self


class AuthzOperation(Strict):
    hosts: StringList = Field(default_factory=list)
    not_hosts: StringList = Field(default_factory=list, alias="notHosts")
    ports: StringList = Field(default_factory=list)
    not_ports: StringList = Field(default_factory=list, alias="notPorts")
    methods: StringList = Field(default_factory=list)
    not_methods: StringList = Field(default_factory=list, alias="notMethods")
    paths: StringList = Field(default_factory=list)
    not_paths: StringList = Field(default_factory=list, alias="notPaths")

    @field_validator("ports", "not_ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        if isinstance(value, list):
            for port in value:
                if not str(port).isdigit() or not 0 < int(str(port)) < 65536:
                    raise ValueError(f"'{port}' is not a port number")
            return [str(p) for p in value]
        return value


class AuthzFrom(Strict):
    source: AuthzSource


class AuthzTo(Strict):
    operation: AuthzOperation


class AuthzCondition(Strict):
    key: str
    values: StringList = Field(default_factory=list)
    not_values: StringList = Field(default_factory=list, alias="notValues")

    @field_validator("key")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CONDITION_KEYS and not HEADER_KEY.fullmatch(value):
            raise ValueError(f"condition key '{value}' is not one netlab evaluates; use request.headers[NAME], "
                             + ", ".join(CONDITION_KEYS))
        return value


class AuthzRule(Strict):
    from_: list[AuthzFrom] = Field(default_factory=list, alias="from")
    to: list[AuthzTo] = Field(default_factory=list)
    when: list[AuthzCondition] = Field(default_factory=list)


class AuthorizationPolicySpec(Strict):
    selector: PeerSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    rules: list[AuthzRule] = Field(default_factory=list)
    provider: Any = None
    target_ref: Any = Field(None, alias="targetRef", description="gateways and waypoints: not modelled")
    target_refs: Any = Field(None, alias="targetRefs", description="gateways and waypoints: not modelled")

    @model_validator(mode="after")
    def _modelled(self) -> AuthorizationPolicySpec:
        if self.action == "CUSTOM" or self.provider is not None:
            raise ValueError("action CUSTOM (an external authorizer, ext_authz) is not modelled by netlab; use "
                             "ALLOW, DENY or AUDIT")
        if self.target_ref is not None or self.target_refs is not None:
            raise ValueError("targetRef(s) bind policies to gateways and waypoints, which netlab does not model; "
                             "use selector")
        return self


class AuthorizationPolicy(_SecurityResource):
    kind: Literal["AuthorizationPolicy"]
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)


KINDS = ("ServiceEntry", "Sidecar", "VirtualService", "DestinationRule", "Gateway", "PeerAuthentication",
         "AuthorizationPolicy")


def _kind_of(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


IstioResource = Annotated[
    Annotated[ServiceEntry, Tag("ServiceEntry")] | Annotated[Sidecar, Tag("Sidecar")]
    | Annotated[VirtualService, Tag("VirtualService")] | Annotated[DestinationRule, Tag("DestinationRule")]
    | Annotated[Gateway, Tag("Gateway")] | Annotated[PeerAuthentication, Tag("PeerAuthentication")]
    | Annotated[AuthorizationPolicy, Tag("AuthorizationPolicy")],
    Discriminator(_kind_of),
]
Resource = (ServiceEntry | Sidecar | VirtualService | DestinationRule | Gateway | PeerAuthentication
            | AuthorizationPolicy)


def resource_key(resource: Resource) -> tuple[str, str, str]:
    """(kind, namespace, name): what `kubectl apply` replaces and `kubectl delete` removes."""
    return resource.kind, resource.metadata.namespace, resource.metadata.name


def describe(resource: Resource) -> str:
    return f"{resource.kind} {resource.metadata.namespace}/{resource.metadata.name}"
