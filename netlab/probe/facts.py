"""What the lab knows about its members, as plain data the verdicts use to explain a path (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netlab.hostport import split_host_port
from netlab.mesh.authz import authorization
from netlab.mesh.security import MtlsPolicy, mtls_policy
from netlab.mesh.types import AuthzPolicy
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.names import Names, member_key
from netlab.model.schema import App
from netlab.plan import LabPlan

PASSTHROUGH_SOURCE = "127.0.0.6"


@dataclass(frozen=True)
class AppFacts:
    kind: str
    host: str | None  # the listen address with eth0 resolved to the pod IP; None when a command app has no listen
    port: int | None
    eth0: bool = False  # the scenario said eth0

    def accepts(self, ip: str, port: int) -> bool:
        """Would a connection to ip:port reach this listener?"""
        if self.host is None or port != self.port:
            return False
        return self.host == "0.0.0.0" or self.host == ip

    def describe(self) -> str:
        if self.host is None:
            return f"a {self.kind} app (no declared listen address)"
        if self.host == "0.0.0.0":
            return f"0.0.0.0:{self.port} (every address of the pod)"
        where = " (eth0, the pod IP)" if self.eth0 else (" (loopback)" if self.host.startswith("127.") else "")
        return f"{self.host}:{self.port}{where} only"


@dataclass(frozen=True)
class SidecarFacts:
    istio: str
    mode: str  # REDIRECT or TPROXY
    inbound_passthrough: bool | None
    declared_ports: tuple[int, ...]
    rule_edits: tuple[str, ...] = ()  # "delete nat/ISTIO_OUTPUT#1", ...
    mtls: MtlsPolicy = field(default_factory=MtlsPolicy)  # what its PeerAuthentications make of its inbound ports
    authz: tuple[AuthzPolicy, ...] = ()  # the AuthorizationPolicies that apply to it
    router: bool = False  # a gateway's proxy: no capture

    @property
    def label(self) -> str:
        if self.router:
            return f"{self.istio} gateway"
        return f"{self.istio} sidecar" + (" (TPROXY)" if self.mode == "TPROXY" else "")


@dataclass(frozen=True)
class MemberFacts:
    name: str
    kind: str  # pod / external / node
    ip: str
    app: AppFacts | None = None
    sidecar: SidecarFacts | None = None
    node: str | None = None  # a pod's node, in a multi-node lab


@dataclass(frozen=True)
class ServiceFacts:
    name: str  # the key in services:
    ip: str
    ports: dict[int, int]  # service port -> target port
    endpoints: tuple[str, ...]  # the selected pods
    node_ports: dict[int, int] = field(default_factory=dict)  # node port -> service port
    external_traffic_policy: str = "Cluster"

    def target_port(self, port: int) -> int:
        return self.ports.get(port, port)


@dataclass(frozen=True)
class Target:
    text: str  # as written in the check
    kind: str  # service / pod / external / ip
    ip: str
    port: int
    member: str | None  # the pod or external host the connection ends at (a service's only endpoint)
    member_port: int | None
    endpoints: tuple[str, ...] = ()  # a service's pods, one of which the connection ends at
    nat: str = ""  # a node port: what the node does with the connection

    def describe(self) -> str:
        if self.kind == "service" and self.member:
            return f"service {self.text} ({self.ip}:{self.port} → {self.member}:{self.member_port})"
        if self.kind == "nodeport":
            return f"node port {self.text} ({self.ip}:{self.port})"
        if self.kind in ("pod", "external"):
            return f"{self.kind} {self.text} ({self.ip}:{self.port})"
        return f"{self.ip}:{self.port}" + (f" ({self.member})" if self.member else "")


@dataclass(frozen=True)
class LabFacts:
    lab: str
    members: dict[str, MemberFacts]
    services: dict[str, ServiceFacts] = field(default_factory=dict)
    node_addresses: tuple[str, ...] = ()  # the node's TEST-NET addresses: what external hosts see (masquerade)
    names: Names = field(default_factory=lambda: Names([], [], set()))
    namespaces: dict[str, str] = field(default_factory=dict)  # pod -> its namespace
    workloads: dict[str, str] = field(default_factory=dict)  # pod -> its Deployment (NAMESPACE/NAME outside default)

    def owns(self, key: str, member: str) -> bool:
        """Is `member` the pod `key` names, or one of the replicas of the Deployment `key`?"""
        return member == key or self.workloads.get(member) == key

    def pod(self, ref: str) -> str:
        """A pod key from what a user wrote (POD, NAMESPACE/POD); external hosts by name too."""
        return ref if ref in self.members else self.names.pod(ref)

    def resolve(self, to: str, source: str | None = None) -> Target:
        """NAME:PORT as a pod in `source`'s namespace reaches it: a service (the node DNATs it to one of its
        endpoints, unless a sidecar picks one itself), a pod, an external host, or an address."""
        host, port = split_host_port(to)
        namespace = self.namespaces.get(source or "", DEFAULT_NAMESPACE)
        found = self.names.host(host, namespace)
        if found is not None and found[0] == "service":
            s = self.services[found[1]]
            only = s.endpoints[0] if len(s.endpoints) == 1 else None
            return Target(to, "service", s.ip, port, only, s.target_port(port), s.endpoints)
        if found is not None and found[0] == "node":
            return self.node_port(to, found[1], port)
        if found is not None:
            m = self.members[found[1]]
            return Target(to, m.kind, m.ip, port, found[1], port)
        for s in self.services.values():
            if s.ip == host:
                only = s.endpoints[0] if len(s.endpoints) == 1 else None
                return Target(to, "ip", host, port, only, s.target_port(port), s.endpoints)
        member = self.member_at(host)
        return Target(to, "ip", host, port, member, port if member else None)

    def node_port(self, to: str, node: str, port: int) -> Target:
        """NODE:PORT: the service whose node port it is, and what kube-proxy's rules on that node do with it."""
        ip = self.members[node].ip
        svc = next((s for s in self.services.values() if port in s.node_ports), None)
        if svc is None:
            return Target(to, "node", ip, port, node, port, nat=f"{node} has no node port {port}")
        endpoints = svc.endpoints
        if svc.external_traffic_policy == "Local":
            endpoints = tuple(e for e in endpoints if self.members[e].node == node)
            how = "keeping the client's address (externalTrafficPolicy: Local: only its own endpoints)"
            if not endpoints:
                return Target(to, "nodeport", ip, port, None, None, nat=(
                    f"{node} has no endpoint of service {svc.name} and externalTrafficPolicy is Local: kube-proxy's "
                    "rules drop the connection (no answer) — call a node that runs one"))
        else:
            how = "masquerading the client to the node's own address (externalTrafficPolicy: Cluster)"
        target_port = svc.target_port(svc.node_ports[port])
        only = endpoints[0] if len(endpoints) == 1 else None
        where = f"{self.members[only].ip}:{target_port} ({only})" if only else f"one of {', '.join(endpoints)}"
        return Target(to, "nodeport", ip, port, only, target_port, endpoints,
                      nat=f"{node} DNATs node port {port} of service {svc.name} to {where}, {how}")

    def member_at(self, ip: str) -> str | None:
        return next((m.name for m in self.members.values() if m.ip == ip), None)

    def who(self, ip: str) -> str:
        """Name an address the way the explanations need it."""
        if ip == PASSTHROUGH_SOURCE:
            return "127.0.0.6 (the sidecar's upstream source address)"
        if ip == "127.0.0.1":
            return "127.0.0.1 (loopback: the sidecar connected to localhost)"
        if ip in self.node_addresses:
            node = self.member_at(ip)
            if node:
                return f"{ip} ({node}'s address)"
            return f"{ip} (the node's address: pods are masqueraded on the way out)"
        member = self.member_at(ip)
        if member:
            return f"{ip} ({member}'s {'pod IP' if self.members[member].kind == 'pod' else 'address'})"
        return ip


def app_facts(app: App | None, ip: str) -> AppFacts | None:
    if app is None:
        return None
    if app.listen is None:
        return AppFacts(app.kind, None, None)
    eth0 = app.listen.host == "eth0"
    return AppFacts(app.kind, ip if eth0 else app.listen.host, app.listen.port, eth0)


def lab_facts(plan: LabPlan, members: dict[str, dict[str, Any]], resources: Sequence[Any] = ()) -> LabFacts:
    """From the lab's saved plan, its state's members (addresses as the kernel got them) and the Istio resources
    in force."""
    facts: dict[str, MemberFacts] = {}
    for key, pod in plan.pods.items():
        ip = members.get(key, {}).get("ip") or str(pod.ip)
        sidecar = None
        if pod.sidecar is not None:
            declared = tuple(sorted({p.target_port for s in plan.services.values() if key in s.endpoints
                                     for p in s.ports}))
            edits = tuple(f"delete {e.delete}" if e.delete else f"insert {e.insert} {e.rule}"
                          for e in pod.sidecar.rule_edits)
            sidecar = SidecarFacts(pod.sidecar.istio, pod.sidecar.interception, pod.sidecar.inbound_passthrough,
                                   declared, edits, mtls_policy(pod.namespace, pod.labels, resources),
                                   authorization(pod.namespace, pod.labels, resources), pod.sidecar.mode == "router")
        facts[key] = MemberFacts(key, "pod", ip, app_facts(pod.app, ip), sidecar,
                                 pod.node if plan.multi_node else None)
    for name, ext in plan.externals.items():
        facts[name] = MemberFacts(name, "external", str(ext.ip), app_facts(ext.app, str(ext.ip)))
    for name, node in plan.nodes.items():
        if node.ip is not None:
            facts[name] = MemberFacts(name, "node", str(node.ip))
    services = {k: ServiceFacts(k, str(s.ip), {p.port: p.target_port for p in s.ports}, s.endpoints,
                                {p.node_port: p.port for p in s.ports if p.node_port}, s.external_traffic_policy)
                for k, s in plan.services.items()}
    node = tuple(str(i.ip) for i in plan.node_external_addresses) if not plan.multi_node else ()
    node += tuple(str(n.ip) for n in plan.nodes.values() if n.ip is not None)
    workloads = {k: member_key(p.namespace, p.workload) for k, p in plan.pods.items()}
    return LabFacts(plan.lab, facts, services, node, plan.names(), {k: p.namespace for k, p in plan.pods.items()},
                    workloads)
