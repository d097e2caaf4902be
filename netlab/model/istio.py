"""Istio resources as users apply them to a cluster (apiVersion, kind, metadata, spec), validated strictly.

Field names and enum values follow istio/api (networking/v1alpha3/service_entry.proto, sidecar.proto); a field
netlab does not model is an error naming it, never silently ignored. Later kinds (VirtualService, DestinationRule,
PeerAuthentication, AuthorizationPolicy, Gateway) join the `IstioResource` union here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from netlab.model.base import NAMESPACE_NAME, Labels, Port, Strict

NETWORKING_VERSIONS = Literal["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain
HOST = re.compile(r"(\*|\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\*")
# Istio's protocol names (pkg/config/protocol): what a ServiceEntry port may declare.
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP")


class ObjectMeta(Strict):
    name: str
    namespace: str = "default"
    labels: Labels
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RESOURCE_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a resource name (lower case a-z, 0-9, '-' and '.')")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not NAMESPACE_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a namespace name (a DNS label)")
        return value


def _host(value: str) -> str:
    if not HOST.fullmatch(value):
        raise ValueError(f"'{value}' is not a host name (e.g. api.example.com or *.example.com)")
    return value


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
    hosts: list[str] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServiceEntryPort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[ServiceEntryEndpoint] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")
    export_to: list[str] = Field(default_factory=list, alias="exportTo")
    subject_alt_names: list[str] = Field(default_factory=list, alias="subjectAltNames")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [_host(h) for h in value]

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


class ServiceEntry(Strict):
    api_version: NETWORKING_VERSIONS = Field(alias="apiVersion")
    kind: Literal["ServiceEntry"]
    metadata: ObjectMeta
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
            if namespace not in (".", "*", "~") and not NAMESPACE_NAME.fullmatch(namespace):
                raise ValueError(f"'{host}': '{namespace}' is not a namespace, '.', '*' or '~'")
            _host(name)
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


class Sidecar(Strict):
    api_version: NETWORKING_VERSIONS = Field(alias="apiVersion")
    kind: Literal["Sidecar"]
    metadata: ObjectMeta
    spec: SidecarSpec


KINDS = ("ServiceEntry", "Sidecar")


def _kind_of(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


IstioResource = Annotated[
    Annotated[ServiceEntry, Tag("ServiceEntry")] | Annotated[Sidecar, Tag("Sidecar")],
    Discriminator(_kind_of),
]


def resource_key(resource: ServiceEntry | Sidecar) -> tuple[str, str, str]:
    """(kind, namespace, name): what `kubectl apply` replaces and `kubectl delete` removes."""
    return resource.kind, resource.metadata.namespace, resource.metadata.name


def describe(resource: ServiceEntry | Sidecar) -> str:
    return f"{resource.kind} {resource.metadata.namespace}/{resource.metadata.name}"
