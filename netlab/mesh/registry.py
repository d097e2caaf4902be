"""The service registry istiod builds: Kubernetes services with their ready endpoints, and ServiceEntries.

Protocol selection follows Istio's (pkg/config/kube/conversion.go ConvertProtocol, pkg/config/protocol): appProtocol
beats the port name, the name's prefix before '-' picks the protocol, an unknown one is sniffed ("auto") except on
the server-first ports 25, 53, 3306 and 27017, which are TCP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netlab.mesh.security import DISABLE, mtls_policy
from netlab.mesh.workload import endpoint_metadata, spiffe_id

if TYPE_CHECKING:  # duck-typed at run time: the proxy imports this package without pydantic
    from netlab.model.istio import ServiceEntry
    from netlab.plan import LabPlan

HTTP, TCP, AUTO, UDP = "HTTP", "TCP", "AUTO", "UDP"
_HTTP_NAMES = {"http", "http2", "http_proxy", "grpc", "grpc-web"}
_TCP_NAMES = {"tcp", "https", "tls", "mongo", "mysql", "redis"}
_SERVER_FIRST_PORTS = {25, 53, 3306, 27017}


def protocol_of(port: int, name: str | None, app_protocol: str | None = None) -> str:
    """HTTP (the HTTP connection manager), TCP (tcp_proxy), AUTO (sniffed: HTTP, else TCP) or UDP (not proxied)."""
    text = (app_protocol or name or "").lower()
    if text == "kubernetes.io/h2c":
        return HTTP
    if text.startswith("grpc-web"):
        return HTTP
    prefix = text.split("-", 1)[0]
    if prefix in _HTTP_NAMES:
        return HTTP
    if prefix in _TCP_NAMES:
        return TCP
    if prefix == "udp":
        return UDP
    return TCP if port in _SERVER_FIRST_PORTS else AUTO


@dataclass(frozen=True)
class MeshPort:
    name: str
    port: int
    protocol: str  # HTTP, TCP, AUTO, UDP
    target_port: int


@dataclass(frozen=True)
class MeshEndpoint:
    address: str
    ports: dict[int, int]  # service port -> endpoint port
    labels: dict[str, str] = field(default_factory=dict)
    pod: str = ""  # the lab member (Kubernetes endpoints)
    service_account: str = ""
    workload: str = ""  # istiod's endpoint metadata istio.workload
    mtls_ports: frozenset[int] = frozenset()  # service ports on which its sidecar accepts mTLS (auto mTLS sends it)
    identity: str = ""  # its SPIFFE id


@dataclass(frozen=True)
class MeshService:
    hostname: str
    namespace: str
    addresses: tuple[str, ...]  # the ClusterIP, or a ServiceEntry's addresses; () matches by port alone
    ports: tuple[MeshPort, ...]
    endpoints: tuple[MeshEndpoint, ...]
    resolution: str = "EDS"  # EDS (Kubernetes, ServiceEntry STATIC), DNS, NONE (original destination)
    external: bool = False  # ServiceEntry location MESH_EXTERNAL
    export_to: tuple[str, ...] = ()  # () or ("*",): every namespace; (".",): its own only


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def kubernetes_services(plan: LabPlan, ready: frozenset[str] | None = None,
                        resources: Sequence[Any] = ()) -> list[MeshService]:
    """Every Service with its endpoints: the selected pods that are ready (all of them when `ready` is None).
    Istio sends no endpoint for a pod that is not ready (PILOT_SEND_UNHEALTHY_ENDPOINTS is off by default). An
    endpoint with a sidecar takes mTLS on a port unless its PeerAuthentication says DISABLE there (the endpoint
    builder's mtlsChecker), so that auto mTLS sends plaintext to it."""
    services = []
    for svc in plan.services.values():
        ports = tuple(MeshPort(p.name or "", p.port, protocol_of(p.port, p.name, p.app_protocol), p.target_port)
                      for p in svc.ports)
        endpoints = []
        for key in svc.endpoints:
            if ready is not None and key not in ready:
                continue
            pod = plan.pods[key]
            mtls: frozenset[int] = frozenset()
            if pod.sidecar is not None and pod.sidecar.mode == "sidecar":  # a gateway's listeners take plaintext
                policy = mtls_policy(pod.namespace, pod.labels, resources)
                mtls = frozenset(p.port for p in ports if policy.for_port(p.target_port) != DISABLE)
            endpoints.append(MeshEndpoint(str(pod.ip), {p.port: p.target_port for p in ports}, dict(pod.labels),
                                          key, pod.service_account,
                                          endpoint_metadata(pod.workload, pod.namespace, pod.labels), mtls,
                                          spiffe_id(pod.namespace, pod.service_account)))
        services.append(MeshService(svc.fqdn, svc.namespace, (str(svc.ip),), ports, tuple(endpoints)))
    return services


def service_entry_services(entry: ServiceEntry, resolve: dict[str, list[str]]) -> list[MeshService]:
    """One service per host of the entry. `resolve` maps lab host names to addresses (DNS resolution)."""
    spec = entry.spec
    ports = tuple(MeshPort(p.name, p.number, protocol_of(p.number, p.protocol.lower()), p.target_port or p.number)
                  for p in spec.ports)
    resolution = {"STATIC": "EDS", "DNS": "DNS", "DNS_ROUND_ROBIN": "DNS", "NONE": "NONE"}[spec.resolution]
    services = []
    for host in spec.hosts:
        endpoints: list[MeshEndpoint] = []
        sources = [(e.address, e.ports, dict(e.labels)) for e in spec.endpoints]
        if spec.resolution.startswith("DNS") and not sources:
            sources = [(host, {}, {})]
        for address, named_ports, labels in sources:
            for ip in [address] if _is_ip(address) else resolve.get(address, []):
                endpoints.append(MeshEndpoint(ip, {p.port: named_ports.get(p.name, p.target_port) for p in ports},
                                              labels))
        services.append(MeshService(host, entry.metadata.namespace, tuple(a.split("/")[0] for a in spec.addresses),
                                    ports, tuple(endpoints), resolution, spec.location == "MESH_EXTERNAL",
                                    tuple(spec.export_to)))
    return services
