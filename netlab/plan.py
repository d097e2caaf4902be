"""The lab plan: every name and address a scenario needs, computed without touching the kernel.

Topology: a node namespace per node; each pod's eth0 is a veth to its node with a /32 pod IP, Calico-style
(`podIP dev <veth> scope link` in the node, `default via 169.254.1.1` in the pod; the node owns 169.254.1.1).
A routed veth rather than a bridge because every pod-to-pod packet then crosses the node's own IP stack, so the
service DNAT in the node's PREROUTING sees it without br_netfilter — a global module and sysctl that would touch
the host.

One node (no `nodes:` in the scenario): the node `_node` holds the pods of 10.244.0.0/16 and a bridge for external
hosts carrying its TEST-NET addresses (.1). Several nodes: each holds a /24 of the pod CIDR (10.244.N.0/24) and an
address on the node LAN (192.168.10.0/24, the study notes' network), a bridge in a router namespace `_net` (.1, and
the TEST-NET .1 addresses for external hosts behind it). Nodes route each other's pod CIDRs via the other node's
LAN address (host-gw, as the notes' clusters show in `ip route`), so pod-to-pod traffic crosses the LAN
unencapsulated.

The plan is saved in the lab's state when the lab is built and read back from there by everything that looks at
a running lab (probes, verdicts, trace, the control plane), so editing the scenario file later changes nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.names import (
    CLUSTER_DOMAIN,
    SINGLE_NODE,
    Named,
    Names,
    placement,
    pod_instances,
    selects,
    service_refs,
)
from netlab.model.schema import (
    EXTERNAL_NETS,
    NODE_LAN,
    NODE_PORTS,
    SERVICE_CIDR,
    App,
    MeshConfig,
    Scenario,
    Sidecar,
)

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
POD_GATEWAY = ipaddress.ip_address("169.254.1.1")
FIRST_HOST = 10  # pods and services are numbered from .10, leaving room for well-known addresses below
STATE_ROOT = "/run/netlab"
NETNS_DIR = "/run/netns"
HOSTS_ROOT = "/etc/netns"  # `ip netns exec NAME` bind-mounts /etc/netns/NAME/hosts over /etc/hosts
NETNS_PREFIX = "netlab"
NODE = SINGLE_NODE
ROUTER = "_net"  # the namespace of a multi-node lab's LAN bridge and router
ROUTER_ADDRESS = NODE_LAN.network_address + 1
FIRST_NODE_HOST = 10


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


class NodePlan(Frozen):
    name: str  # the member name: `_node` in a one-node lab, else the key in nodes:
    netns: str
    pod_cidr: ipaddress.IPv4Network
    ip: ipaddress.IPv4Address | None = None  # the node LAN address (multi-node labs)
    lan_veth: str = ""  # the router's end of the node's eth0
    temp_peer: str = ""


class PodPlan(Frozen):
    key: str  # the member name: NAME, or NAMESPACE/NAME outside the default namespace
    name: str
    namespace: str
    workload: str  # the Deployment (the pods: entry) this pod belongs to
    labels: dict[str, str]
    service_account: str
    netns: str
    ip: ipaddress.IPv4Address
    node: str  # the node it runs on
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
    node_port: int | None = None


class ServicePlan(Frozen):
    key: str  # the key in services:
    name: str
    namespace: str
    ip: ipaddress.IPv4Address
    ports: tuple[PortPlan, ...]
    endpoints: tuple[str, ...]  # keys of the selected pods, in file order
    type: str = "ClusterIP"
    external_traffic_policy: str = "Cluster"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, number: int) -> PortPlan | None:
        return next((p for p in self.ports if p.port == number), None)


class LabPlan(Frozen):
    lab: str
    id: str
    node_netns: str  # the first node's
    nodes: dict[str, NodePlan]
    router_netns: str | None = None  # multi-node labs: the LAN's router, where external hosts attach
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
        # A service of the same name wins, as in Kubernetes DNS (where a pod has no name of its own).
        own_services = {s.name for s in self.services.values() if s.namespace == namespace}
        lines += [f"{p.ip}\t{p.name}" for p in self.pods.values() if p.namespace == namespace
                  and p.name not in own_services]
        for s in self.services.values():
            names = [s.fqdn, f"{s.name}.{s.namespace}.svc", f"{s.name}.{s.namespace}"]
            if s.namespace == namespace:
                names.insert(0, s.name)
            lines.append(f"{s.ip}\t{' '.join(names)}")
        lines += [f"{e.ip}\t{e.name}" for e in self.externals.values()]
        lines += [f"{n.ip}\t{n.name}" for n in self.nodes.values() if n.ip is not None]
        return "\n".join(lines) + "\n"

    @property
    def multi_node(self) -> bool:
        return self.router_netns is not None

    @property
    def external_netns(self) -> str:
        """Where the external hosts' bridge is: the router of a multi-node lab, else the node."""
        return self.router_netns or self.node_netns

    def names(self) -> Names:
        return Names([Named(p.key, p.name, p.namespace) for p in self.pods.values()],
                     [Named(s.key, s.name, s.namespace) for s in self.services.values()], set(self.externals),
                     {n for n in self.nodes if n != NODE})

    def member_namespace(self, member: str) -> str:
        pod = self.pods.get(member)
        return pod.namespace if pod else DEFAULT_NAMESPACE

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: object) -> LabPlan:
        return cls.model_validate(data)


def _nodes(scenario: Scenario, lab: str, ident: str) -> dict[str, NodePlan]:
    if not scenario.nodes:
        return {NODE: NodePlan(name=NODE, netns=netns_name(lab, NODE), pod_cidr=POD_CIDR)}
    return {name: NodePlan(name=name, netns=netns_name(lab, name), pod_cidr=ipaddress.ip_network(f"10.244.{i}.0/24"),
                           ip=NODE_LAN.network_address + FIRST_NODE_HOST + i,
                           lan_veth=f"nl{ident}n{i}", temp_peer=f"nl{ident}m{i}")
            for i, name in enumerate(scenario.nodes)}


def _node_ports(scenario: Scenario) -> Iterator[int]:
    """Ports for NodePort service ports that name none, from the bottom of the range (kube-apiserver picks at
    random; a lab wants the same port every run)."""
    taken = {p.node_port for s in scenario.services.values() for p in s.service_ports()}
    return (port for port in range(NODE_PORTS[0], NODE_PORTS[1] + 1) if port not in taken)


def make_plan(scenario: Scenario, lab: str | None = None) -> LabPlan:
    lab = lab or scenario.name
    ident = lab_id(lab)
    nodes = _nodes(scenario, lab, ident)
    placed = placement(scenario)
    next_host = dict.fromkeys(nodes, FIRST_HOST)
    pods = {}
    for i, pod in enumerate(pod_instances(scenario)):
        node = placed[pod.key]
        ip = nodes[node].pod_cidr.network_address + next_host[node]
        next_host[node] += 1
        pods[pod.key] = PodPlan(
            key=pod.key, name=pod.name, namespace=pod.namespace, workload=pod.workload,
            labels=dict(pod.spec.labels), service_account=pod.spec.service_account,
            netns=netns_name(lab, pod.key), ip=ip, node=node,
            node_veth=f"nl{ident}p{i}", temp_peer=f"nl{ident}q{i}", sidecar=pod.spec.sidecar, app=pod.spec.app,
        )
    externals = {}
    for i, (name, ext) in enumerate(scenario.external.items()):
        net = next(n for n in (*EXTERNAL_NETS, NODE_LAN) if ext.address in n)
        externals[name] = ExternalPlan(
            name=name, netns=netns_name(lab, name), ip=ext.address, prefixlen=net.prefixlen,
            node_veth=f"nl{ident}x{i}", temp_peer=f"nl{ident}y{i}", app=ext.app,
        )
    used_nets = sorted({ipaddress.ip_network(f"{e.ip}/{e.prefixlen}", strict=False) for e in externals.values()}
                       - {NODE_LAN})
    node_ext = tuple(ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}") for net in used_nets)
    services = {}
    explicit = {s.ip for s in scenario.services.values() if s.ip is not None}
    auto_ips = (ip for ip in SERVICE_CIDR.hosts() if int(ip) - int(SERVICE_CIDR.network_address) >= FIRST_HOST)
    auto_node_ports = _node_ports(scenario)
    instances = pod_instances(scenario)
    for ref in service_refs(scenario):
        node_port = ref.spec.type == "NodePort"
        ports = tuple(PortPlan(name=p.name, port=p.port, target_port=p.backend_port, app_protocol=p.app_protocol,
                               node_port=(p.node_port or next(auto_node_ports)) if node_port else None)
                      for p in ref.spec.service_ports())
        services[ref.key] = ServicePlan(
            key=ref.key, name=ref.name, namespace=ref.namespace,
            ip=ref.spec.ip or next(ip for ip in auto_ips if ip not in explicit), ports=ports,
            endpoints=tuple(p.key for p in instances if selects(ref, p)), type=ref.spec.type,
            external_traffic_policy=ref.spec.external_traffic_policy,
        )
    return LabPlan(
        lab=lab, id=ident, node_netns=next(iter(nodes.values())).netns, nodes=nodes,
        router_netns=netns_name(lab, ROUTER) if scenario.nodes else None, pods=pods, externals=externals,
        services=services, external_bridge=f"nl{ident}br", node_external_addresses=node_ext,
        namespaces={DEFAULT_NAMESPACE: {}, **{n: dict(ns.labels) for n, ns in scenario.namespaces.items()}},
        mesh_config=scenario.mesh_config,
    )
