"""Typed settings of one sidecar proxy process: its configuration snapshot (what it routes, as istiod would send
it) and how it runs in the pod (ports, user, workers, logs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from netlab.errors import UsageError
from netlab.mesh.build import standalone_snapshot
from netlab.mesh.types import Snapshot

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
HEALTH_PORT = 15021
STATS_PORT = 15090
ADMIN_PORT = 15000  # Envoy's admin API, on 127.0.0.1 only (istioctl proxy-config reads it)
ADMIN_ADDRESS = "127.0.0.1"
# SO_MARK of TPROXY upstream sockets: the `ip rule fwmark 1337 lookup 133` route sends the app's replies back to us.
TPROXY_MARK = 1337


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    snapshot: Snapshot = field(default_factory=lambda: standalone_snapshot("1.10"))
    config_path: str | None = None  # where the snapshot came from: read again on SIGHUP
    uid: int = 1337
    gid: int = 1337
    bind_address: str = "0.0.0.0"
    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    health_port: int = HEALTH_PORT
    stats_port: int = STATS_PORT
    admin_port: int = ADMIN_PORT
    admin_address: str = ADMIN_ADDRESS
    access_log: str | None = None
    access_log_json: bool = False
    workers: int = 1
    connect_timeout: float = 10.0  # Istio's default meshConfig.connectTimeout
    idle_timeout: float = 3600.0  # Envoy tcp_proxy default idle timeout
    ready_file: str | None = None
    drop_privileges: bool = True
    certs: str | None = None  # the directory of the workload certificate (mTLS); None: plaintext only

    def __post_init__(self) -> None:
        if self.mode not in ("REDIRECT", "TPROXY"):
            raise UsageError(f"mode {self.mode!r} is not REDIRECT or TPROXY")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.connect_timeout <= 0 or self.idle_timeout <= 0:
            raise UsageError("timeouts must be positive")

    @property
    def mode(self) -> str:
        """Interception mode, from the snapshot's node: it decides the listeners (transparent for TPROXY)."""
        return self.snapshot.node.mode

    @property
    def listener_ports(self) -> frozenset[int]:
        return frozenset((self.outbound_port, self.inbound_port, self.health_port, self.stats_port))
