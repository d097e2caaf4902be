"""The lab's istiod at work: compute every sidecar's snapshot, write it where the proxy reads it, tell the proxies.

The Istio resources in force and the last pushed version live in the lab state (info["mesh"]); every push writes
all snapshots under <state>/mesh/ with the next version (a file replaced atomically), sends SIGHUP to each
running proxy and, when asked, waits until each one's admin API reports that version: like istiod pushing over
xDS and `istioctl proxy-status` showing SYNCED.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState
from netlab.errors import KernelError
from netlab.kernel.nsutil import is_same_process, run_in_netns
from netlab.mesh.build import snapshots
from netlab.mesh.gateway import credential_hosts
from netlab.mesh.types import CREDENTIALS, TLS_CERT
from netlab.model.istio import IstioResource, describe, resource_key
from netlab.model.loader import parse_resources
from netlab.pki import CERT_CHAIN, CREDENTIAL_TTL, GATEWAY_CA, WORKLOAD_TTL, LabCA, dns_names

SYNC_TIMEOUT = 5.0
PROXY_UID = 1337
ADMIN, STATS = ("127.0.0.1", 15000), ("127.0.0.1", 15090)


def resources_of(state: LabState) -> list[IstioResource]:
    return parse_resources(state.info.get("mesh", {}).get("resources", []), source=f"lab {state.lab}")


def config_path(state: LabState, member: str) -> str:
    return state.member_file("mesh", member, "json")


def ready_pods(state: LabState) -> frozenset[str]:
    """Pods whose endpoints are sent: the namespace is alive, and the app (if the pod has one) still runs — as a
    kubelet would mark a pod not ready when its container exited."""
    apps = {e["member"]: e for e in state.undo if e["kind"] == "process" and e["role"] == "app"}
    ready = set()
    for member, info in state.members.items():
        if info["kind"] != "pod" or not is_same_process(info["pid"], _holder_started(state, member)):
            continue
        app = apps.get(member)
        if app is None or is_same_process(app["pid"], app["started"]):
            ready.add(member)
    return frozenset(ready)


def _holder_started(state: LabState, member: str) -> int:
    return next((e["started"] for e in state.undo if e["kind"] == "holder" and e["member"] == member), -1)


def certs_dir(state: LabState, member: str) -> str:
    """The sidecar's cert-chain.pem, key.pem and root-cert.pem (what `--certs` gives the proxy)."""
    return state.member_file("pki", member, "certs")


def issue_certificates(state: LabState) -> None:
    """istiod's CA at work: the lab's root (made once), and a workload certificate for every sidecar, owned by the
    user its proxy runs as: at `up`, and at a push once half of its lifetime has passed (istio-agent rotates at
    50% of the TTL); the proxies load a new one when they reload."""
    ca = LabCA(os.path.join(state.directory, "pki"))
    if not ca.root_path.exists():
        ca.create()
    for pod in state.lab_plan().pods.values():
        if pod.sidecar is None:
            continue
        directory = certs_dir(state, pod.key)
        with contextlib.suppress(OSError):
            if time.time() - os.stat(os.path.join(directory, CERT_CHAIN)).st_mtime < WORKLOAD_TTL.total_seconds() / 2:
                continue
        uid = 0 if pod.sidecar.interception == "TPROXY" else PROXY_UID
        ca.issue(directory, pod.namespace, pod.service_account, uid, PROXY_UID)


def gateway_ca(state: LabState) -> LabCA:
    """The root that signs Gateway credentials: what a client of the lab's HTTPS gateways trusts."""
    return LabCA(os.path.join(state.directory, "pki", GATEWAY_CA), organization="netlab gateway credentials")


def credential_certificates(state: LabState, member: str) -> dict[str, str]:
    """The credentials a gateway pod holds: NAME -> its tls.crt (none for other pods)."""
    held = os.path.join(certs_dir(state, member), CREDENTIALS)
    names = sorted(os.listdir(held)) if os.path.isdir(held) else []
    return {name: os.path.join(held, name, TLS_CERT) for name in names}


def issue_credentials(state: LabState, resources: Sequence[IstioResource]) -> None:
    """The Secrets the gateways' HTTPS servers name, made by the lab: in each gateway pod's certificate directory,
    credentials/NAME/ (what its proxy loads for SDS kubernetes://NAME), issued again when the hosts the Gateways
    ask for change or half of its lifetime has passed."""
    ca = gateway_ca(state)
    for pod in state.lab_plan().pods.values():
        if pod.sidecar is None or pod.sidecar.mode != "router":
            continue
        wanted = credential_hosts(pod.labels, resources)
        for name, cert in credential_certificates(state, pod.key).items():
            if name not in wanted:  # no server names it any more, as a deleted Secret
                shutil.rmtree(os.path.dirname(cert))
        for name, hosts in wanted.items():
            directory = os.path.join(certs_dir(state, pod.key), CREDENTIALS, name)
            cert = os.path.join(directory, TLS_CERT)
            with contextlib.suppress(OSError):
                if (dns_names(cert) == list(hosts)
                        and time.time() - os.stat(cert).st_mtime < CREDENTIAL_TTL.total_seconds() / 2):
                    continue
            if not ca.root_path.exists():
                ca.create()
            ca.issue_server(directory, hosts, PROXY_UID, PROXY_UID)


def write_snapshots(state: LabState, resources: Sequence[IstioResource],
                    ready: frozenset[str] | None = None) -> int:
    """Compute and write every sidecar's snapshot with the next version and its certificate; record the
    resources. Returns the version."""
    issue_certificates(state)
    issue_credentials(state, resources)
    mesh = state.info.setdefault("mesh", {})
    version = int(mesh.get("version", 0)) + 1
    for member, snapshot in snapshots(state.lab_plan(), resources, version, ready).items():
        path = config_path(state, member)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(snapshot.dumps())
        os.replace(tmp, path)
    mesh["version"] = version
    mesh["resources"] = [r.model_dump(mode="json", by_alias=True, exclude_defaults=True) for r in resources]
    state.save()
    return version


def proxies(state: LabState) -> dict[str, dict[str, Any]]:
    """The proxy process of each sidecar: member -> its process entry."""
    return {e["member"]: e for e in state.undo if e["kind"] == "process" and e["role"] == "proxy"}


def push(state: LabState, resources: Sequence[IstioResource], wait: bool = True) -> int:
    """Recompute, write, SIGHUP every live proxy; with `wait`, until each reports the new version."""
    version = write_snapshots(state, resources, ready_pods(state))
    running = {m: e for m, e in proxies(state).items() if is_same_process(e["pid"], e["started"])}
    for entry in running.values():
        os.kill(entry["pid"], signal.SIGHUP)
    if wait:
        deadline = time.monotonic() + SYNC_TIMEOUT
        for member in running:
            while (status := proxy_status(state, member)).version != version:
                if status.error or time.monotonic() > deadline:
                    raise KernelError(f"the sidecar of {member} did not load version {version}: "
                                      f"{status.error or f'it still reports {status.version}'}",
                                      hint=f"see its log: {running[member]['log']}")
                time.sleep(0.02)
    return version


@dataclass(frozen=True)
class ProxyStatus:
    version: int | None  # what the proxy routes by; None when it does not answer
    error: str = ""  # why the last reload was refused, or why it does not answer


def config_dump(state: LabState, member: str, timeout: float = 2.0) -> dict[str, Any]:
    """GET /config_dump from the proxy's admin API on 127.0.0.1:15000 inside the pod."""
    return admin_get(member_netns_path(state, member), "/config_dump", timeout)


def admin_get(netns: str, path: str, timeout: float = 2.0) -> dict[str, Any]:
    """A JSON document from the admin API of the proxy in `netns`."""
    return json.loads(_get(netns, ADMIN, path, timeout))


def stats_text(state: LabState, member: str, timeout: float = 2.0) -> str:
    """GET /stats/prometheus from the sidecar's 15090 inside the pod: what Prometheus scrapes."""
    return _get(member_netns_path(state, member), STATS, "/stats/prometheus", timeout).decode()


def _get(netns: str, addr: tuple[str, int], path: str, timeout: float) -> bytes:
    """The body of a GET to the proxy's own endpoints in `netns` (they answer and close)."""
    def fetch() -> bytes:
        with socket.create_connection(addr, timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks)

    head, _, body = run_in_netns(netns, fetch).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not status.startswith("HTTP/1.1 200"):
        raise KernelError(f"the sidecar answered {status!r} for {path}")
    return body


def proxy_status(state: LabState, member: str) -> ProxyStatus:
    try:
        info = admin_get(member_netns_path(state, member), "/server_info", timeout=0.5)
    except (OSError, KernelError, ValueError) as err:
        return ProxyStatus(None, f"no answer from its admin API ({err})")
    return ProxyStatus(int(info["config_version"]), info.get("reload_error", ""))


def applied(current: Sequence[IstioResource], changes: Sequence[IstioResource]) -> list[IstioResource]:
    """`kubectl apply`: each resource replaces the one of the same kind, namespace and name, or is added."""
    keys = {resource_key(r): r for r in current}
    for change in changes:
        keys[resource_key(change)] = change
    return list(keys.values())


def deleted(current: Sequence[IstioResource], removals: Sequence[IstioResource]) -> tuple[list[IstioResource],
                                                                                           list[str]]:
    """`kubectl delete -f`: (what remains, the resources that were not there)."""
    gone = {resource_key(r) for r in removals}
    missing = [describe(r) for r in removals if resource_key(r) not in {resource_key(c) for c in current}]
    return [r for r in current if resource_key(r) not in gone], missing
