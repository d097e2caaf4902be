"""`netlab status [LAB] [--json]`: what is up, with PIDs for `nsenter -t PID -n` and liveness from the kernel."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.table import Table

from netlab.cli.app import app
from netlab.cli.common import lab_flag_option, one_lab, out, pick_pod, print_json
from netlab.engine.mesh import credential_certificates, gateway_ca, proxy_status
from netlab.engine.state import LabState, list_labs, load_state
from netlab.errors import UsageError
from netlab.kernel.nsutil import is_same_process
from netlab.pki import dns_names


def describe(state: LabState) -> dict[str, Any]:
    holders = {e["member"]: e for e in state.undo if e["kind"] == "holder"}
    members = {
        name: {**info, "alive": name in holders and is_same_process(info["pid"], holders[name]["started"])}
        for name, info in state.members.items()
    }
    processes = [
        {k: e[k] for k in ("member", "role", "pid", "argv", "log")} | {"alive": is_same_process(e["pid"], e["started"])}
        for e in state.undo if e["kind"] == "process"
    ]
    mesh = state.info.get("mesh", {})
    plan = state.lab_plan()
    status = state.status
    owner = state.info.get("owner")
    if status == "up" and owner and not is_same_process(owner["pid"], owner["started"] or -1):
        status = (f"orphaned: its `netlab {owner['verb']}` (pid {owner['pid']}) is gone; "
                  f"`netlab clean --lab {state.lab}`")
    elif status == "up" and not all(m["alive"] for m in members.values()):
        status = f"broken: a namespace holder is gone; `netlab down {state.lab}`"
    nodes = {n.name: {"ip": str(n.ip) if n.ip else None, "pod_cidr": str(n.pod_cidr),
                      "pods": [p.key for p in plan.pods.values() if p.node == n.name]} for n in plan.nodes.values()}
    apps = {}
    running = [*((p.key, p.app) for p in plan.pods.values()), *((e.name, e.app) for e in plan.externals.values())]
    for key, spec in running:
        if spec is None:
            continue
        where = "no declared listen address"
        if spec.listen is not None:
            eth0 = spec.listen.host == "eth0"
            host = state.members.get(key, {}).get("ip") if eth0 else spec.listen.host
            where = f"listens on {host}:{spec.listen.port}" + (" (eth0, the pod IP)" if eth0 else "")
        apps[key] = f"{spec.kind} app, {where}"
    return {"lab": state.lab, "status": status, "scenario": state.scenario, "nodes": nodes, "apps": apps,
            "members": members,
            "processes": processes, "services": state.info.get("services", {}),
            "sidecars": sidecars(state, processes), "config_version": mesh.get("version"),
            "istio_resources": [f"{r['kind']} {r['metadata'].get('namespace', 'default')}/{r['metadata']['name']}"
                                for r in mesh.get("resources", [])],
            "gateway_credentials": gateway_credentials(state)}


def gateway_credentials(state: LabState) -> list[dict[str, Any]]:
    """The Secrets the lab made for each gateway pod's HTTPS servers, their hosts, and the root a client trusts to
    call them."""
    found = []
    root = str(gateway_ca(state).root_path)
    for member in state.members:
        for name, cert in credential_certificates(state, member).items():
            found.append({"pod": member, "name": name, "ca": root, "hosts": dns_names(cert)})
    return found


def sidecars(state: LabState, processes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each sidecar's settings and, like `istioctl proxy-status`, whether it runs the last pushed configuration."""
    pushed = state.info.get("mesh", {}).get("version")
    alive = {p["member"] for p in processes if p["role"] == "proxy" and p["alive"]}
    found = {}
    for member, info in state.members.items():
        sidecar = info.get("sidecar")
        if sidecar is None:
            continue
        if member not in alive:
            sync, version = "NOT RUNNING", None
        elif os.geteuid() != 0 or state.status != "up":
            sync, version = "UNKNOWN (needs root)" if os.geteuid() else "UNKNOWN", None
        else:
            status = proxy_status(state, member)
            version = status.version
            sync = "SYNCED" if version == pushed else (f"STALE ({status.error})" if status.error else "STALE")
        router = sidecar.get("type") == "router"
        found[member] = {"istio": sidecar["istio"], "interception": "none (router)" if router else sidecar["mode"],
                         "iptables": sidecar["backend"] or "-",
                         "config_version": version, "status": sync}
    return found


WIDE = 120  # columns the status table needs with its netns column


def print_lab(state: LabState) -> None:
    info = describe(state)
    narrow = out.width < WIDE  # the netns column goes; its names follow one rule, which the caption gives
    netns = f"netlab.{state.lab}.MEMBER (NAMESPACE/POD: netlab.{state.lab}.POD.NAMESPACE)" if narrow else "NETNS"
    table = Table(title=f"lab {state.lab} ({info['status']})", title_justify="left",
                  caption=f"ip netns exec {netns} CMD  ·  nsenter -t PID -n CMD", caption_justify="left")
    # Names and PIDs are what users copy into `ip netns exec` and `nsenter -t`: never shorten them (a long name
    # folds onto the next line in a narrow terminal; an address or a PID stays whole).
    multi_node = len(info["nodes"]) > 1
    table.add_column("member", overflow="fold")
    for column in ("kind", "IP", *(("node",) if multi_node else ())):
        table.add_column(column, no_wrap=True, min_width=15 if column == "IP" else None)
    if not narrow:
        table.add_column("netns", overflow="fold")
    table.add_column("PID", no_wrap=True)
    table.add_column("processes", overflow="fold")
    node_of = {pod: node for node, n in info["nodes"].items() for pod in n["pods"]}
    for name, m in info["members"].items():
        procs = " ".join(f"{p['role']}:{p['pid']}" + ("" if p["alive"] else "(dead)")
                          for p in info["processes"] if p["member"] == name)
        pid = str(m["pid"]) + ("" if m["alive"] else " (gone)")
        where = [node_of.get(name, "")] if multi_node else []
        table.add_row(name, m["kind"], m["ip"] or "", *where, *([] if narrow else [m["netns"]]), pid, procs)
    out.print(table)
    if multi_node:
        for name, node in info["nodes"].items():
            out.print(f"node {name}: {node['ip']}, pods {node['pod_cidr']}: {', '.join(node['pods']) or '(none)'}",
                      soft_wrap=True)
    for name, svc in info["services"].items():
        for port in svc["ports"]:
            targets = ", ".join(f"{pod}:{port['target_port']}" for pod in svc["endpoints"]) or "(no endpoints)"
            node_port = (f"; NodePort {port['node_port']} on every node (externalTrafficPolicy "
                         f"{svc.get('externalTrafficPolicy', 'Cluster')})" if port.get("node_port") else "")
            out.print(f"service {name}: {svc['ip']}:{port['port']} -> {targets}{node_port}", soft_wrap=True)
    for name, listen in info["apps"].items():
        out.print(f"app {name}: {listen}", soft_wrap=True)
    for name, m in info["members"].items():
        if m.get("impairment"):
            out.print(f"link {name} eth0: {m['impairment']}", soft_wrap=True)
    for name, sidecar in info["sidecars"].items():
        version = f"config v{sidecar['config_version']}" if sidecar["config_version"] is not None else "config ?"
        out.print(f"sidecar {name}: Istio {sidecar['istio']} {sidecar['interception']}, iptables {sidecar['iptables']}"
                  f", {version} {sidecar['status']}", soft_wrap=True)
    if info["istio_resources"]:
        out.print(f"istio resources: {', '.join(info['istio_resources'])}", soft_wrap=True)
    for credential in info["gateway_credentials"]:
        out.print(f"gateway credential {credential['name']} of {credential['pod']}: {', '.join(credential['hosts'])}"
                  f"; clients trust {credential['ca']} (curl --cacert FILE)", soft_wrap=True)


@app.command()
@click.argument("lab", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--pid", "pid_of", metavar="POD", help="print only the PID of POD (for nsenter -t PID -n)")
@lab_flag_option
def status(lab: str | None, as_json: bool, pid_of: str | None, lab_flag: str | None) -> None:
    """Show the labs that are up (or one LAB): members, addresses, PIDs, processes, services."""
    lab = one_lab(lab, lab_flag)
    if pid_of is not None:
        state, member, _ = pick_pod(lab, pid_of)  # a clear error for an unknown pod
        click.echo(state.members[member]["pid"])
        return
    states = [s for s in (load_state(name) for name in ([lab] if lab else list_labs())) if s is not None]
    if lab is not None and not states:
        raise UsageError(f"no lab named '{lab}' is up", hint=f"labs that are up: {', '.join(list_labs()) or 'none'}")
    if as_json:
        print_json({"labs": [describe(s) for s in states]})
        return
    if not states:
        out.print("no lab is up")
    for state in states:
        print_lab(state)
