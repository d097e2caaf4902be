"""The lab plan: every name and address a scenario needs, computed without touching the kernel.

Topology: one node namespace; each pod's eth0 is a veth to the node with a /32 pod IP, Calico-style
(`podIP dev <veth> scope link` in the node, `default via 169.254.1.1` in the pod; the node owns 169.254.1.1).
A routed veth rather than a bridge because every pod-to-pod packet then crosses the node's own IP stack, so the
service DNAT in the node's PREROUTING sees it without br_netfilter — a global module and sysctl that would touch
the host. External hosts hang off one bridge in the node that carries the node's TEST-NET addresses (.1).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from netlab.model.schema import EXTERNAL_NETS, SERVICE_CIDR, Scenario

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
POD_GATEWAY = ipaddress.ip_address("169.254.1.1")
FIRST_HOST = 10  # pods and services are numbered from .10, leaving room for well-known addresses below
STATE_ROOT = "/run/netlab"
NETNS_DIR = "/run/netns"
HOSTS_ROOT = "/etc/netns"  # `ip netns exec NAME` bind-mounts /etc/netns/NAME/hosts over /etc/hosts
NETNS_PREFIX = "netlab"


def lab_id(lab: str) -> str:
    """Four hex digits marking the lab's interfaces (interface names are limited to 15 characters)."""
    return hashlib.sha1(lab.encode()).hexdigest()[:4]


def netns_name(lab: str, member: str) -> str:
    return f"{NETNS_PREFIX}.{lab}.{member}"


@dataclass(frozen=True)
class PodPlan:
    name: str
    netns: str
    ip: ipaddress.IPv4Address
    node_veth: str  # the node end, named like Calico's cali<hash>
    temp_peer: str  # the pod end's name in the node, before it is moved and renamed eth0


@dataclass(frozen=True)
class ExternalPlan:
    name: str
    netns: str
    ip: ipaddress.IPv4Address
    prefixlen: int
    node_veth: str
    temp_peer: str


@dataclass(frozen=True)
class ServicePlan:
    name: str
    ip: ipaddress.IPv4Address
    port: int
    pod: str
    pod_ip: ipaddress.IPv4Address
    target_port: int


@dataclass(frozen=True)
class LabPlan:
    lab: str
    id: str
    node_netns: str
    pods: dict[str, PodPlan]
    externals: dict[str, ExternalPlan]
    services: dict[str, ServicePlan]
    external_bridge: str
    node_external_addresses: list[ipaddress.IPv4Interface] = field(default_factory=list)

    def hosts_file(self) -> str:
        """What `netlab exec` sees as /etc/hosts in every member: pods, services and external hosts by name."""
        lines = ["127.0.0.1\tlocalhost"]
        lines += [f"{p.ip}\t{p.name}" for p in self.pods.values()]
        lines += [f"{s.ip}\t{s.name}" for s in self.services.values()]
        lines += [f"{e.ip}\t{e.name}" for e in self.externals.values()]
        return "\n".join(lines) + "\n"


def make_plan(scenario: Scenario, lab: str | None = None) -> LabPlan:
    lab = lab or scenario.name
    ident = lab_id(lab)
    pods = {
        name: PodPlan(
            name=name,
            netns=netns_name(lab, name),
            ip=POD_CIDR.network_address + FIRST_HOST + i,
            node_veth=f"nl{ident}p{i}",
            temp_peer=f"nl{ident}q{i}",
        )
        for i, name in enumerate(scenario.pods)
    }
    externals = {}
    for i, (name, ext) in enumerate(scenario.external.items()):
        net = next(n for n in EXTERNAL_NETS if ext.address in n)
        externals[name] = ExternalPlan(
            name=name,
            netns=netns_name(lab, name),
            ip=ext.address,
            prefixlen=net.prefixlen,
            node_veth=f"nl{ident}x{i}",
            temp_peer=f"nl{ident}y{i}",
        )
    used_nets = sorted({ipaddress.ip_network(f"{e.ip}/{e.prefixlen}", strict=False) for e in externals.values()})
    node_ext = [ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}") for net in used_nets]
    services = {}
    explicit = {s.ip for s in scenario.services.values() if s.ip is not None}
    auto_ips = (ip for ip in SERVICE_CIDR.hosts() if int(ip) - int(SERVICE_CIDR.network_address) >= FIRST_HOST)
    for name, svc in scenario.services.items():
        ip = svc.ip or next(ip for ip in auto_ips if ip not in explicit)
        services[name] = ServicePlan(
            name=name,
            ip=ip,
            port=svc.port,
            pod=svc.selector,
            pod_ip=pods[svc.selector].ip,
            target_port=svc.backend_port,
        )
    return LabPlan(
        lab=lab,
        id=ident,
        node_netns=netns_name(lab, "_node"),
        pods=pods,
        externals=externals,
        services=services,
        external_bridge=f"nl{ident}br",
        node_external_addresses=node_ext,
    )
