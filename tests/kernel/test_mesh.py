"""The control plane on the kernel: a meshed client's sidecar picks the pod itself (the node's DNAT is not used),
proxy-config reads what the running proxy holds, `netlab apply` changes routing live without dropping open
connections, and an endpoint whose pod is gone is not chosen."""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import lab_up, netlab, talk, write_scenario

from netlab.engine import mesh
from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState
from netlab.kernel import holders
from netlab.kernel.nsutil import nsenter_run, run_in_netns
from netlab.probe.observed import parse_log_line

FQDN = "reviews.default.svc.cluster.local"
SCENARIO = """
    name: {name}
    pods:
      client: {{sidecar: {{istio: "1.22"}}}}
      plain: {{}}
      reviews: {{replicas: 3, labels: {{app: reviews}}, sidecar: {{istio: "1.22"}},
                app: {{kind: echo, listen: "0.0.0.0:9080"}}}}
    services:
      reviews: {{selector: {{app: reviews}}, ports: [{{name: tcp-reviews, port: 9080}}]}}
    external:
      web: {{address: 198.51.100.10, app: {{kind: echo, listen: "0.0.0.0:80"}}}}
"""
REGISTRY_ONLY = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    name = f"mesh-{secrets.token_hex(3)}"
    with lab_up(write_scenario(tmp_path_factory.mktemp("mesh"), SCENARIO.format(name=name))) as state:
        yield state


def vip(state: LabState) -> str:
    return state.info["services"]["reviews"]["ip"]


def replica_ips(state: LabState) -> dict[str, str]:
    return {state.members[f"reviews-{i}"]["ip"]: f"reviews-{i}" for i in range(3)}


def access_log(state: LabState, member: str, at_least: int = 0) -> list[dict[str, str]]:
    """The sidecar's access-log lines as fields, once there are at least `at_least`."""
    path = Path(state.members[member]["sidecar"]["access_log"])
    deadline = time.monotonic() + 3
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= at_least or time.monotonic() > deadline:
            entries = [parse_log_line(member, line) for line in lines]
            assert all(entries), lines
            return [e.fields for e in entries if e]
        time.sleep(0.05)


def service_dnat_packets(state: LabState) -> int:
    """Packets the node's rule for the reviews ClusterIP has counted (kube-proxy's KUBE-SERVICES match)."""
    saved = nsenter_run(member_netns_path(state, "_node"), ["iptables-save", "-c", "-t", "nat"]).stdout
    return sum(int(m[1]) for m in re.finditer(r"\[(\d+):\d+\] -A NETLAB-SERVICES -d " + re.escape(vip(state)), saved))


def calls(state: LabState, source: str, host: str, port: int, n: int) -> None:
    netns = member_netns_path(state, source)
    for i in range(n):
        assert talk(netns, host, port, f"call {i}\n".encode()) == f"call {i}\n".encode()


def test_the_client_sidecar_picks_pods_and_the_node_dnat_is_not_used(lab: LabState) -> None:
    before_log, before_dnat = len(access_log(lab, "client")), service_dnat_packets(lab)
    calls(lab, "client", vip(lab), 9080, 30)
    lines = access_log(lab, "client", before_log + 30)[before_log:]
    assert len(lines) == 30
    upstreams = [e["upstream_host"] for e in lines]
    assert all((e["cluster"], e["flags"]) == (f"outbound|9080||{FQDN}", "-") for e in lines)
    pods = Counter(replica_ips(lab)[u.removesuffix(":9080")] for u in upstreams)
    assert set(pods) == {"reviews-0", "reviews-1", "reviews-2"}, pods  # LEAST_REQUEST: every replica in 30 calls
    assert service_dnat_packets(lab) == before_dnat  # the proxy connected to pod IPs, not the ClusterIP
    calls(lab, "plain", vip(lab), 9080, 3)  # a client without a sidecar goes through the node's DNAT
    assert service_dnat_packets(lab) == before_dnat + 3


def test_proxy_config_shows_what_the_running_proxy_holds(lab: LabState) -> None:
    dump = json.loads(netlab("proxy-config", "client", "--json", "--lab", lab.lab, check=True).stdout)
    written = json.loads(Path(mesh.config_path(lab, "client")).read_text())
    assert dump["version"] == written["version"] and dump["clusters"] == written["clusters"]
    assert dump["listeners"] == written["listeners"]
    text = netlab("proxy-config", "client", "endpoints", "--lab", lab.lab, check=True).stdout
    rows = [line.split() for line in text.splitlines() if f"outbound|9080||{FQDN}" in line]
    assert sorted(r[0] for r in rows) == sorted(f"{ip}:9080" for ip in replica_ips(lab))
    assert all(r[1:3] == ["HEALTHY", "OK"] for r in rows)
    listeners = netlab("proxy-config", "client", "listeners", "--lab", lab.lab, check=True).stdout
    assert re.search(rf"{re.escape(vip(lab))}\s+9080\s+ALL\s+Cluster: outbound\|9080\|\|{FQDN}", listeners)
    status = json.loads(netlab("status", lab.lab, "--json", check=True).stdout)["labs"][0]
    assert {s["status"] for s in status["sidecars"].values()} == {"SYNCED"}


def test_apply_changes_routing_live_and_open_connections_stay(lab: LabState, tmp_path: Path) -> None:
    netns = member_netns_path(lab, "client")
    web = lab.members["web"]["ip"]
    assert talk(netns, web, 80) == b"ping\n"  # ALLOW_ANY: PassthroughCluster
    held = run_in_netns(netns, lambda: socket.create_connection((vip(lab), 9080), timeout=3))
    try:
        held.sendall(b"before\n")
        assert held.recv(100) == b"before\n"
        bad = tmp_path / "bad.yaml"
        bad.write_text(REGISTRY_ONLY.replace("REGISTRY_ONLY", "NOWHERE"))
        version = lab_version(lab)
        refused = netlab("apply", lab.lab, str(bad))
        assert refused.returncode == 2 and "outboundTrafficPolicy.mode" in refused.stderr
        assert lab_version(lab) == version  # nothing changed
        policy = tmp_path / "sidecar.yaml"
        policy.write_text(REGISTRY_ONLY)
        applied = netlab("apply", lab.lab, str(policy), check=True)
        assert "Sidecar default/default created" in applied.stdout and lab_version(lab) == version + 1
        held.sendall(b"after\n")  # the connection opened before the reload is still relayed
        assert held.recv(100) == b"after\n"
        logged = len(access_log(lab, "client"))
        assert run_in_netns(netns, lambda: _connect_outcome(web, 80)) == "reset"  # REGISTRY_ONLY: BlackHoleCluster
        last = access_log(lab, "client", logged + 1)[-1]
        assert (last["cluster"], last["flags"], last["details"]) == ("BlackHoleCluster", "UH", "-")
        assert talk(netns, vip(lab), 9080) == b"ping\n"  # a known service still works
        netlab("delete", lab.lab, str(policy), check=True)
        assert talk(netns, web, 80) == b"ping\n"
    finally:
        held.close()


def test_an_endpoint_whose_pod_is_gone_is_not_chosen(lab: LabState) -> None:
    app = next(e for e in lab.undo if e["kind"] == "process" and e["role"] == "app" and e["member"] == "reviews-2")
    assert holders.stop_pid(app["pid"], app["started"])
    mesh.push(lab, mesh.resources_of(lab))
    dump = mesh.config_dump(lab, "client")
    gone = lab.members["reviews-2"]["ip"]
    assert {h["address"] for h in dump["hosts"][f"outbound|9080||{FQDN}"]} == set(replica_ips(lab)) - {gone}
    before = len(access_log(lab, "client"))
    calls(lab, "client", vip(lab), 9080, 20)
    lines = access_log(lab, "client", before + 20)[before:]
    assert len(lines) == 20 and not any(e["upstream_host"] == f"{gone}:9080" for e in lines)


def lab_version(state: LabState) -> int:
    with open(Path(state.directory) / "state.json") as f:
        return json.load(f)["info"]["mesh"]["version"]


def _connect_outcome(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(b"ping\n")
            return "reply" if sock.recv(100) else "closed"
    except ConnectionResetError:  # the proxy's RST may even arrive before connect() returns
        return "reset"
