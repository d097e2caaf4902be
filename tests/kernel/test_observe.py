"""Looking inside a pod: conntrack shows the 15006 rewrite, sockets show the uid-1337 upstream from 127.0.0.6,
and a capture on lo holds the proxy's 127.0.0.6 packets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import leftovers, netlab, write_scenario

from netlab.kernel.nsutil import run_in_netns

SCENARIO = """
    name: observe
    pods:
      client: {}
      server: {sidecar: {istio: "1.10"}, app: {kind: echo, listen: "eth0:8080"}}
    services:
      web: {selector: server, port: 8080}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    path = write_scenario(tmp_path_factory.mktemp("observe"), SCENARIO)
    netlab("up", path, "--quiet", check=True)
    try:
        yield json.loads(netlab("status", "observe", "--json", check=True).stdout)["labs"][0]
    finally:
        netlab("down", "observe")
    assert leftovers("observe") == []


def open_connection(lab: dict) -> socket.socket:
    client = f"/proc/{lab['members']['client']['pid']}/ns/net"
    sock = run_in_netns(client, lambda: socket.create_connection((lab["services"]["web"]["ip"], 8080), timeout=3))
    sock.sendall(b"hello")
    assert sock.recv(5) == b"hello"  # echoed through the sidecar: the connection is established end to end
    return sock


def test_conntrack_shows_the_redirect_to_15006(lab: dict) -> None:
    with open_connection(lab):
        entries = json.loads(netlab("conntrack", "server", "--lab", "observe", "--json", check=True).stdout)["entries"]
    server_ip = lab["members"]["server"]["ip"]
    inbound = [e for e in entries if e["orig_src"] == lab["members"]["client"]["ip"]]
    assert inbound and inbound[0]["orig_dst"] == server_ip and inbound[0]["orig_dport"] == "8080"
    assert inbound[0]["reply_sport"] == "15006"  # the REDIRECT, visible in the reply tuple
    assert any(e["orig_src"] == "127.0.0.6" and e["orig_dst"] == server_ip for e in entries)


def test_sockets_show_the_sidecar_upstream_as_uid_1337(lab: dict) -> None:
    with open_connection(lab):
        rows = json.loads(netlab("sockets", "server", "--lab", "observe", "--json", check=True).stdout)["sockets"]
    upstream = [r for r in rows if r["local"].startswith("127.0.0.6:") and r["state"] == "ESTAB"]
    assert len(upstream) == 1
    assert upstream[0]["peer"] == f"{lab['members']['server']['ip']}:8080" and upstream[0]["uid"] == 1337


def test_capture_on_lo_holds_the_127_0_0_6_packets(lab: dict, tmp_path: Path) -> None:
    pcap = tmp_path / "lo.pcap"
    capture = subprocess.Popen([sys.executable, "-m", "netlab", "capture", "server", "--lab", "observe", "lo",
                                "-o", str(pcap), "-c", "3", "--", "tcp", "port", "8080"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while not pcap.exists() and time.monotonic() < deadline:  # tcpdump creates the file once it listens
            time.sleep(0.02)
        with open_connection(lab):
            pass
        capture.wait(timeout=10)
    finally:
        if capture.poll() is None:
            capture.terminate()
            capture.wait()
    read = subprocess.run(["tcpdump", "-nr", str(pcap)], capture_output=True, text=True, check=True).stdout
    first = read.splitlines()[0]
    assert "127.0.0.6." in first and f"> {lab['members']['server']['ip']}.8080: Flags [S]" in first
