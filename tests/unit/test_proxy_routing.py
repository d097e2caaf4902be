"""Pure parts of the proxy: cluster choice per Istio version, loop guard, config, CLI, SO_ORIGINAL_DST parsing."""

from __future__ import annotations

import socket
import struct

import pytest

from netlab.errors import UsageError
from netlab.proxy.__main__ import config_from_args
from netlab.proxy.config import ProxyConfig
from netlab.proxy.inbound import choose_inbound
from netlab.proxy.origdst import SO_ORIGINAL_DST, redirect_original_dst
from netlab.proxy.outbound import choose_outbound
from netlab.proxy.routes import loop_reason

POD = ("10.44.0.2", 8080)


@pytest.mark.parametrize(
    ("istio", "passthrough", "upstream", "bind"),
    [
        ("1.9", True, ("127.0.0.1", 8080), None),
        ("1.9.9", True, ("127.0.0.1", 8080), None),
        ("1.10", True, POD, "127.0.0.6"),
        ("1.10", False, ("127.0.0.1", 8080), None),
        ("1.20", False, ("127.0.0.1", 8080), None),
        ("1.30", True, POD, "127.0.0.6"),
    ],
)
def test_declared_port_target_per_version(istio: str, passthrough: bool, upstream: tuple, bind: str | None) -> None:
    cfg = ProxyConfig(istio=istio, declared_ports=frozenset({8080}), inbound_passthrough=passthrough)
    route = choose_inbound(cfg, POD)
    got = (route.cluster, route.upstream, route.bind_ip, route.transparent)
    assert got == ("inbound|8080||", upstream, bind, False)


@pytest.mark.parametrize("istio", ["1.9", "1.10", "1.30"])
def test_undeclared_port_is_inbound_passthrough_from_127_0_0_6(istio: str) -> None:
    route = choose_inbound(ProxyConfig(istio=istio, declared_ports=frozenset({8080})), ("10.44.0.2", 9090))
    assert (route.cluster, route.upstream, route.bind_ip) == ("InboundPassthroughClusterIpv4", ("10.44.0.2", 9090),
                                                              "127.0.0.6")


def test_tproxy_upstream_is_transparent_not_127_0_0_6() -> None:
    cfg = ProxyConfig(istio="1.10", mode="TPROXY", declared_ports=frozenset({8080}))
    for port in (8080, 9090):
        route = choose_inbound(cfg, ("10.44.0.2", port))
        assert route.transparent and route.bind_ip is None and route.upstream == ("10.44.0.2", port)


def test_outbound_is_passthrough_to_original_destination() -> None:
    route = choose_outbound(("198.51.100.7", 443))
    assert (route.direction, route.cluster, route.upstream, route.bind_ip) == (
        "outbound", "PassthroughCluster", ("198.51.100.7", 443), None)


def test_loop_guard() -> None:
    ports = frozenset({15001, 15006})
    client, pod_local = ("10.44.0.1", 5000), ("10.44.0.2", 15006)
    assert loop_reason("inbound", POD, client, pod_local, ports, True) is None
    # Original destination is one of our capture listeners.
    own = loop_reason("inbound", ("10.44.0.2", 15006), client, pod_local, ports, True)
    assert own is not None and own[0] == "loop_detected:own_listener"
    assert loop_reason("outbound", ("127.0.0.1", 15001), client, ("127.0.0.1", 15001), ports, True) is not None
    # Another pod's 15006 is a legitimate outbound destination.
    assert loop_reason("outbound", ("10.44.0.9", 15006), client, ("127.0.0.1", 15001), ports, True) is None
    # Our own 127.0.0.6 upstream captured again (ISTIO_OUTPUT rule 1 missing).
    again = loop_reason("inbound", POD, ("127.0.0.6", 41109), ("127.0.0.1", 15006), ports, True)
    assert again is not None and "ISTIO_OUTPUT rule 1" in again[1]
    # In TPROXY mode 127.0.0.6 is not the proxy's signature.
    assert loop_reason("inbound", POD, ("127.0.0.6", 41109), pod_local, ports, False) is None


def test_config_validation() -> None:
    with pytest.raises(UsageError):
        ProxyConfig(istio="one.ten")
    with pytest.raises(UsageError):
        ProxyConfig(istio="1.8")
    with pytest.raises(UsageError, match=r"does not exist in istio 1\.21"):
        ProxyConfig(istio="1.21", inbound_passthrough=False)
    with pytest.raises(UsageError):
        ProxyConfig(workers=0)
    cfg = ProxyConfig(istio="1.10", declared_ports=frozenset({9090, 8080}))
    assert cfg.clusters() == ["inbound|8080||", "inbound|9090||", "InboundPassthroughClusterIpv4",
                              "PassthroughCluster", "BlackHoleCluster"]


def test_cli_defaults_and_tproxy_uid() -> None:
    cfg = config_from_args(["--istio", "1.9", "--declared-ports", "8080,9090", "--workers", "2"])
    assert (cfg.istio, cfg.mode, cfg.uid, cfg.gid, cfg.workers) == ("1.9", "REDIRECT", 1337, 1337, 2)
    assert cfg.declared_ports == {8080, 9090} and cfg.drop_privileges
    cfg = config_from_args(["--mode", "TPROXY", "--no-inbound-passthrough", "--access-log", "/x", "--access-log-json"])
    assert (cfg.uid, cfg.gid, cfg.inbound_passthrough, cfg.access_log_json) == (0, 1337, False, True)
    assert not cfg.inbound_to_original_dst
    with pytest.raises(SystemExit):
        config_from_args(["--declared-ports", "80,x"])


class _FakeSock:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def getsockopt(self, level: int, opt: int, buflen: int) -> bytes:
        assert (level, opt, buflen) == (socket.SOL_IP, SO_ORIGINAL_DST, 16)
        return self.raw


def test_so_original_dst_parsing() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton("10.44.0.2") + bytes(8)
    assert redirect_original_dst(_FakeSock(raw)) == ("10.44.0.2", 8080)  # type: ignore[arg-type]
