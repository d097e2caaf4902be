"""Bring a scenario up on the kernel.

`up` records every object in the lab's state (netlab.engine.state) as soon as it exists; that record is the LIFO
undo stack teardown pops, on success, error, Ctrl-C and SIGTERM alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from netlab.engine import require_root
from netlab.engine.members import member_netns_path, start_app
from netlab.engine.mesh import config_path, write_snapshots
from netlab.engine.sidecar import install_sidecar
from netlab.engine.state import LabState, check_lab_name
from netlab.engine.teardown import teardown
from netlab.errors import UsageError
from netlab.kernel import holders, hosts, impair, links, node_nat
from netlab.kernel.impair import Impairment
from netlab.kernel.nsutil import netns_inode, write_sysctls
from netlab.model.schema import Scenario
from netlab.plan import NODE, ROUTER, ROUTER_ADDRESS, STATE_ROOT, LabPlan, make_plan
from netlab.signals import deferred

Progress = Callable[[str], None]


@contextmanager
def _teardown_on_failure(state: LabState) -> Iterator[None]:
    owner = os.getpid()
    try:
        yield
    except BaseException as err:
        if os.getpid() != owner:  # a forked child (a library's helper) unwinding: never tear down from there
            raise
        failures = teardown(state)
        if failures and isinstance(err, Exception):
            err.add_note("cleanup after the failure also hit: " + "; ".join(failures))
        raise


def up(scenario: Scenario, scenario_path: Path | str, lab: str | None = None,
       progress: Progress = lambda _msg: None, scenario_text: str | None = None) -> LabState:
    """Build the lab; on any failure or interrupt everything created so far is removed before re-raising.
    `scenario_text`: the scenario made of manifests, saved in the lab's state (what `netlab checks` reads again)."""
    require_root()
    plan = make_plan(scenario, check_lab_name(lab) if lab else None)
    # Absolute: `netlab checks` and `trace` reload it later, maybe from another directory.
    state = LabState(lab=plan.lab, scenario=str(Path(scenario_path).resolve()))
    os.makedirs(STATE_ROOT, exist_ok=True)
    try:
        os.mkdir(state.directory)  # atomic: of two `up`s with the same name, one wins
    except FileExistsError:
        raise UsageError(f"a lab named '{plan.lab}' is already up",
                         hint=f"`netlab down {plan.lab}` first, or pick another name with --name") from None
    with _teardown_on_failure(state):
        state.push("state_dir", dir=state.directory)
        if scenario_text is not None:
            state.scenario = os.path.join(state.directory, "scenario.yaml")
            Path(state.scenario).write_text(scenario_text)
        _build(plan, scenario, state, progress)
        state.status = "up"
        state.save()
    return state


def _build(plan: LabPlan, scenario: Scenario, state: LabState, progress: Progress) -> None:
    state.plan = plan.to_json()
    router_path = None
    if plan.multi_node:
        assert plan.router_netns is not None
        progress("node LAN")
        router_path = _member(state, plan, ROUTER, plan.router_netns, kind="network", ip=str(ROUTER_ADDRESS)).netns_path
        write_sysctls(router_path, links.NODE_SYSCTLS)
        links.create_external_bridge(router_path, plan)
    node_paths = {}
    for node in plan.nodes.values():
        progress(f"node {node.name}")
        holder = _member(state, plan, node.name, node.netns, kind="node", ip=str(node.ip) if node.ip else None)
        write_sysctls(holder.netns_path, links.NODE_SYSCTLS)
        links.setup_node(holder.netns_path)
        if router_path is not None:
            links.connect_node(router_path, plan, node, holder.pid)
            _write_hosts(state, node.netns, plan.hosts_file())
        node_paths[node.name] = holder.netns_path
    if router_path is not None:
        for node in plan.nodes.values():
            links.route_pod_cidrs(node_paths[node.name], plan, node)
    state.info["services"] = {
        key: {"namespace": s.namespace, "ip": str(s.ip), "ports": [p.model_dump() for p in s.ports],
              "endpoints": list(s.endpoints), "type": s.type,
              "externalTrafficPolicy": s.external_traffic_policy}
        for key, s in plan.services.items()
    }
    for pod in plan.pods.values():
        progress(f"pod {pod.key}")
        holder = _member(state, plan, pod.key, pod.netns, kind="pod", ip=str(pod.ip))
        links.connect_pod(node_paths[pod.node], plan.lab, pod, holder.pid)
        _write_hosts(state, pod.netns, plan.hosts_file(pod.namespace))
    external_path = router_path or node_paths[NODE]
    if plan.externals and router_path is None:
        links.create_external_bridge(external_path, plan)
    for ext in plan.externals.values():
        progress(f"external host {ext.name}")
        holder = _member(state, plan, ext.name, ext.netns, kind="external", ip=str(ext.ip))
        links.connect_external(external_path, plan, ext, holder.pid)
        _write_hosts(state, ext.netns, plan.hosts_file())
    for member, link in scenario.links.items():
        progress(f"link impairment on {member}")
        impairment = Impairment(link.delay, link.jitter, link.loss, link.rate)
        impair.apply(member_netns_path(state, member), impairment, member)
        state.members[member]["impairment"] = impairment.describe()
    progress("node nat: services and masquerade")
    for node in plan.nodes.values():
        node_nat.install_node_nat(node_paths[node.name], plan, node.name)
    progress("control plane: a configuration snapshot per sidecar")
    write_snapshots(state, scenario.istio)
    # Start every proxy and app first, then wait for them all: their interpreters start up in parallel.
    waits: list[Callable[[], None]] = []
    for pod in plan.pods.values():
        if pod.sidecar is not None:
            progress(f"sidecar in {pod.key} (Istio {pod.sidecar.istio})")
            waits.append(install_sidecar(state, pod.key, pod.sidecar, config_path(state, pod.key), scenario.iptables))
    apps = [(p.key, p.labels.get("version", ""), p.app) for p in plan.pods.values() if p.app]
    apps += [(e.name, "", e.app) for e in plan.externals.values() if e.app]
    for key, version, app in apps:
        progress(f"app {app.kind} in {key}")
        waits.append(start_app(state, key, app, version))
    progress("waiting for sidecars and apps")
    for wait in waits:
        wait()


def _write_hosts(state: LabState, netns: str, text: str) -> None:
    with deferred():
        if hosts.write_hosts(netns, text):
            state.push("hosts_root")
        state.push("hosts", netns=netns)


def _member(state: LabState, plan: LabPlan, member: str, netns: str, kind: str,
            ip: str | None) -> holders.Holder:
    with deferred():
        holder = holders.spawn_holder(plan.lab, member, netns)
        state.members[member] = {"kind": kind, "netns": netns, "ip": ip, "pid": holder.pid,
                                 "inode": netns_inode(holder.netns_path)}
        state.push("holder", member=member, pid=holder.pid, started=holder.started)
    with deferred():
        holders.link_netns_name(holder)
        state.push("netns_link", netns=netns)
    return holder


