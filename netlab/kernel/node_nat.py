"""The node's tables: kube-proxy-style service DNAT and masquerade toward external hosts.

Laid out as kube-proxy's iptables mode does it, with NETLAB-* chain names: NETLAB-SERVICES matches each service
port's ClusterIP:port and jumps to its NETLAB-SVC-* chain, which picks one endpoint at random (`-m statistic --mode
random --probability 1/n, 1/(n-1), ...`, the last unconditional) and jumps to that endpoint's NETLAB-SEP-* chain,
which DNATs. A service port without endpoints is rejected in the filter table (icmp port unreachable), as
kube-proxy does. Rendered as `iptables-restore --noflush` text (pure) and applied inside the node namespace only.
"""

from __future__ import annotations

import hashlib

from netlab.errors import KernelError
from netlab.kernel.nsutil import nsenter_run
from netlab.plan import POD_CIDR, LabPlan


def _chain(prefix: str, *parts: object) -> str:
    """NETLAB-SVC-/NETLAB-SEP- plus 16 hex digits of a hash, as kube-proxy names its chains (28 characters max)."""
    return prefix + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16].upper()


def render_node_nat(plan: LabPlan) -> str:
    nat = ["*nat", ":NETLAB-SERVICES - [0:0]", ":NETLAB-POSTROUTING - [0:0]"]
    # PREROUTING catches pods' traffic (it arrives on a veth); OUTPUT catches `netlab exec _node` tools.
    rules = ["-A PREROUTING -j NETLAB-SERVICES", "-A OUTPUT -j NETLAB-SERVICES"]
    rejects: list[str] = []
    for svc in plan.services.values():
        for port in svc.ports:
            name = f"{svc.namespace}/{svc.name}:{port.name or port.port}"
            match = f"-d {svc.ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {port.port}"
            if not svc.endpoints:
                rejects.append(f"-A NETLAB-SERVICES {match} -j REJECT --reject-with icmp-port-unreachable")
                continue
            svc_chain = _chain("NETLAB-SVC-", plan.lab, svc.key, port.port)
            nat.append(f":{svc_chain} - [0:0]")
            rules.append(f"-A NETLAB-SERVICES {match} -j {svc_chain}")
            for i, member in enumerate(svc.endpoints):
                pod = plan.pods[member]
                sep_chain = _chain("NETLAB-SEP-", plan.lab, svc.key, port.port, member)
                nat.append(f":{sep_chain} - [0:0]")
                left = len(svc.endpoints) - i
                pick = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
                rules.append(f"-A {svc_chain} -m comment --comment \"{name} -> {pod.ip}:{port.target_port}\" "
                             f"{pick}-j {sep_chain}")
                rules.append(f"-A {sep_chain} -p tcp -m tcp -j DNAT --to-destination {pod.ip}:{port.target_port}")
    rules.append("-A POSTROUTING -j NETLAB-POSTROUTING")
    if plan.externals:
        rules.append(f"-A NETLAB-POSTROUTING -s {POD_CIDR} -o {plan.external_bridge} -j MASQUERADE")
    text = "\n".join([*nat, *rules, "COMMIT"]) + "\n"
    if rejects:
        text += "\n".join(["*filter", ":NETLAB-SERVICES - [0:0]", "-A FORWARD -m conntrack --ctstate NEW "
                           "-j NETLAB-SERVICES", "-A OUTPUT -m conntrack --ctstate NEW -j NETLAB-SERVICES",
                           *rejects, "COMMIT"]) + "\n"
    return text


def install_node_nat(node_netns_path: str, plan: LabPlan) -> None:
    """Apply with the host's own `iptables-restore`, so `netlab exec _node -- iptables -t nat -L` shows the rules."""
    text = render_node_nat(plan)
    result = nsenter_run(node_netns_path, ["iptables-restore", "--noflush"], stdin=text, package="iptables")
    if result.returncode != 0:
        raise KernelError(f"iptables-restore failed in {node_netns_path}: {result.stderr.strip()}\n"
                          f"--- rules ---\n{text}", hint="run `netlab doctor` to check nat support")
