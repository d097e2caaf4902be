"""The lab plan: every name and address a scenario needs, computed without touching the kernel.

Topology: one node namespace; each pod's eth0 is a veth to the node with a /32 pod IP, Calico-style
(`podIP dev <veth> scope link` in the node, `default via 169.254.1.1` in the pod; the node owns 169.254.1.1).
A routed veth rather than a bridge because every pod-to-pod packet then crosses the node's own IP stack, so the
service DNAT in the node's PREROUTING sees it without br_netfilter — a global module and sysctl that would touch
the host. External hosts hang off one bridge in the node that carries the node's TEST-NET addresses (.1).

The plan is saved in the lab's state when the lab is built and read back from there by everything that looks at
a running lab (probes, verdicts, trace, the control plane), so editing the scenario file later changes nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress

from pydantic import BaseModel, ConfigDict

from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.names import CLUSTER_DOMAIN, Named, Names, pod_instances, selects, service_refs
from netlab.model.schema import EXTERNAL_NETS, SERVICE_CIDR, App, MeshConfig, Scenario, Sidecar

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
POD_GATEWAY = ipaddress.ip_address("169.254.1.1")
FIRST_HOST = 10  # pods and services are numbered from .10, leaving room for well-known addresses below
STATE_ROOT = "/run/netlab"
NETNS_DIR = "/run/netns"
HOSTS_ROOT = "/etc/netns"  # `ip netns exec NAME` bind-mounts /etc/netns/NAME/hosts over /etc/hosts
NETNS_PREFIX = "netlab"
NODE = "_node"


def lab_id(lab: str) -> str:
    """Four hex digits marking the lab's interfaces (interface names are limited to 15 characters)."""
    return hashlib.sha1(lab.encode()).hexdigest()[:4]


def member_slug(member: str) -> str:
    """A member key as one name in files and namespaces: NAMESPACE/POD becomes POD.NAMESPACE (DNS order)."""
    namespace, sep, name = member.partition("/")
    return f"{name}.{namespace}" if sep else member


def netns_name(lab: str, member: str) -> str:
    """netlab.LAB.POD, or netlab.LAB.POD.NAMESPACE outside the default namespace."""
    return f"{NETNS_PREFIX}.{lab}.{member_slug(member)}"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PodPlan(Frozen):
    key: str  # the member name: NAME, or NAMESPACE/NAME outside the default namespace
    name: str
    namespace: str
    workload: str  # the Deployment (the pods: entry) this pod belongs to
    labels: dict[str, str]
    service_account: str
    netns: str
    ip: ipaddress.IPv4Address
    node_veth: str  # the node end, named like Calico's cali<hash>
    temp_peer: str  # the pod end's name in the node, before it is moved and renamed eth0
    sidecar: Sidecar | None = None
    app: App | None = None


class ExternalPlan(Frozen):
    name: str
    netns: str
    ip: ipaddress.IPv4Address
    prefixlen: int
    node_veth: str
    temp_peer: str
    app: App | None = None


class PortPlan(Frozen):
    name: str | None
    port: int
    target_port: int
    app_protocol: str | None = None


class ServicePlan(Frozen):
    key: str  # the key in services:
    name: str
    namespace: str
    ip: ipaddress.IPv4Address
    ports: tuple[PortPlan, ...]
    endpoints: tuple[str, ...]  # keys of the selected pods, in file order

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, number: int) -> PortPlan | None:
        return next((p for p in self.ports if p.port == number), None)


class LabPlan(Frozen):
    lab: str
    id: str
    node_netns: str
    pods: dict[str, PodPlan]
    externals: dict[str, ExternalPlan]
    services: dict[str, ServicePlan]
    external_bridge: str
    node_external_addresses: tuple[ipaddress.IPv4Interface, ...] = ()
    namespaces: dict[str, dict[str, str]] = {}  # name -> labels
    mesh_config: MeshConfig = MeshConfig()

    def hosts_file(self, namespace: str = DEFAULT_NAMESPACE) -> str:
        """/etc/hosts of a member in `namespace` (what `ip netns exec` and `netlab exec` see): the namespace's pods
        by name; services by NAME.NS, NAME.NS.svc and NAME.NS.svc.cluster.local, and by NAME in their own
        namespace (the search domains of a Kubernetes pod); external hosts by name."""
        lines = ["127.0.0.1\tlocalhost"]
        lines += [f"{p.ip}\t{p.name}" for p in self.pods.values() if p.namespace == namespace]
        for s in self.services.values():
            names = [s.fqdn, f"{s.name}.{s.namespace}.svc", f"{s.name}.{s.namespace}"]
            if s.namespace == namespace:
                names.insert(0, s.name)
            lines.append(f"{s.ip}\t{' '.join(names)}")
        lines += [f"{e.ip}\t{e.name}" for e in self.externals.values()]
        return "\n".join(lines) + "\n"

    def names(self) -> Names:
        return Names([Named(p.key, p.name, p.namespace) for p in self.pods.values()],
                     [Named(s.key, s.name, s.namespace) for s in self.services.values()], set(self.externals))

    def member_namespace(self, member: str) -> str:
        pod = self.pods.get(member)
        return pod.namespace if pod else DEFAULT_NAMESPACE

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: object) -> LabPlan:
        return cls.model_validate(data)


def make_plan(scenario: Scenario, lab: str | None = None) -> LabPlan:
    lab = lab or scenario.name
    ident = lab_id(lab)
    pods = {}
    for i, pod in enumerate(pod_instances(scenario)):
        pods[pod.key] = PodPlan(
            key=pod.key, name=pod.name, namespace=pod.namespace, workload=pod.workload,
            labels=dict(pod.spec.labels), service_account=pod.spec.service_account,
            netns=netns_name(lab, pod.key), ip=POD_CIDR.network_address + FIRST_HOST + i,
            node_veth=f"nl{ident}p{i}", temp_peer=f"nl{ident}q{i}", sidecar=pod.spec.sidecar, app=pod.spec.app,
        )
    externals = {}
    for i, (name, ext) in enumerate(scenario.external.items()):
        net = next(n for n in EXTERNAL_NETS if ext.address in n)
        externals[name] = ExternalPlan(
            name=name, netns=netns_name(lab, name), ip=ext.address, prefixlen=net.prefixlen,
            node_veth=f"nl{ident}x{i}", temp_peer=f"nl{ident}y{i}", app=ext.app,
        )
    used_nets = sorted({ipaddress.ip_network(f"{e.ip}/{e.prefixlen}", strict=False) for e in externals.values()})
    node_ext = tuple(ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}") for net in used_nets)
    services = {}
    explicit = {s.ip for s in scenario.services.values() if s.ip is not None}
    auto_ips = (ip for ip in SERVICE_CIDR.hosts() if int(ip) - int(SERVICE_CIDR.network_address) >= FIRST_HOST)
    instances = pod_instances(scenario)
    for ref in service_refs(scenario):
        ports = tuple(PortPlan(name=p.name, port=p.port, target_port=p.backend_port, app_protocol=p.app_protocol)
                      for p in ref.spec.service_ports())
        services[ref.key] = ServicePlan(
            key=ref.key, name=ref.name, namespace=ref.namespace,
            ip=ref.spec.ip or next(ip for ip in auto_ips if ip not in explicit), ports=ports,
            endpoints=tuple(p.key for p in instances if selects(ref, p)),
        )
    return LabPlan(
        lab=lab, id=ident, node_netns=netns_name(lab, NODE), pods=pods, externals=externals, services=services,
        external_bridge=f"nl{ident}br", node_external_addresses=node_ext,
        namespaces={DEFAULT_NAMESPACE: {}, **{n: dict(ns.labels) for n, ns in scenario.namespaces.items()}},
        mesh_config=scenario.mesh_config,
    )
