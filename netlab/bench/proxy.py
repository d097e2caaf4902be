"""Proxy benchmark: the same load with no sidecar, through netlab's proxy, and through HAProxy doing the same job.

Each variant of each round gets a fresh lab: with `Connection: close` load the client's ports wrap onto 4-tuples
still in TIME_WAIT (and conntrack) after some 20k connections, which would collapse the rate of whichever variant
runs later. Two topologies, each with istio-init's real rules (Istio 1.10, the injector's flags) where a proxy runs:
- inbound (default): client -> server pod IP; the server pod runs nginx (HTTP, :8080) and iperf3 (bulk, :5201)
  and, proxied, a proxy on 15006: netlab's (`--istio 1.10 --declared-ports 8080`), or HAProxy as the same
  transparent inbound proxy (`server s 0.0.0.0:0` = the original destination, `source 127.0.0.6` like Envoy);
- vip (`--vip`): client -> a Service's ClusterIP with 3 endpoints (3 server pods with nginx); proxied, the client
  pod's outbound capture goes to a proxy on 15001 that picks the endpoint: netlab's, configured by the lab's
  control plane (cluster outbound|8080||web... with the 3 pod IPs, ROUND_ROBIN as 1.10), or HAProxy with the same
  3 servers (`balance roundrobin`). Without a proxy the node's kube-proxy-style DNAT picks the pod. Bulk goes to a
  fourth pod behind a service of its own (iperf3's control and data connections must reach the same server).
- http (`--http`): the inbound topology with port 8080 declared HTTP (a Service port named http): netlab's proxy
  parses, routes and re-frames each request (HTTP connection manager, access log, Istio metrics), HAProxy runs in
  `mode http` with `option forwardfor` and its HTTP log; 100 keep-alive connections, the proxy's memory sampled
  while they are open; no bulk run.
- mtls (`--mtls`): client -> a Service's ClusterIP with one endpoint, a proxy on both sides with mutual TLS between
  them: netlab's two sidecars (auto mTLS, certificates from the lab's CA, TLS 1.3, session resumption), or two
  HAProxies (the client's originating TLS with the same certificates, the server's terminating it and asking for the
  client's); TCP ports, so both relay bytes.
- gateway (`--gateway`): client -> a gateway pod's port 8080 -> the server pod's nginx: netlab's proxy in router mode
  (a Gateway and a VirtualService bound to it; the edge's x-forwarded-for, access log and metrics), HAProxy doing
  the same edge job (`mode http`, `option forwardfor`, httplog); no istio-init rules (a gateway captures nothing).
  Without a proxy the client calls the server directly. 100 keep-alive connections, no bulk run.
Proxies get one worker/thread per core, `tune.bufsize 262144` for HAProxy, and run as uid/gid 1337 like Envoy.
Load runs in the client pod: wrk for throughput, netlab.bench.loadgen for latency, iperf3 for bulk.
Variants are interleaved (the order rotates every round) and the figures are medians over the rounds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from netlab.bench.report import (
    FLOOR,
    NETLAB,
    PROXY_HEADERS,
    VARIANTS,
    Metric,
    Round,
    Row,
    compare,
    format_table,
    row_cells,
)
from netlab.engine import build, members, mesh, require_root, sidecar, teardown
from netlab.engine.mesh import proxies
from netlab.engine.state import LabState
from netlab.errors import EnvironmentProblem, KernelError
from netlab.istio_init.flags import parse_flags
from netlab.kernel.iptables import apply_istio_init
from netlab.kernel.nsutil import nsenter_run, write_sysctls
from netlab.mesh.build import ProxySpec, build_snapshot, outbound_cluster_name
from netlab.mesh.gateway import router_snapshot
from netlab.mesh.registry import HTTP, TCP, kubernetes_services
from netlab.mesh.versions import mesh_traits
from netlab.model.loader import parse_resources, parse_scenario
from netlab.model.schema import injector_flags
from netlab.pki import LabCA

ISTIO = "1.10"
INJECTOR_FLAGS = injector_flags("REDIRECT")  # what the sidecar injector passes istio-iptables
HTTP_PORT, BULK_PORT, INBOUND_PORT, OUTBOUND_PORT = 8080, 5201, 15006, 15001
VIP_REPLICAS = 3
PROXY_UID = PROXY_GID = 1337
TOOLS = {"nginx": "nginx-light", "wrk": "wrk", "iperf3": "iperf3", "haproxy": "haproxy"}
# Both pods get the widest ephemeral range: more connections per lab before any 4-tuple is reused.
POD_SYSCTLS = {"net.ipv4.ip_local_port_range": "1024 65535"}

METRICS = [
    Metric("ka_rps", "keep-alive req/s", True, target=0.95),
    Metric("nc_rps", "new-connection req/s", True, target=0.6),
    Metric("open_us", "latency, open conn, µs", False, added=True, target=1.1),
    Metric("new_us", "latency, new conn, µs", False, added=True, target=1.8),
    Metric("p50_us", "p50 @1000 req/s, µs", False, added=True, target=1.1),
    Metric("p90_us", "p90 @1000 req/s, µs", False, added=True, target=1.1),
    Metric("p99_us", "p99 @1000 req/s, µs", False, added=True, target=1.1),
    Metric("bulk_mbs", "bulk MB/s", True, target=1.0),
    Metric("cpu_ms", "proxy CPU ms per 1000 req", False, target=1.3, proxy_only=True),
    Metric("pss_mb", "proxy memory MB (PSS, all procs)", False, limit=30, proxy_only=True),
    Metric("rss_mb", "proxy RSS MB (largest proc)", False, limit=30, proxy_only=True),
]
# The security issue's targets for two sidecars with mTLS between them, against two HAProxies doing the same.
MTLS_METRICS = [
    Metric("ka_rps", "keep-alive req/s", True, target=0.8),
    Metric("nc_rps", "new-connection req/s", True, target=0.6),
    Metric("open_us", "latency, open conn, µs", False, added=True),
    Metric("new_us", "latency, new conn, µs", False, added=True),
    Metric("p50_us", "p50 @1000 req/s, µs", False, added=True),
    Metric("p90_us", "p90 @1000 req/s, µs", False, added=True),
    Metric("p99_us", "p99 @1000 req/s, µs", False, added=True),
    Metric("bulk_mbs", "bulk MB/s", True, target=0.8),
    Metric("cpu_ms", "proxies' CPU ms per 1000 req", False, proxy_only=True),
    Metric("pss_mb", "proxies' memory MB (PSS)", False, proxy_only=True),
]
ISTIO_P90_ADDED_MS = 2.65  # istio.io ops/deployment/performance-and-scalability (1.10-1.14): Envoy adds 2.65 ms
TOPOLOGIES = ("inbound", "vip", "http", "mtls", "gateway")
# The HTTP issue's targets: req/s ≥ 0.5× HAProxy's, added p50/p99 ≤ 1.5×, ≤ 0.10 vCPU per 1000 req/s (100 ms of
# CPU per 1000 requests; half of Envoy's published 0.20), RSS ≤ 60 MB with 100 keep-alive connections open.
HTTP_METRICS = [
    Metric("ka_rps", "keep-alive req/s", True, target=0.5),
    Metric("nc_rps", "new-connection req/s", True),
    Metric("open_us", "latency, open conn, µs", False, added=True),
    Metric("new_us", "latency, new conn, µs", False, added=True),
    Metric("p50_us", "p50 @1000 req/s, µs", False, added=True, target=1.5),
    Metric("p90_us", "p90 @1000 req/s, µs", False, added=True),
    Metric("p99_us", "p99 @1000 req/s, µs", False, added=True, target=1.5),
    Metric("cpu_ms", "proxy CPU ms per 1000 req", False, limit=100, proxy_only=True),
    Metric("pss_mb", "proxy memory MB (PSS, all procs)", False, proxy_only=True),
    Metric("rss_mb", "proxy RSS MB (largest proc), 100 conns", False, limit=60, proxy_only=True),
]


@dataclass(frozen=True)
class Plan:
    """Durations and sample counts of one variant's load."""

    warmup_s: int = 1
    keepalive_s: int = 5
    newconn_s: int = 3
    rate_s: int = 5
    bulk_s: int = 3
    open_samples: int = 3000
    new_samples: int = 1000
    rate: int = 1000
    wrk_connections: int = 32
    http_connections: int = 100  # keep-alive connections of the --http run (the memory target's condition)


FULL = Plan()
QUICK = Plan(warmup_s=1, keepalive_s=2, newconn_s=2, rate_s=3, bulk_s=2, open_samples=1000, new_samples=400)


@dataclass
class BenchResult:
    rounds: list[dict[str, dict[str, float]]]
    rows: list[Row]
    plan: Plan
    workers: int
    problems: list[str]
    topology: str = "inbound"

    def as_json(self) -> dict[str, object]:
        return {
            "cores": os.cpu_count(), "workers": self.workers, "topology": self.topology,
            "plan": self.plan.__dict__, "rounds": self.rounds,
            "summary": [{"metric": r.metric.key, "label": r.metric.label, "median": r.values, "added": r.added,
                         "vs_none": r.vs_floor, "netlab_vs_haproxy": r.vs_haproxy, "target_met": r.ok}
                        for r in self.rows],
            "problems": self.problems,
            "noise": noise_note(self.rounds, self.plan.rate),
        }


def check_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise EnvironmentProblem(f"netlab bench proxy needs {', '.join(missing)}",
                                 hint=f"apt-get install {' '.join(sorted(set(missing)))}")


# --- server side --------------------------------------------------------------------------------------------


def nginx_conf(directory: str, pod: str, workers: int) -> str:
    return f"""worker_processes {workers};
pid {directory}/run/{pod}.nginx.pid;
error_log {directory}/logs/{pod}.nginx.error.log warn;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {{
        listen {HTTP_PORT} backlog=4096 reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def _haproxy_head(threads: int) -> str:
    return f"""global
    nbthread {threads}
    maxconn 8000
    tune.bufsize 262144
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
"""


def haproxy_conf(threads: int) -> str:
    # server 0.0.0.0:0 = the connection's original destination (SO_ORIGINAL_DST), port included.
    return _haproxy_head(threads) + f"""frontend inbound
    bind 0.0.0.0:{INBOUND_PORT}
    default_backend original_destination
backend original_destination
    source 127.0.0.6
    server s 0.0.0.0:0
"""


def haproxy_http_conf(threads: int) -> str:
    """HAProxy as an HTTP inbound sidecar: parses each request, adds x-forwarded-for, logs it (stdout, which the
    lab keeps in the process's log file), keeps upstream connections alive."""
    return _haproxy_head(threads).replace("mode tcp", "mode http") + f"""    log stdout format raw local0
    option httplog
    option forwardfor
frontend inbound
    bind 0.0.0.0:{INBOUND_PORT}
    default_backend original_destination
backend original_destination
    source 127.0.0.6
    server s 0.0.0.0:0
"""


def haproxy_gateway_conf(threads: int, server_ip: str) -> str:
    """HAProxy at the edge: an HTTP listener on the gateway's port, x-forwarded-for added, requests logged, the
    server's connections kept alive."""
    return _haproxy_head(threads).replace("mode tcp", "mode http") + f"""    log stdout format raw local0
    option httplog
    option forwardfor
frontend gateway
    bind 0.0.0.0:{HTTP_PORT}
    default_backend web
backend web
    server s {server_ip}:{HTTP_PORT}
"""


def haproxy_vip_conf(threads: int, endpoints: Sequence[str], bulk_ip: str) -> str:
    """HAProxy as the client's outbound sidecar: what REDIRECT sends to 15001 goes to one of the service's pods,
    by the original destination port (HAProxy reads SO_ORIGINAL_DST for `dst_port`)."""
    web = "\n".join(f"    server s{i} {ip}:{HTTP_PORT}" for i, ip in enumerate(endpoints))
    return _haproxy_head(threads) + f"""frontend outbound
    bind 0.0.0.0:{OUTBOUND_PORT}
    use_backend bulk if {{ dst_port {BULK_PORT} }}
    default_backend web
backend web
    balance roundrobin
{web}
backend bulk
    server b {bulk_ip}:{BULK_PORT}
"""


def _write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(text)
    return path


def start_servers(state: LabState, workers: int, web: Sequence[str], bulk: str) -> None:
    for pod in web:
        conf = _write(state.member_file("run", pod, "nginx.conf"), nginx_conf(state.directory, pod, workers))
        error_log = state.member_file("logs", pod, "nginx.error.log")
        nginx = members.start_in_member(state, pod, "nginx", ["nginx", "-e", error_log, "-c", conf, "-g",
                                                              "daemon off;"])
        members.wait_listening(state, pod, HTTP_PORT, nginx)
    iperf = members.start_in_member(state, bulk, "iperf3", ["iperf3", "-s", "-4", "-p", str(BULK_PORT)])
    members.wait_listening(state, bulk, BULK_PORT, iperf)


def haproxy_mtls_confs(threads: int, certs: dict[str, str], server_ip: str) -> tuple[str, str]:
    """(client's, server's) HAProxy: TLS origination with the client's certificate and the server's verified
    against the root; TLS termination that asks for and verifies the client's. No SNI: with one, HAProxy checks
    the server certificate's host name against it, and a workload certificate has only a URI SAN."""
    tls = f"ssl crt {certs['client']} ca-file {certs['root']} verify required"
    client = _haproxy_head(threads) + f"""frontend outbound
    bind 0.0.0.0:{OUTBOUND_PORT}
    use_backend bulk if {{ dst_port {BULK_PORT} }}
    default_backend web
backend web
    server s {server_ip}:{HTTP_PORT} {tls}
backend bulk
    server b {server_ip}:{BULK_PORT} {tls}
"""
    server = _haproxy_head(threads) + f"""frontend inbound
    bind 0.0.0.0:{INBOUND_PORT} ssl crt {certs['server']} ca-file {certs['root']} verify required
    default_backend original_destination
backend original_destination
    source 127.0.0.6
    server s 0.0.0.0:0
"""
    return client, server


def proxied_pods(topology: str) -> tuple[str, ...]:
    """The pods a variant puts a proxy in (istio-init's rules with it)."""
    return {"vip": ("client",), "mtls": ("client", "server"), "gateway": ("gw",)}.get(topology, ("server",))


def start_proxies(state: LabState, variant: str, workers: int, access_log: bool, topology: str) -> list[int]:
    """istio-init's rules in each proxied pod and the variant's proxy there; returns the proxies' PIDs (and their
    workers')."""
    pods = proxied_pods(topology)
    for pod in pods if topology != "gateway" else ():
        apply_istio_init(members.member_netns_path(state, pod), parse_flags(INJECTOR_FLAGS, ISTIO), ISTIO)
    certs = issue_bench_certs(state) if topology == "mtls" else {}
    if variant == NETLAB:
        found = []
        for pod in pods:
            http = topology in ("http", "gateway")
            log = state.member_file("logs", pod, "proxy-access.log") if access_log or http else None
            if topology == "inbound":
                args = ["--istio", ISTIO, "--declared-ports", str(HTTP_PORT)]
            elif topology == "gateway":
                args = ["--config", gateway_snapshot(state)]
            else:
                inbound = {HTTP_PORT: HTTP} if topology == "http" else {HTTP_PORT: TCP, BULK_PORT: TCP}
                args = ["--config", sidecar_snapshot(state, pod, inbound if pod == "server" else {}, topology)]
            if topology == "mtls":
                args += ["--certs", certs[f"{pod}_dir"]]
            sidecar.start_proxy(state, pod, args, log, workers)()
            found += family(proxies(state)[pod]["pid"])
        return found
    if topology == "vip":
        endpoints = [state.members[f"server-{i}"]["ip"] for i in range(VIP_REPLICAS)]
        confs = {"client": (haproxy_vip_conf(workers, endpoints, state.members["bulk"]["ip"]), OUTBOUND_PORT)}
    elif topology == "mtls":
        client, server = haproxy_mtls_confs(workers, certs, state.members["server"]["ip"])
        confs = {"client": (client, OUTBOUND_PORT), "server": (server, INBOUND_PORT)}
    elif topology == "gateway":
        confs = {"gw": (haproxy_gateway_conf(workers, state.members["server"]["ip"]), HTTP_PORT)}
    else:
        confs = {"server": ((haproxy_http_conf if topology == "http" else haproxy_conf)(workers), INBOUND_PORT)}
    found = []
    for pod, (conf, port) in confs.items():
        path = _write(os.path.join(state.directory, f"haproxy-{pod}.cfg"), conf)
        proc = members.start_in_member(state, pod, "haproxy", ["haproxy", "-db", "-f", path],
                                       uid=PROXY_UID, gid=PROXY_GID)
        members.wait_listening(state, pod, port, proc)
        found += family(proc.pid)
    return found


def issue_bench_certs(state: LabState) -> dict[str, str]:
    """Workload certificates for client and server from a CA of the lab's, owned by the proxies' uid: as
    directories for netlab's proxies, as cert+key PEM files and the root for HAProxy."""
    ca = LabCA(os.path.join(state.directory, "pki"))
    ca.create()
    found = {"root": str(ca.root_path)}
    for pod in ("client", "server"):
        directory = ca.issue(os.path.join(state.directory, "pki", pod), "default", "default", PROXY_UID, PROXY_GID)
        found[f"{pod}_dir"] = str(directory)
        found[pod] = _write(os.path.join(directory, "haproxy.pem"),
                            (directory / "cert-chain.pem").read_text() + (directory / "key.pem").read_text())
        os.chown(found[pod], PROXY_UID, PROXY_GID)
        os.chmod(found[pod], 0o600)
    return found


def sidecar_snapshot(state: LabState, pod: str, inbound_ports: dict[int, str], topology: str) -> str:
    """The pod's sidecar configuration as the lab's control plane makes it (the lab's services and their pods).
    With mtls the server's endpoints are marked as having a sidecar that takes mTLS (the bench starts the proxies
    itself, so the lab's plan does not know it)."""
    plan = state.lab_plan()
    member = plan.pods[pod]
    spec = ProxySpec(member.key, member.name, member.namespace, str(member.ip), ISTIO, labels=dict(member.labels),
                     workload=member.workload)
    services = kubernetes_services(plan)
    if topology == "mtls":
        services = [replace(s, endpoints=tuple(replace(e, mtls_ports=frozenset(p.port for p in s.ports))
                                               for e in s.endpoints)) for s in services]
    snapshot = build_snapshot(spec, services, inbound_ports, version=1, mtls=topology == "mtls")
    path = mesh.config_path(state, pod)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(snapshot.dumps())
    return path


GATEWAY_RESOURCES = [
    {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "bench"},
     "spec": {"selector": {"istio": "ingressgateway"},
              "servers": [{"port": {"number": HTTP_PORT, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
    {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
     "spec": {"hosts": ["*"], "gateways": ["bench"],
              "http": [{"route": [{"destination": {"host": "web", "port": {"number": HTTP_PORT}}}]}]}},
]


def gateway_snapshot(state: LabState) -> str:
    """The gateway pod's router configuration as the lab's control plane makes it: a Gateway on port 8080 and a
    VirtualService bound to it that routes everything to the web service."""
    plan = state.lab_plan()
    member = plan.pods["gw"]
    spec = ProxySpec(member.key, member.name, member.namespace, str(member.ip), ISTIO, labels=dict(member.labels),
                     workload=member.workload)
    resources = parse_resources(GATEWAY_RESOURCES, source="bench")
    services = kubernetes_services(plan)
    base = build_snapshot(spec, services, {}, version=1, resources=resources, mtls=False)
    snapshot = router_snapshot(base, {}, services, resources, mesh_traits(ISTIO).retry_503, outbound_cluster_name)
    path = mesh.config_path(state, "gw")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(snapshot.dumps())
    return path


# --- process accounting -------------------------------------------------------------------------------------


def family(pid: int) -> list[int]:
    """pid and its direct children (the proxy's forked workers)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return [pid, *kids]


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """(largest VmRSS, sum of PSS) in MB. PSS splits the pages forked workers share (the fair total); RSS counts
    them in every process, so it is given per process (what one proxy instance costs)."""
    rss: list[int] = []
    pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss.append(int(line.split()[1]))
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return max(rss) / 1024, pss / 1024


# --- client side --------------------------------------------------------------------------------------------


def in_client(state: LabState, argv: Sequence[str], timeout: float) -> str:
    proc = nsenter_run(members.member_netns_path(state, "client"), argv, package=TOOLS.get(argv[0]),
                       timeout=timeout)
    if proc.returncode != 0:
        raise KernelError(f"{' '.join(argv)} failed in the client pod: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), read (\d+), write (\d+)")


def parse_wrk(output: str) -> tuple[float, int]:
    """(requests per second, errors) from wrk's text output."""
    found = _RPS.search(output)
    if found is None:
        raise ValueError(f"no Requests/sec in wrk output: {output[-300:]}")
    errors = sum(int(n) for m in _BAD.finditer(output) for n in m.groups() if n)
    return float(found.group(1)), errors


def wrk(state: LabState, url: str, seconds: int, connections: int, close: bool = False) -> tuple[float, int]:
    argv = ["wrk", f"-t{min(2, os.cpu_count() or 1)}", f"-c{connections}", f"-d{seconds}s"]
    if close:
        argv += ["-H", "Connection: close"]
    return parse_wrk(in_client(state, [*argv, url], timeout=seconds + 30))


def loadgen(state: LabState, mode: str, target: str, *args: str, timeout: float = 120) -> dict[str, float]:
    out = in_client(state, [sys.executable, "-m", "netlab.bench.loadgen", mode, "--target", target, *args], timeout)
    return json.loads(out)


def iperf_mbs(state: LabState, host: str, seconds: int) -> float:
    out = json.loads(in_client(state, ["iperf3", "-4", "-c", host, "-p", str(BULK_PORT), "-t", str(seconds), "-J"],
                               timeout=seconds + 30))
    return out["end"]["sum_received"]["bytes"] / out["end"]["sum_received"]["seconds"] / 1e6


# --- one variant in its own lab -----------------------------------------------------------------------------


def bench_scenario(name: str, topology: str) -> dict[str, object]:
    if topology == "http":
        return {"name": name, "pods": {"client": {}, "server": {"labels": {"app": "web"}}},
                "services": {"web": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": HTTP_PORT}]}}}
    if topology == "mtls":
        return {"name": name, "pods": {"client": {}, "server": {"labels": {"app": "web"}}},
                "services": {"web": {"selector": {"app": "web"}, "ports": [{"name": "tcp-web", "port": HTTP_PORT}]},
                             "iperf": {"selector": {"app": "web"},
                                       "ports": [{"name": "tcp-bulk", "port": BULK_PORT}]}}}
    if topology == "inbound":
        return {"name": name, "pods": {"client": {}, "server": {}}}
    if topology == "gateway":
        return {"name": name, "pods": {"client": {}, "gw": {"labels": {"istio": "ingressgateway"}},
                                       "server": {"labels": {"app": "web"}}},
                "services": {"web": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": HTTP_PORT}]}}}
    return {"name": name,
            "pods": {"client": {}, "server": {"replicas": VIP_REPLICAS, "labels": {"app": "web"}},
                     "bulk": {"labels": {"app": "bulk"}}},
            "services": {"web": {"selector": {"app": "web"}, "ports": [{"name": "tcp-web", "port": HTTP_PORT}]},
                         "iperf": {"selector": {"app": "bulk"}, "ports": [{"name": "tcp-bulk", "port": BULK_PORT}]}}}


def measure_variant(variant: str, plan: Plan, workers: int, access_log: bool = False, topology: str = "inbound",
                    progress: Callable[[str], None] = lambda _m: None) -> tuple[dict[str, float], list[str]]:
    name = f"bench-px-{variant}-{secrets.token_hex(2)}"
    state = build.up(parse_scenario(bench_scenario(name, topology), source="bench"), "<netlab bench proxy>", name)
    vip, http = topology in ("vip", "mtls"), topology in ("http", "gateway")
    try:
        servers = [f"server-{i}" for i in range(VIP_REPLICAS)] if topology == "vip" else ["server"]
        bulk = "bulk" if topology == "vip" else "server"
        for pod in dict.fromkeys(("client", *servers, bulk)):
            write_sysctls(members.member_netns_path(state, pod), POD_SYSCTLS)
        start_servers(state, 1 if topology == "vip" else workers, servers, bulk)
        pids: list[int] = []
        if variant != FLOOR:
            pids = start_proxies(state, variant, workers, access_log, topology)
        server_ip = state.info["services"]["web"]["ip"] if vip else state.members["server"]["ip"]
        if topology == "gateway" and variant != FLOOR:
            server_ip = state.members["gw"]["ip"]
        url, target = f"http://{server_ip}:{HTTP_PORT}/", f"{server_ip}:{HTTP_PORT}"
        m: dict[str, float] = {}
        progress("keep-alive req/s")
        connections = plan.http_connections if http else plan.wrk_connections
        wrk(state, url, plan.warmup_s, connections)
        # With --http the memory target holds while the keep-alive connections are open: sampled mid-run.
        sampler = threading.Timer(plan.keepalive_s / 2, lambda: m.update(zip(("rss_mb", "pss_mb"), memory_mb(pids),
                                                                             strict=True)))
        if http and pids:
            sampler.start()
        m["ka_rps"], m["ka_errors"] = wrk(state, url, plan.keepalive_s, connections)
        if sampler.is_alive():
            sampler.join()
        progress("latency on an open connection")
        m["open_us"] = loadgen(state, "open", target, "--count", str(plan.open_samples))["median"]
        progress(f"latency at {plan.rate} req/s")
        cpu_before = cpu_seconds(pids)
        fixed = loadgen(state, "rate", target, "--rate", str(plan.rate), "--duration", str(plan.rate_s))
        if pids:  # CPU seconds per second at this rate, scaled to 1000 req/s, in ms: ms of CPU per 1000 requests
            m["cpu_ms"] = (cpu_seconds(pids) - cpu_before) * 1000 / fixed["samples"] * 1000
        m.update(p50_us=fixed["p50"], p90_us=fixed["p90"], p99_us=fixed["p99"], rate=fixed["rate"],
                 rate_errors=fixed["errors"], rate_lagged=fixed["lagged"])
        progress("latency of a new connection")
        new = loadgen(state, "new", target, "--count", str(plan.new_samples))
        m["new_us"], m["new_errors"] = new["median"], new["errors"]
        progress("new-connection req/s")
        m["nc_rps"], m["nc_errors"] = wrk(state, url, plan.newconn_s, plan.wrk_connections, close=True)
        if not http:
            progress("bulk")
            m["bulk_mbs"] = iperf_mbs(state, state.info["services"]["iperf"]["ip"] if vip else server_ip,
                                      plan.bulk_s)
            if pids:
                m["rss_mb"], m["pss_mb"] = memory_mb(pids)
    finally:
        problems = teardown.down(state.lab)
    return m, problems


def order(round_index: int) -> list[str]:
    """The variants in a rotated order: each one goes first, second and third in turn."""
    shift = round_index % len(VARIANTS)
    return [*VARIANTS[shift:], *VARIANTS[:shift]]


def run(repeat: int = 3, quick: bool = False, workers: int | None = None, access_log: bool = False,
        topology: str = "inbound", progress: Callable[[str], None] = lambda _m: None) -> BenchResult:
    require_root()
    check_tools()
    plan = QUICK if quick else FULL
    workers = workers or os.cpu_count() or 1
    rounds: list[dict[str, dict[str, float]]] = []
    problems: list[str] = []
    for r in range(repeat):
        results: dict[str, dict[str, float]] = {}
        for variant in order(r):
            def step(msg: str, variant: str = variant, r: int = r) -> None:
                progress(f"round {r + 1}/{repeat}, {variant}: {msg}")

            results[variant], found = measure_variant(variant, plan, workers, access_log, topology, step)
            problems += found
        rounds.append(results)
    typed: list[Round] = rounds
    metrics = {"http": HTTP_METRICS, "gateway": HTTP_METRICS, "mtls": MTLS_METRICS}.get(topology, METRICS)
    return BenchResult(rounds, [compare(m, typed) for m in metrics], plan, workers, problems, topology)


NOISY_SPREAD = 1.5  # the no-sidecar p99 moving more than this between rounds: the machine sets the tail


def noise_note(rounds: Sequence[dict[str, dict[str, float]]], rate: int) -> str | None:
    """A warning when the baseline itself was unsteady (a shared or busy machine): the tail-latency ratios of such a
    run say more about the machine than about the proxies."""
    tails = [r[FLOOR]["p99_us"] for r in rounds if r.get(FLOOR, {}).get("p99_us")]
    if len(tails) < 2 or max(tails) < NOISY_SPREAD * min(tails):
        return None
    return (f"noisy machine: with no sidecar, p99 @{rate} req/s ranged {min(tails):.0f}-{max(tails):.0f} µs over "
            "the rounds; the p90/p99 ratios move from run to run here: compare several runs or more rounds")


def render(result: BenchResult) -> str:
    errors = {v: sum(int(r[v].get(k, 0)) for r in result.rounds for k in ("ka_errors", "nc_errors", "new_errors",
                                                                               "rate_errors"))
              for v in VARIANTS}
    topology = {
        "http": ("HTTP: client -> server pod IP, port declared http, proxy in the server (inbound), "
                 f"{result.plan.http_connections} keep-alive connections; netlab logs and counts each request, "
                 "HAProxy in mode http with option forwardfor and httplog"),
        "vip": f"client -> a service VIP with {VIP_REPLICAS} endpoints, proxy in the client (outbound)",
        "gateway": ("gateway: client -> a gateway pod's port 8080 -> the server pod (no proxy: client -> server), "
                    f"{result.plan.http_connections} keep-alive connections; netlab's router with the edge's "
                    "x-forwarded-for, access log and metrics, HAProxy in mode http with option forwardfor and httplog"),
        "mtls": ("client -> a service VIP, a proxy on both sides with mTLS (TLS 1.3, session resumption) between "
                 f"them; Istio publishes {ISTIO_P90_ADDED_MS} ms added at p90 by Envoy at 1000 req/s (compare the "
                 "p90 row's added latency)"),
    }.get(result.topology, "client -> server pod IP, proxy in the server (inbound)")
    notes = [
        f"{topology}; {os.cpu_count()} cores; {result.workers} proxy worker(s)/thread(s); medians of "
        f"{len(result.rounds)} interleaved round(s), each variant in a fresh lab",
        "latency cells: median (+ added over no sidecar, median of per-round differences); "
        "netlab÷HAProxy compares the added latency",
        f"CPU: utime+stime of the proxy processes during the fixed {result.plan.rate} req/s run",
        f"errors (wrk + loadgen): {', '.join(f'{v} {n}' for v, n in errors.items())}",
    ]
    noise = noise_note(result.rounds, result.plan.rate)
    if noise:
        notes.append(noise)
    table = format_table(PROXY_HEADERS, [row_cells(r) for r in result.rows], left=(0, 7, 8))
    return table + "\n" + "\n".join(f"({n})" for n in notes)


def headline(rows: Sequence[Row]) -> tuple[int, int]:
    """(targets met, targets measured)."""
    judged = [r.ok for r in rows if r.ok is not None]
    return sum(judged), len(judged)

