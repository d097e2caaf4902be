"""A sidecar in a lab pod, with each iptables backend: rules a user can read with nsenter, the proxy as 1337."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from labkit import leftovers, netlab, talk, write_scenario

SCENARIO = """
    name: {name}
    pods:
      client: {{}}
      app:
        sidecar:
          istio: "1.10"
          rule_edits: [{{insert: "nat/ISTIO_INBOUND#1", rule: "-p tcp --dport 7777 -j RETURN"}}]
        app: {{kind: pong, listen: "eth0:8080"}}
    services:
      svc: {{selector: app, port: 80, target_port: 8080}}
"""


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_sidecar_with_each_backend(tmp_path: Path, backend: str) -> None:
    name = f"sidecar-{backend}"
    path = write_scenario(tmp_path, SCENARIO.format(name=name))
    netlab("up", path, "--iptables", backend, "--quiet", check=True)
    try:
        lab = json.loads(netlab("status", name, "--json", check=True).stdout)["labs"][0]
        app_pid = lab["members"]["app"]["pid"]
        # What a student types: the backend's own iptables through nsenter shows istio-init's chains.
        listing = subprocess.run(["nsenter", "-t", str(app_pid), "-n", f"iptables-{backend}", "-t", "nat", "-S"],
                                 capture_output=True, text=True, check=True).stdout
        assert "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN" in listing
        assert listing.index("--dport 7777 -j RETURN") < listing.index("--dport 15008 -j RETURN")  # the rule edit
        # The proxy dropped to 1337 after binding its listeners.
        [proxy] = [p for p in lab["processes"] if p["member"] == "app" and p["role"] == "proxy"]
        status = Path(f"/proc/{proxy['pid']}/status").read_text()
        assert "Uid:\t1337\t1337\t1337\t1337" in status and "Gid:\t1337\t1337\t1337\t1337" in status
        # Through the service: captured, forwarded to the pod IP from 127.0.0.6.
        client = f"/proc/{lab['members']['client']['pid']}/ns/net"
        assert talk(client, lab["services"]["svc"]["ip"], 80) == b"pong\n"
        peers = Path(f"/run/netlab/{name}/apps/app.peers").read_text().split()
        assert peers[0] == "127.0.0.6"
        shown = json.loads(netlab("rules", "show", "app", "--lab", name, "--json", check=True).stdout)
        assert shown["backend"] == backend
        output = next(c for c in shown["chains"] if c["name"] == "ISTIO_OUTPUT")
        assert output["rules"][0]["packets"] >= 1  # rule 1 let the 127.0.0.6 connection out
    finally:
        netlab("down", name)
    assert leftovers(name) == []
