"""Typed settings of one sidecar proxy: which Istio behaviour it mimics and how it runs in the pod."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from netlab.errors import UsageError

Mode = Literal["REDIRECT", "TPROXY"]

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
HEALTH_PORT = 15021
STATS_PORT = 15090

# Envoy/pilot names (FACTS.md section b).
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughClusterIpv4"
OUTBOUND_PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_BIND_IP = "127.0.0.6"
LOCALHOST = "127.0.0.1"
# SO_MARK of TPROXY upstream sockets: the `ip rule fwmark 1337 lookup 133` route sends the app's replies back to us.
TPROXY_MARK = 1337

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?$")


def parse_istio_version(text: str) -> tuple[int, int]:
    """'1.10' or '1.10.6' -> (1, 10)."""
    m = _VERSION.match(text.strip())
    if not m:
        raise UsageError(f"istio version {text!r} is not MAJOR.MINOR[.PATCH]", hint="e.g. --istio 1.10")
    version = (int(m.group(1)), int(m.group(2)))
    if version < (1, 9):
        raise UsageError(f"istio {text} is not modelled", hint="netlab models Istio 1.9 and later")
    return version


def inbound_cluster_name(port: int) -> str:
    """The per-port inbound cluster name since proxies >= 1.8.1 (`inbound|PORT||`)."""
    return f"inbound|{port}||"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    istio: str = "1.10"
    mode: Mode = "REDIRECT"
    # Ports declared by a service selecting the pod: they get `inbound|port||` clusters; others pass through.
    declared_ports: frozenset[int] = field(default_factory=frozenset)
    # istiod's PILOT_ENABLE_INBOUND_PASSTHROUGH (1.10-1.20); False restores 1.9 inbound targets.
    inbound_passthrough: bool = True
    uid: int = 1337
    gid: int = 1337
    bind_address: str = "0.0.0.0"
    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    health_port: int = HEALTH_PORT
    stats_port: int = STATS_PORT
    access_log: str | None = None
    access_log_json: bool = False
    workers: int = 1
    connect_timeout: float = 10.0  # Istio's default meshConfig.connectTimeout
    idle_timeout: float = 3600.0  # Envoy tcp_proxy default idle timeout
    ready_file: str | None = None
    drop_privileges: bool = True

    def __post_init__(self) -> None:
        version = parse_istio_version(self.istio)
        if self.mode not in ("REDIRECT", "TPROXY"):
            raise UsageError(f"mode {self.mode!r} is not REDIRECT or TPROXY")
        if not self.inbound_passthrough and version >= (1, 21):
            raise UsageError(
                f"--no-inbound-passthrough does not exist in istio {self.istio}",
                hint="PILOT_ENABLE_INBOUND_PASSTHROUGH was removed in 1.21.0; it only applies to 1.10-1.20",
            )
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.connect_timeout <= 0 or self.idle_timeout <= 0:
            raise UsageError("timeouts must be positive")
        for port in self.declared_ports:
            if not 0 < port < 65536:
                raise UsageError(f"declared port {port} is out of range")

    @property
    def version(self) -> tuple[int, int]:
        return parse_istio_version(self.istio)

    @property
    def inbound_to_original_dst(self) -> bool:
        """True when declared ports go to the original destination from 127.0.0.6 (1.10+ default)."""
        return self.version >= (1, 10) and self.inbound_passthrough

    @property
    def listener_ports(self) -> frozenset[int]:
        return frozenset((self.outbound_port, self.inbound_port, self.health_port, self.stats_port))

    def clusters(self) -> list[str]:
        """Every cluster this proxy can pick, in a stable order (the stats table is sized from it)."""
        return [
            *(inbound_cluster_name(p) for p in sorted(self.declared_ports)),
            INBOUND_PASSTHROUGH_CLUSTER,
            OUTBOUND_PASSTHROUGH_CLUSTER,
            BLACKHOLE_CLUSTER,
        ]
