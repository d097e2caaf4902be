"""The node's nat table: kube-proxy-style service DNAT and masquerade toward external hosts.

Rules live in NETLAB_* chains of the node namespace, rendered as `iptables-restore --noflush` text (pure) and
applied with the host's iptables inside the node namespace only.
"""

from __future__ import annotations

from netlab.errors import KernelError
from netlab.kernel.nsutil import nsenter_run
from netlab.plan import POD_CIDR, LabPlan


def render_node_nat(plan: LabPlan) -> str:
    lines = ["*nat", ":NETLAB-SERVICES - [0:0]", ":NETLAB-POSTROUTING - [0:0]"]
    # PREROUTING catches pods' traffic (it arrives on a veth); OUTPUT catches `netlab exec _node` tools.
    lines += ["-A PREROUTING -j NETLAB-SERVICES", "-A OUTPUT -j NETLAB-SERVICES"]
    for svc in plan.services.values():
        lines.append(
            f"-A NETLAB-SERVICES -d {svc.ip}/32 -p tcp -m tcp --dport {svc.port} "
            f"-j DNAT --to-destination {svc.pod_ip}:{svc.target_port}"
        )
    lines.append("-A POSTROUTING -j NETLAB-POSTROUTING")
    if plan.externals:
        lines.append(f"-A NETLAB-POSTROUTING -s {POD_CIDR} -o {plan.external_bridge} -j MASQUERADE")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def install_node_nat(node_netns_path: str, plan: LabPlan) -> None:
    """Apply with the host's own `iptables-restore`, so `netlab exec _node -- iptables -t nat -L` shows the rules."""
    text = render_node_nat(plan)
    result = nsenter_run(node_netns_path, ["iptables-restore", "--noflush"], stdin=text, package="iptables")
    if result.returncode != 0:
        raise KernelError(f"iptables-restore failed in {node_netns_path}: {result.stderr.strip()}\n"
                          f"--- rules ---\n{text}", hint="run `netlab doctor` to check nat support")
