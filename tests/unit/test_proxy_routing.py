"""Pure parts of the proxy: routing from a snapshot per Istio version, loop guard, config, CLI, SO_ORIGINAL_DST
parsing."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from netlab.errors import UsageError
from netlab.mesh.build import standalone_snapshot
from netlab.proxy.__main__ import config_from_args
from netlab.proxy.config import ProxyConfig
from netlab.proxy.dispatch import Dispatch
from netlab.proxy.origdst import SO_ORIGINAL_DST, redirect_original_dst
from netlab.proxy.routes import loop_reason

POD = ("10.44.0.2", 8080)


@pytest.mark.parametrize(
    ("istio", "passthrough", "upstream", "bind", "kind"),
    [
        ("1.9", True, ("127.0.0.1", 8080), None, "STATIC"),
        ("1.9.9", True, ("127.0.0.1", 8080), None, "STATIC"),
        ("1.10", True, POD, "127.0.0.6", "ORIGINAL_DST"),
        ("1.10", False, ("127.0.0.1", 8080), None, "STATIC"),
        ("1.20", False, ("127.0.0.1", 8080), None, "STATIC"),
        ("1.30", True, POD, "127.0.0.6", "ORIGINAL_DST"),
    ],
)
def test_declared_port_target_per_version(istio: str, passthrough: bool, upstream: tuple, bind: str | None,
                                          kind: str) -> None:
    dispatch = Dispatch(standalone_snapshot(istio, inbound_ports=[8080], inbound_passthrough=passthrough))
    route = dispatch.inbound(POD)
    assert (route.cluster, route.pick()[0], route.bind_ip, route.transparent) == ("inbound|8080||", upstream, bind,
                                                                                 False)
    assert dispatch.clusters["inbound|8080||"].type == kind


@pytest.mark.parametrize(("istio", "name"), [("1.9", "InboundPassthroughClusterIpv4"),
                                             ("1.22", "InboundPassthroughClusterIpv4"),
                                             ("1.23", "InboundPassthroughCluster"),
                                             ("1.30", "InboundPassthroughCluster")])
def test_undeclared_port_is_inbound_passthrough_from_127_0_0_6(istio: str, name: str) -> None:
    route = Dispatch(standalone_snapshot(istio, inbound_ports=[8080])).inbound(("10.44.0.2", 9090))
    assert (route.cluster, route.upstream, route.bind_ip) == (name, ("10.44.0.2", 9090), "127.0.0.6")


def test_tproxy_upstream_is_transparent_not_127_0_0_6() -> None:
    dispatch = Dispatch(standalone_snapshot("1.10", "TPROXY", inbound_ports=[8080]))
    for port in (8080, 9090):
        route = dispatch.inbound(("10.44.0.2", port))
        assert route.transparent and route.bind_ip is None and route.upstream == ("10.44.0.2", port)


def test_outbound_is_passthrough_to_original_destination() -> None:
    dispatch = Dispatch(standalone_snapshot("1.10"))
    route = dispatch.outbound(("198.51.100.7", 443))
    assert (route.direction, route.cluster, route.upstream, route.bind_ip) == (
        "outbound", "PassthroughCluster", ("198.51.100.7", 443), None)
    blackhole = dispatch.outbound(("127.0.0.1", 15001))  # virtualOutbound-blackhole
    assert (blackhole.cluster, blackhole.refused, blackhole.flags) == ("BlackHoleCluster",
                                                                      "virtualOutbound-blackhole", "NR")


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
        config_from_args(["--istio", "one.ten"])
    with pytest.raises(UsageError):
        config_from_args(["--istio", "1.8"])
    with pytest.raises(UsageError, match=r"does not exist in istio 1\.21"):
        config_from_args(["--istio", "1.21", "--no-inbound-passthrough"])
    with pytest.raises(UsageError):
        ProxyConfig(workers=0)


def test_cli_defaults_and_tproxy_uid(tmp_path: Path) -> None:
    cfg = config_from_args(["--istio", "1.9", "--declared-ports", "8080,9090", "--workers", "2"])
    assert (cfg.snapshot.node.istio, cfg.mode, cfg.uid, cfg.gid, cfg.workers) == ("1.9", "REDIRECT", 1337, 1337, 2)
    assert {"inbound|8080||", "inbound|9090||"} <= {c.name for c in cfg.snapshot.clusters} and cfg.drop_privileges
    cfg = config_from_args(["--mode", "TPROXY", "--no-inbound-passthrough", "--declared-ports", "80",
                            "--access-log", "/x", "--access-log-json"])
    assert (cfg.uid, cfg.gid, cfg.access_log_json) == (0, 1337, True)
    assert cfg.snapshot.cluster("inbound|80||").type == "STATIC"  # type: ignore[union-attr]
    with pytest.raises(SystemExit):
        config_from_args(["--declared-ports", "80,x"])
    path = tmp_path / "pod.json"
    path.write_text(standalone_snapshot("1.30", "TPROXY", version=7).dumps())
    cfg = config_from_args(["--config", str(path)])
    assert (cfg.snapshot.version, cfg.mode, cfg.uid, cfg.config_path) == (7, "TPROXY", 0, str(path))
    path.write_text("{}")
    with pytest.raises(UsageError, match="is not a configuration snapshot"):
        config_from_args(["--config", str(path)])


class _FakeSock:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def getsockopt(self, level: int, opt: int, buflen: int) -> bytes:
        assert (level, opt, buflen) == (socket.SOL_IP, SO_ORIGINAL_DST, 16)
        return self.raw


def test_so_original_dst_parsing() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton("10.44.0.2") + bytes(8)
    assert redirect_original_dst(_FakeSock(raw)) == ("10.44.0.2", 8080)  # type: ignore[arg-type]


def test_a_scheme_match_sees_https_for_a_request_that_came_over_tls() -> None:
    """A VirtualService `match: [{scheme: {exact: https}}]` takes what a gateway's HTTPS server received (Envoy's
    :scheme follows the downstream connection), not what came in plain text."""
    from netlab.mesh.types import HeaderMatcher, Route, RouteConfig, RouteMatch, StringMatcher, VirtualHost
    from netlab.proxy.http.router import HttpRouter

    secure = Route("secure", RouteMatch(headers=(HeaderMatcher(":scheme", StringMatcher("exact", "https")),)), "a")
    config = RouteConfig("r", (VirtualHost("any", ("*",), (secure, Route("rest", RouteMatch(), "b"))),))
    router: HttpRouter[str] = HttpRouter(config, lambda cluster, orig: cluster)
    assert router.match("www.example", "/", scheme="https").route.name == "secure"  # type: ignore[union-attr]
    assert router.match("www.example", "/").route.name == "rest"  # type: ignore[union-attr]
