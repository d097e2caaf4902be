"""The proxy behind istio-init's real nat rules, in a throwaway pod netns reached over a veth from a client netns.

Covers: the proxy's real uid/gid, the 1.9 vs 1.10 inbound matrix (app on 127.0.0.1, the pod IP, 0.0.0.0) and the
peer the app sees, undeclared-port passthrough from 127.0.0.6, outbound capture to 15001, RST on upstream failure,
half-close through capture, the loop guard when ISTIO_OUTPUT rule 1 is missing, 1000 concurrent checksummed
connections over two workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_kernel_support import (
    CLIENT_IP,
    EXTERNAL_IP,
    POD_IP,
    PodLab,
    in_netns,
    ns_exec,
    pod_lab,
    proxy,
    unit_helpers,
)

unit_helpers()
from proxy_support import App  # noqa: E402

from netlab.probe.connect import probe  # noqa: E402


@pytest.fixture
def lab(scratch_netns: str) -> Iterator[PodLab]:
    with pod_lab(scratch_netns) as lab:
        lab.install_istio_rules()
        yield lab


@contextlib.contextmanager
def pod_app(lab: PodLab, host: str, port: int, kind: str = "pong") -> Iterator[App]:
    a = in_netns(lab.pod_path, lambda: App(host, port, kind))
    try:
        yield a
    finally:
        a.close()


def exchange_from(ns_path: str, addr: tuple[str, int], payload: bytes = b"ping",
                  timeout: float = 5.0) -> tuple[str, bytes]:
    """Connect from inside ns_path, send, half-close, read to EOF: reply / reset / refused / closed / timeout."""
    result = probe(ns_path, addr, payload, timeout, own_ip="")
    return result.outcome, result.data


def http_get_from(ns_path: str, addr: tuple[str, int], path: str) -> int:
    s = in_netns(ns_path, socket.socket)
    with s:
        s.settimeout(5)
        s.connect(addr)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split()[1])


def test_proxy_drops_to_1337_and_serves_admin_ports(lab: PodLab, tmp_path: Path) -> None:
    with proxy(lab.pod_path, "--istio", "1.10", log_dir=tmp_path) as p:
        status = p.status()
        assert status["Uid"].split() == ["1337"] * 4
        assert status["Gid"].split() == ["1337"] * 4
        assert status["Groups"].strip() == ""
        # 15021/15090 are excluded from capture: reachable from the client over eth0.
        assert http_get_from(lab.client_path, (POD_IP, 15021), "/healthz/ready") == 200
        assert http_get_from(lab.client_path, (POD_IP, 15090), "/stats/prometheus") == 200
        rss_kb = int(status["VmRSS"].split()[0])
        assert rss_kb < 30 * 1024, f"RSS {rss_kb} kB"


# DESIGN.md's matrix: (version, app listen host) -> (outcome, peer the app sees)
MATRIX = {
    ("1.9", "127.0.0.1"): ("reply", "127.0.0.1"),
    ("1.9", POD_IP): ("reset", None),
    ("1.9", "0.0.0.0"): ("reply", "127.0.0.1"),
    ("1.10", "127.0.0.1"): ("reset", None),
    ("1.10", POD_IP): ("reply", "127.0.0.6"),
    ("1.10", "0.0.0.0"): ("reply", "127.0.0.6"),
}


@pytest.mark.parametrize("istio", ["1.9", "1.10"])
def test_inbound_matrix(lab: PodLab, tmp_path: Path, istio: str) -> None:
    with proxy(lab.pod_path, "--istio", istio, "--declared-ports", "8080", log_dir=tmp_path) as p:
        for n, host in enumerate(("127.0.0.1", POD_IP, "0.0.0.0"), start=1):
            outcome, peer = MATRIX[(istio, host)]
            with pod_app(lab, host, 8080) as app:
                got, data = exchange_from(lab.client_path, (POD_IP, 8080))
                assert got == outcome, (istio, host, got, data)
                if outcome == "reply":
                    assert data == f"pong from {peer}".encode()
                    assert [a[0] for a in app.peers] == [peer]
                else:
                    assert app.peers == []
            e = p.log_entries(n)[n - 1]
            assert (e["direction"], e["cluster"]) == ("inbound", "inbound|8080||")
            assert e["downstream_local"] == f"{POD_IP}:8080"  # the original destination
            assert e["downstream_remote"].startswith(f"{CLIENT_IP}:")
            if outcome == "reset":
                assert (e["flags"], e["upstream_transport_failure_reason"]) == ("UF,URX", "delayed_connect_error:_111")


def test_no_inbound_passthrough_restores_1_9_on_1_10(lab: PodLab, tmp_path: Path) -> None:
    args = ("--istio", "1.10", "--no-inbound-passthrough", "--declared-ports", "8080")
    with proxy(lab.pod_path, *args, log_dir=tmp_path), pod_app(lab, "127.0.0.1", 8080) as app:
        assert exchange_from(lab.client_path, (POD_IP, 8080)) == ("reply", b"pong from 127.0.0.1")
        assert [a[0] for a in app.peers] == ["127.0.0.1"]


def test_undeclared_port_passthrough_from_127_0_0_6_in_1_9(lab: PodLab, tmp_path: Path) -> None:
    with proxy(lab.pod_path, "--istio", "1.9", "--declared-ports", "8080", log_dir=tmp_path) as p, \
            pod_app(lab, "0.0.0.0", 9090):
        assert exchange_from(lab.client_path, (POD_IP, 9090)) == ("reply", b"pong from 127.0.0.6")
        (e,) = p.log_entries()
        assert (e["direction"], e["cluster"], e["flags"]) == ("inbound", "InboundPassthroughClusterIpv4", "-")
        assert e["upstream_local"].startswith("127.0.0.6:")


def test_outbound_capture_to_15001(lab: PodLab, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        server = in_netns(lab.client_path, lambda: App(EXTERNAL_IP, 80))
        stack.callback(server.close)
        # Control: with the rules in place and no proxy, outbound TCP is redirected to an empty 15001.
        assert exchange_from(lab.pod_path, (EXTERNAL_IP, 80))[0] == "refused"
        p = stack.enter_context(proxy(lab.pod_path, "--istio", "1.10", log_dir=tmp_path))
        assert exchange_from(lab.pod_path, (EXTERNAL_IP, 80)) == ("reply", f"pong from {POD_IP}".encode())
        assert [a[0] for a in server.peers] == [POD_IP]  # left the pod as the proxy (owner rule RETURN)
        (e,) = p.log_entries()
        assert (e["direction"], e["cluster"], e["flags"]) == ("outbound", "PassthroughCluster", "-")
        assert e["upstream_host"] == e["downstream_local"] == f"{EXTERNAL_IP}:80"  # the original destination
        assert e["downstream_remote"].startswith(f"{POD_IP}:")
        # What students check by hand: the reply tuple comes from the proxy's 15001.
        entry = conntrack(lab, "--orig-dst", EXTERNAL_IP)
        assert f"dst={EXTERNAL_IP}" in entry and "src=127.0.0.1 dst=" in entry and "sport=15001" in entry, entry


def conntrack(lab: PodLab, *match: str) -> str:
    return ns_exec(lab.pod, "conntrack", "-L", "-p", "tcp", *match).stdout.decode()


def test_rst_on_upstream_failure(lab: PodLab, tmp_path: Path) -> None:
    with proxy(lab.pod_path, "--istio", "1.10", "--declared-ports", "8080", log_dir=tmp_path) as p:
        s = in_netns(lab.client_path, socket.socket)
        with s:
            s.settimeout(5)
            # The proxy accepts, so the connection exists before the upstream fails; its RST may then arrive before
            # sendall or recv returns: either raises ECONNRESET.
            with pytest.raises(ConnectionResetError):
                s.connect((POD_IP, 8080))
                s.sendall(b"ping")
                s.recv(100)
        assert p.log_entries()[0]["details"] == "delayed_connect_error:_111"


def test_half_close_through_capture(lab: PodLab, tmp_path: Path) -> None:
    with proxy(lab.pod_path, "--istio", "1.10", "--declared-ports", "8080", log_dir=tmp_path), \
            pod_app(lab, "0.0.0.0", 8080, kind="count"):
        # The app answers only after the client's FIN reached it, and the client still reads the answer.
        assert exchange_from(lab.client_path, (POD_IP, 8080), b"z" * 300000) == ("reply", b"got 300000")
        entry = conntrack(lab, "--orig-src", CLIENT_IP, "--orig-port-dst", "8080")
        assert f"dst={POD_IP} sport=" in entry and "sport=15006" in entry, entry  # REDIRECTed to 15006


def test_loop_guard_when_istio_output_rule_1_is_missing(lab: PodLab, tmp_path: Path) -> None:
    ns_exec(lab.pod, "iptables", "-t", "nat", "-D", "ISTIO_OUTPUT", "1")
    with proxy(lab.pod_path, "--istio", "1.10", "--declared-ports", "8080", log_dir=tmp_path) as p, \
            pod_app(lab, POD_IP, 8080) as app:
        assert exchange_from(lab.client_path, (POD_IP, 8080))[0] == "reset"
        assert app.peers == []  # the 127.0.0.6 connection never reached the app: it was captured again
        entries = p.log_entries(2)
        assert any((e["cluster"], e["flags"], e["details"]) == (
            "BlackHoleCluster", "NR", "loop_detected:127.0.0.6_captured_again") for e in entries), entries
        assert any(e["cluster"] == "inbound|8080||" and e["flags"] in ("UC", "UF,URX") for e in entries), entries
        assert p.proc.poll() is None
        fds = len(os.listdir(f"/proc/{p.pid}/fd"))
        assert fds < 40, f"{fds} fds open: the loop was followed"
    assert "ISTIO_OUTPUT rule 1 '-o lo -s 127.0.0.6/32 -j RETURN' is missing" in p.stderr


def test_1000_concurrent_checksummed_connections(lab: PodLab, tmp_path: Path) -> None:
    n, size = 1000, 64 * 1024
    server_ready = threading.Event()
    server_stop: list[asyncio.AbstractEventLoop] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    def run_server(sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        server_stop.append(loop)
        server = loop.run_until_complete(asyncio.start_server(echo, sock=sock, backlog=2048))
        server_ready.set()
        loop.run_forever()
        server.close()
        loop.close()

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind(("0.0.0.0", 8080))
        s.listen(2048)
        return s

    listener = in_netns(lab.pod_path, listen)
    thread = threading.Thread(target=run_server, args=(listener,), daemon=True)
    thread.start()
    assert server_ready.wait(5)
    socks = in_netns(lab.client_path, lambda: [socket.socket() for _ in range(n)])

    async def one(sock: socket.socket, i: int) -> bool:
        sock.setblocking(False)
        payload = os.urandom(size) + i.to_bytes(4, "big")
        await asyncio.get_running_loop().sock_connect(sock, (POD_IP, 8080))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        writer.write(payload)
        writer.write_eof()
        got = await reader.read(-1)
        writer.close()
        return hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

    async def all_of_them() -> list[bool]:
        return await asyncio.wait_for(asyncio.gather(*(one(s, i) for i, s in enumerate(socks))), 120)

    try:
        with proxy(lab.pod_path, "--istio", "1.10", "--declared-ports", "8080", "--workers", "2",
                   log_dir=tmp_path) as p:
            results = asyncio.run(all_of_them())
            assert results.count(True) == n
            p.log_lines(n, timeout=10)
            entries = p.log_entries(n)
            assert len(entries) == n and all((e["cluster"], e["flags"]) == ("inbound|8080||", "-") for e in entries)
            assert {e["bytes_received"] for e in entries} == {str(size + 4)}
            # Two workers shared the load; the stats scrape sums their rows.
            body = ""
            s = in_netns(lab.client_path, socket.socket)
            with s:
                s.settimeout(5)
                s.connect((POD_IP, 15090))
                s.sendall(b"GET /stats/prometheus HTTP/1.1\r\n\r\n")
                while chunk := s.recv(65536):
                    body += chunk.decode()
            assert f'envoy_cluster_upstream_cx_total{{cluster_name="inbound|8080||"}} {n}' in body
    finally:
        for s in socks:
            s.close()
        for loop in server_stop:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_tproxy_mode_app_sees_the_real_client(scratch_netns: str, tmp_path: Path) -> None:
    """TPROXY (mangle rules + fwmark 1337 -> table 133): uid 0 / gid 1337, and the app sees the client's own IP."""
    with pod_lab(scratch_netns) as lab:
        ns_exec(lab.pod, "ip", "-f", "inet", "rule", "add", "fwmark", "1337", "lookup", "133")
        ns_exec(lab.pod, "ip", "-f", "inet", "route", "add", "local", "default", "dev", "lo", "table", "133")
        lab.install_istio_rules("TPROXY")
        args = ("--istio", "1.10", "--mode", "TPROXY", "--declared-ports", "8080")
        with proxy(lab.pod_path, *args, log_dir=tmp_path) as p, pod_app(lab, "0.0.0.0", 8080) as app:
            status = p.status()
            assert status["Uid"].split() == ["0"] * 4 and status["Gid"].split() == ["1337"] * 4
            assert exchange_from(lab.client_path, (POD_IP, 8080)) == ("reply", f"pong from {CLIENT_IP}".encode())
            assert [a[0] for a in app.peers] == [CLIENT_IP]
            (e,) = p.log_entries()
            assert (e["cluster"], e["flags"]) == ("inbound|8080||", "-")
            assert e["upstream_local"].startswith(f"{CLIENT_IP}:")  # original_src: the client's own address
            # Undeclared port: still the client's address (original_src applies to the whole listener).
            with pod_app(lab, "0.0.0.0", 9090) as other:
                assert exchange_from(lab.client_path, (POD_IP, 9090)) == ("reply", f"pong from {CLIENT_IP}".encode())
                assert [a[0] for a in other.peers] == [CLIENT_IP]
