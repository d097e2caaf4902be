"""Links, addresses and routes, all through pyroute2 netlink, never in the host's root namespace.

Every veth is created inside the node namespace (under a temporary name for the far end), the far end is moved
into its pod or external host and renamed eth0 there. The node ends carry an ifalias `netlab:<lab>:<member>`
that marks their owner for people and tools inspecting the node (`ip -d link` shows `alias netlab:LAB:POD`);
netlab itself does not read it back. Nothing here needs explicit deletion: a veth dies with the namespace of
either end, so tearing down the holders removes every link.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from netlab.errors import KernelError
from netlab.kernel.nsutil import run_in_netns
from netlab.model.schema import NODE_LAN
from netlab.plan import POD_GATEWAY, ROUTER_ADDRESS, ExternalPlan, LabPlan, NodePlan, PodPlan

NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # The pods' gateway 169.254.1.1 is an address on the node's lo; with arp_ignore 0 the node answers ARP for it
    # on every veth. New namespaces copy these from the host, so set them rather than trust them.
    "net.ipv4.conf.all.arp_ignore": "0",
    "net.ipv4.conf.default.arp_ignore": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


@contextmanager
def netlink(netns_path: str) -> Iterator[IPRoute]:
    """An rtnetlink handle bound to the namespace at netns_path.

    The socket is created by a thread that entered the namespace (cheap, and the socket stays there), rather than
    by pyroute2's own netns support, which forks a copy of this process for every socket.
    """
    sock = run_in_netns(netns_path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    try:
        with IPRoute(fileno=sock.detach()) as ipr:
            yield ipr
    except NetlinkError as err:
        raise KernelError(f"netlink error in {netns_path}: {err}", hint="run `netlab doctor`") from err


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise KernelError(f"interface {ifname} is missing", hint="`netlab clean --lab LAB` and try again")
    return found[0]


def setup_node(netns_path: str) -> None:
    """lo up and the pods' gateway address on it (Calico answers for 169.254.1.1 the same way, by ARP). Scope link,
    so that a masquerade toward a pod's veth (which has no address) takes the node's own address, not this one."""
    with netlink(netns_path) as ipr:
        lo = _index(ipr, "lo")
        ipr.link("set", index=lo, state="up")
        ipr.addr("add", index=lo, address=str(POD_GATEWAY), prefixlen=32, scope=253)


def _veth_into(node: IPRoute, node_end: str, far_end: str, far_pid: int, mark: str) -> None:
    node.link("add", ifname=node_end, kind="veth", peer={"ifname": far_end, "net_ns_pid": far_pid})
    index = _index(node, node_end)
    node.link("set", index=index, ifalias=mark, state="up")


def _configure_eth0(far_netns_path: str, temp_name: str, address: ipaddress.IPv4Interface,
                    gateway: ipaddress.IPv4Address | None) -> None:
    with netlink(far_netns_path) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")
        index = _index(ipr, temp_name)
        ipr.link("set", index=index, ifname="eth0")
        ipr.link("set", index=index, state="up")
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        if gateway is not None:
            ipr.route("add", dst=f"{gateway}/32", oif=index, scope="link")
            ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=index)


def connect_node(router_netns_path: str, plan: LabPlan, node: NodePlan, node_pid: int) -> None:
    """veth router<->node on the LAN bridge: the node's eth0 has its LAN address and a default route via the
    router (.1), like a VM's NIC on the notes' 192.168.10.0/24."""
    assert node.ip is not None
    with netlink(router_netns_path) as router:
        _veth_into(router, node.lan_veth, node.temp_peer, node_pid, f"netlab:{plan.lab}:{node.name}")
        router.link("set", index=_index(router, node.lan_veth), master=_index(router, plan.external_bridge))
    _configure_eth0(f"/proc/{node_pid}/ns/net", node.temp_peer,
                    ipaddress.IPv4Interface(f"{node.ip}/{NODE_LAN.prefixlen}"), ROUTER_ADDRESS)


def route_pod_cidrs(node_netns_path: str, plan: LabPlan, node: NodePlan) -> None:
    """host-gw: every other node's pod CIDR via that node's LAN address (`ip route` on a node lists them)."""
    with netlink(node_netns_path) as ipr:
        eth0 = _index(ipr, "eth0")
        for other in plan.nodes.values():
            if other.name != node.name:
                ipr.route("add", dst=str(other.pod_cidr), gateway=str(other.ip), oif=eth0)


def connect_pod(node_netns_path: str, lab: str, pod: PodPlan, pod_pid: int) -> None:
    """veth node<->pod: pod eth0 has podIP/32 and a default route via 169.254.1.1; the node routes podIP to it."""
    with netlink(node_netns_path) as node:
        _veth_into(node, pod.node_veth, pod.temp_peer, pod_pid, f"netlab:{lab}:{pod.key}")
        node.route("add", dst=f"{pod.ip}/32", oif=_index(node, pod.node_veth), scope="link")
    _configure_eth0(f"/proc/{pod_pid}/ns/net", pod.temp_peer, ipaddress.IPv4Interface(f"{pod.ip}/32"), POD_GATEWAY)


def create_external_bridge(netns_path: str, plan: LabPlan) -> None:
    """The bridge external hosts (and, in a multi-node lab, the nodes) attach to, carrying the TEST-NET .1
    addresses (and the LAN's router address .1)."""
    addresses = [*plan.node_external_addresses]
    if plan.multi_node:
        addresses.append(ipaddress.IPv4Interface(f"{ROUTER_ADDRESS}/{NODE_LAN.prefixlen}"))
    with netlink(netns_path) as ipr:
        ipr.link("add", ifname=plan.external_bridge, kind="bridge")
        index = _index(ipr, plan.external_bridge)
        ipr.link("set", index=index, ifalias=f"netlab:{plan.lab}:external", state="up")
        for addr in addresses:
            ipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)


def connect_external(netns_path: str, plan: LabPlan, ext: ExternalPlan, ext_pid: int) -> None:
    """veth from the external bridge to the host. In a one-node lab the host needs no route: the node is on-link
    and masquerades pods to its TEST-NET address; behind a multi-node lab's router it routes via its net's .1."""
    with netlink(netns_path) as ipr:
        _veth_into(ipr, ext.node_veth, ext.temp_peer, ext_pid, f"netlab:{plan.lab}:{ext.name}")
        ipr.link("set", index=_index(ipr, ext.node_veth), master=_index(ipr, plan.external_bridge))
    address = ipaddress.IPv4Interface(f"{ext.ip}/{ext.prefixlen}")
    _configure_eth0(f"/proc/{ext_pid}/ns/net", ext.temp_peer, address,
                    address.network.network_address + 1 if plan.multi_node else None)
