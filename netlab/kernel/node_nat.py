"""A node's tables: kube-proxy-style service DNAT, node ports, and masquerade toward external hosts.

Laid out as kube-proxy's iptables mode does it, with NETLAB-* chain names: NETLAB-SERVICES matches each service
port's ClusterIP:port and jumps to its NETLAB-SVC-* chain, which picks one endpoint at random (`-m statistic --mode
random --probability 1/n, 1/(n-1), ...`, the last unconditional) and jumps to that endpoint's NETLAB-SEP-* chain,
which DNATs. Its last rule sends traffic to any of the node's own addresses to NETLAB-NODEPORTS, whose
NETLAB-EXT-* chains mark the connection for masquerade (externalTrafficPolicy Cluster) or pick among the node's
own endpoints in a NETLAB-SVL-* chain (Local, the client address kept). A service port without endpoints is
rejected in the filter table (icmp port unreachable), and a Local node port on a node without an endpoint
dropped, as kube-proxy does. Rendered as `iptables-restore --noflush` text (pure) and applied inside the node
namespace only.
"""

from __future__ import annotations

import hashlib

from netlab.errors import KernelError
from netlab.kernel.nsutil import nsenter_run
from netlab.plan import POD_CIDR, LabPlan


def _chain(prefix: str, *parts: object) -> str:
    """NETLAB-SVC-/NETLAB-SEP- plus 16 hex digits of a hash, as kube-proxy names its chains (28 characters max)."""
    return prefix + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16].upper()


MASQ_MARK = "0x4000/0x4000"  # kube-proxy's masquerade bit


def render_node_nat(plan: LabPlan, node: str) -> str:
    """The tables of one node: every node DNATs every service; a NodePort with externalTrafficPolicy Local picks
    among the node's own endpoints only, and a node without one drops the connection (as kube-proxy does)."""
    nat = ["*nat", ":NETLAB-SERVICES - [0:0]", ":NETLAB-POSTROUTING - [0:0]"]
    # PREROUTING catches pods' traffic (it arrives on a veth); OUTPUT catches `netlab exec NODE` tools.
    rules = ["-A PREROUTING -j NETLAB-SERVICES", "-A OUTPUT -j NETLAB-SERVICES"]
    node_ports: list[str] = []
    rejects: list[str] = []
    for svc in plan.services.values():
        for port in svc.ports:
            name = f"{svc.namespace}/{svc.name}:{port.name or port.port}"
            match = f"-d {svc.ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {port.port}"
            node_match = (f"-m addrtype --dst-type LOCAL -p tcp -m comment --comment \"{name}\" -m tcp "
                          f"--dport {port.node_port}")
            if not svc.endpoints:
                rejects.append(f"-A NETLAB-SERVICES {match} -j REJECT --reject-with icmp-port-unreachable")
                if port.node_port:
                    rejects.append(f"-A NETLAB-SERVICES {node_match} -j REJECT --reject-with icmp-port-unreachable")
                continue
            svc_chain = _chain("NETLAB-SVC-", plan.lab, svc.key, port.port)
            nat.append(f":{svc_chain} - [0:0]")
            rules.append(f"-A NETLAB-SERVICES {match} -j {svc_chain}")
            seps = {}
            for member in svc.endpoints:
                seps[member] = _chain("NETLAB-SEP-", plan.lab, svc.key, port.port, member)
                nat.append(f":{seps[member]} - [0:0]")
                rules.append(f"-A {seps[member]} -p tcp -m tcp -j DNAT --to-destination "
                             f"{plan.pods[member].ip}:{port.target_port}")
            rules += _pick(plan, svc_chain, name, port.target_port, seps)
            if not port.node_port:
                continue
            ext_chain = _chain("NETLAB-EXT-", plan.lab, svc.key, port.port)
            nat.append(f":{ext_chain} - [0:0]")
            node_ports.append(f"-A NETLAB-NODEPORTS -p tcp -m comment --comment \"{name}\" -m tcp "
                              f"--dport {port.node_port} -j {ext_chain}")
            if svc.external_traffic_policy == "Cluster":
                rules += [f"-A {ext_chain} -m comment --comment \"masquerade traffic for {name} external "
                          "destinations\" -j NETLAB-MARK-MASQ", f"-A {ext_chain} -j {svc_chain}"]
                continue
            rules += [f"-A {ext_chain} -s {POD_CIDR} -m comment --comment \"pod traffic for {name} external "
                      f"destinations\" -j {svc_chain}",
                      f"-A {ext_chain} -m comment --comment \"masquerade LOCAL traffic for {name} external "
                      "destinations\" -m addrtype --src-type LOCAL -j NETLAB-MARK-MASQ",
                      f"-A {ext_chain} -m comment --comment \"route LOCAL traffic for {name} external "
                      f"destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"]
            local = {m: chain for m, chain in seps.items() if plan.pods[m].node == node}
            if not local:
                rejects.append(f"-A NETLAB-SERVICES {node_match} -m comment --comment \"{name} has no local "
                               "endpoints\" -j DROP")
                continue
            svl_chain = _chain("NETLAB-SVL-", plan.lab, svc.key, port.port)
            nat.append(f":{svl_chain} - [0:0]")
            rules.append(f"-A {ext_chain} -j {svl_chain}")
            rules += _pick(plan, svl_chain, name, port.target_port, local)
    if node_ports:
        nat += [":NETLAB-NODEPORTS - [0:0]", ":NETLAB-MARK-MASQ - [0:0]"]
        rules += [*node_ports, "-A NETLAB-SERVICES -m comment --comment \"netlab service nodeports; NOTE: this "
                  "must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j NETLAB-NODEPORTS",
                  f"-A NETLAB-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}"]
    rules.append("-A POSTROUTING -j NETLAB-POSTROUTING")
    if node_ports:
        rules.append(f"-A NETLAB-POSTROUTING -m mark --mark {MASQ_MARK} -j MASQUERADE")
    if plan.multi_node:  # pods leaving the cluster through the node's NIC
        rules.append(f"-A NETLAB-POSTROUTING -s {POD_CIDR} ! -d {POD_CIDR} -o eth0 -j MASQUERADE")
    elif plan.externals:
        rules.append(f"-A NETLAB-POSTROUTING -s {POD_CIDR} -o {plan.external_bridge} -j MASQUERADE")
    text = "\n".join([*nat, *rules, "COMMIT"]) + "\n"
    if rejects:
        text += "\n".join(["*filter", ":NETLAB-SERVICES - [0:0]", "-A INPUT -m conntrack --ctstate NEW "
                           "-j NETLAB-SERVICES", "-A FORWARD -m conntrack --ctstate NEW -j NETLAB-SERVICES",
                           "-A OUTPUT -m conntrack --ctstate NEW -j NETLAB-SERVICES", *rejects, "COMMIT"]) + "\n"
    return text


def _pick(plan: LabPlan, chain: str, name: str, target_port: int, seps: dict[str, str]) -> list[str]:
    """One endpoint at random: probability 1/n, 1/(n-1), ..., the last unconditional."""
    rules = []
    for i, (member, sep_chain) in enumerate(seps.items()):
        left = len(seps) - i
        pick = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
        rules.append(f"-A {chain} -m comment --comment \"{name} -> {plan.pods[member].ip}:{target_port}\" "
                     f"{pick}-j {sep_chain}")
    return rules


def install_node_nat(node_netns_path: str, plan: LabPlan, node: str) -> None:
    """Apply with the host's own `iptables-restore`, so `netlab exec NODE -- iptables -t nat -L` shows the rules."""
    text = render_node_nat(plan, node)
    result = nsenter_run(node_netns_path, ["iptables-restore", "--noflush"], stdin=text, package="iptables")
    if result.returncode != 0:
        raise KernelError(f"iptables-restore failed in {node_netns_path}: {result.stderr.strip()}\n"
                          f"--- rules ---\n{text}", hint="run `netlab doctor` to check nat support")
