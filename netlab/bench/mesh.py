"""Control-plane benchmark: build a sidecar's snapshot for a big mesh, load it, and reload it in a running proxy.

Targets (the control-plane issue): with 1000 services and 10 000 endpoints, the snapshot is built in under 1 s and a
running proxy reloads it in under 200 ms. The mesh is a plan made directly (no scenario file: 10 000 pods would only
time the YAML model); the reload is timed on a real proxy in a lab pod, from SIGHUP until its admin API serves the
new version (what `netlab apply` waits for).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netlab.bench.report import fmt, format_table, median
from netlab.engine import build, mesh, sidecar, teardown
from netlab.engine.members import member_netns_path
from netlab.istio_init.flags import parse_flags
from netlab.kernel.iptables import apply_istio_init
from netlab.mesh.build import ProxySpec, build_snapshot, registry
from netlab.mesh.types import Snapshot, loads
from netlab.model.loader import parse_scenario
from netlab.model.schema import Sidecar
from netlab.plan import POD_CIDR, SERVICE_CIDR, LabPlan, PodPlan, PortPlan, ServicePlan
from netlab.proxy.dispatch import Dispatch
from netlab.proxy.stats import Stats

ISTIO = "1.22"
BUILD_TARGET_MS, RELOAD_TARGET_MS = 1000.0, 200.0
RELOAD_TIMEOUT = 10.0


@dataclass
class MeshBench:
    services: int
    endpoints: int
    snapshot_mb: float = 0.0
    build_ms: list[float] = field(default_factory=list)  # registry + snapshot + JSON, for one sidecar
    load_ms: list[float] = field(default_factory=list)  # parse + routing tables, in this process
    reload_ms: list[float] = field(default_factory=list)  # SIGHUP until the running proxy serves the version
    problems: list[str] = field(default_factory=list)


def big_plan(services: int, per_service: int) -> LabPlan:
    """A plan of `services` services with `per_service` pods each, and a client with a sidecar."""
    sidecar_spec = Sidecar(istio=ISTIO)
    pods = {"client": PodPlan(key="client", name="client", namespace="default", workload="client", labels={},
                              service_account="default", netns="", ip=POD_CIDR.network_address + 2, node_veth="",
                              temp_peer="", sidecar=sidecar_spec)}
    svcs = {}
    for s in range(services):
        keys = []
        for e in range(per_service):
            key = f"svc{s}-{e}"
            pods[key] = PodPlan.model_construct(key=key, name=key, namespace="default", workload=f"svc{s}",
                                                labels={"app": f"svc{s}"}, service_account="default", netns="",
                                                ip=POD_CIDR.network_address + 10 + s * per_service + e,
                                                node_veth="", temp_peer="", sidecar=None, app=None)
            keys.append(key)
        svcs[f"svc{s}"] = ServicePlan.model_construct(
            key=f"svc{s}", name=f"svc{s}", namespace="default", ip=SERVICE_CIDR.network_address + 10 + s,
            ports=(PortPlan(name="tcp-app" if s % 2 else "http-app", port=8080, target_port=8080),),
            endpoints=tuple(keys))
    return LabPlan.model_construct(lab="bench", id="0000", node_netns="", pods=pods, externals={}, services=svcs,
                                   external_bridge="", node_external_addresses=(), namespaces={"default": {}},
                                   mesh_config=parse_scenario({"name": "x", "pods": {"c": {}}}).mesh_config)


def build_client_snapshot(plan: LabPlan, version: int) -> Snapshot:
    client = plan.pods["client"]
    spec = ProxySpec("client", "client", "default", str(client.ip), ISTIO)
    return build_snapshot(spec, registry(plan, []), {}, version=version)


def run(services: int = 1000, endpoints: int = 10000, repeat: int = 5,
        progress: Callable[[str], None] = lambda _m: None) -> MeshBench:
    per_service = max(1, endpoints // services)
    if (POD_CIDR.num_addresses - 10) < services * per_service:
        raise ValueError(f"{services * per_service} endpoints do not fit {POD_CIDR}")
    result = MeshBench(services, services * per_service)
    progress("making the plan")
    plan = big_plan(services, per_service)
    text = ""
    for r in range(repeat):
        progress(f"build {r + 1}/{repeat}")
        start = time.perf_counter()
        text = build_client_snapshot(plan, r + 2).dumps()
        result.build_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        snapshot = loads(text)
        Stats(1).register(c.name for c in snapshot.clusters)
        Dispatch(snapshot)
        result.load_ms.append((time.perf_counter() - start) * 1000)
    result.snapshot_mb = len(text) / 1e6
    progress("reloads in a running proxy")
    result.reload_ms, result.problems = reloads(plan, repeat)
    return result


def reloads(plan: LabPlan, repeat: int) -> tuple[list[float], list[str]]:
    """Start a proxy in a lab pod on a small snapshot, then push the big one `repeat` times."""
    name = f"bench-mesh-{secrets.token_hex(2)}"
    state = build.up(parse_scenario({"name": name, "pods": {"client": {}}}, source="bench"), "<netlab bench mesh>",
                     name)
    timings = []
    try:
        netns = member_netns_path(state, "client")
        apply_istio_init(netns, parse_flags(["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                                             "-x", "", "-b", "*"], ISTIO), ISTIO)
        path = Path(mesh.config_path(state, "client"))
        path.parent.mkdir(parents=True, exist_ok=True)
        small = big_plan(1, 1)
        path.write_text(build_client_snapshot(small, 1).dumps())
        sidecar.start_proxy(state, "client", ["--config", str(path)])()
        pid = mesh.proxies(state)["client"]["pid"]
        for r in range(repeat):
            version = 100 + r
            tmp = path.with_suffix(".tmp")
            tmp.write_text(build_client_snapshot(plan, version).dumps())
            os.replace(tmp, path)
            start = time.perf_counter()
            os.kill(pid, signal.SIGHUP)
            while mesh.admin_get(netns, "/server_info")["config_version"] != version:
                if time.perf_counter() - start > RELOAD_TIMEOUT:
                    raise TimeoutError(f"the proxy did not load version {version} in {RELOAD_TIMEOUT:.0f} s")
                time.sleep(0.002)
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        problems = teardown.down(state.lab)
    return timings, problems


def render(result: MeshBench) -> str:
    rows = [
        ["snapshot build (registry, listeners, clusters, JSON)", fmt(median(result.build_ms)),
         fmt(max(result.build_ms)), f"< {BUILD_TARGET_MS:.0f}", "yes" if median(result.build_ms) < BUILD_TARGET_MS
         else "NO"],
        ["proxy load (parse, routing tables, stats)", fmt(median(result.load_ms)), fmt(max(result.load_ms)), "", ""],
        ["reload in a running proxy (SIGHUP → serving it)", fmt(median(result.reload_ms)), fmt(max(result.reload_ms)),
         f"< {RELOAD_TARGET_MS:.0f}", "yes" if median(result.reload_ms) < RELOAD_TARGET_MS else "NO"],
    ]
    head = (f"{result.services} services, {result.endpoints} endpoints, one sidecar's snapshot: "
            f"{result.snapshot_mb:.2f} MB of JSON; medians of {len(result.build_ms)} rounds, {os.cpu_count()} cores")
    return head + "\n" + format_table(["step", "median ms", "max ms", "target ms", "met"], rows, left=(0,))


def targets_met(result: MeshBench) -> tuple[int, int]:
    met = (median(result.build_ms) < BUILD_TARGET_MS) + (median(result.reload_ms) < RELOAD_TARGET_MS)
    return int(met), 2

