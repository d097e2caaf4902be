"""Load balancers: which endpoint of a cluster a new connection (or HTTP request) goes to, as Envoy picks it.

- ROUND_ROBIN: the healthy hosts in turn, from a random start (Envoy seeds the index so that proxies do not all
  begin with the same host).
- LEAST_REQUEST: with equal weights Envoy's "power of two choices": two hosts drawn at random, the one with fewer
  active requests wins (the first drawn on a tie). For tcp_proxy a request is a connection.
- RANDOM: one healthy host at random.
- RING_HASH (a DestinationRule's consistentHash): the same key (a header's value, a query parameter, the source
  IP) keeps going to the same host while the hosts stay the same. Rendezvous hashing on CRC32 rather than Envoy's
  ring of xxHash points: the property users rely on holds, the exact mapping differs.
Unhealthy hosts are skipped unless fewer than the panic threshold (50%) are healthy; then, as Envoy does, every
host is used ("panic mode"). Counts are per worker process, as Envoy's are per worker thread for the choice.

Outlier detection (Envoy's, as a DestinationRule sets it): a host that answers `consecutive_5xx` 5xx in a row
(connect failures count as 503), or `consecutive_gateway` 502/503/504 in a row, is ejected at once for
base_ejection x its ejection count, as long as no more than max_ejection_percent of the hosts are out (one host
may always be). Ejected hosts come back when their time is up, checked at most once per `interval`. State is per
worker process (Envoy keeps it per cluster on its main thread).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence

from netlab.mesh.types import HEALTHY, Cluster, Endpoint, OutlierPolicy
from netlab.proxy.origdst import Addr

PANIC_THRESHOLD = 0.5


class Host:
    __slots__ = ("active", "addr", "ejected_until", "ejections", "errors_5xx", "errors_gateway", "healthy", "identity",
                 "mtls", "pod")

    def __init__(self, addr: Addr, healthy: bool = True, pod: str = "", mtls: bool = False,
                 identity: str = "") -> None:
        self.addr = addr
        self.healthy = healthy
        self.pod = pod
        self.mtls = mtls  # connections to it are Istio mTLS (ISTIO_MUTUAL), else plaintext
        self.identity = identity  # the SPIFFE id its certificate must carry ("": any from the mesh's CA)
        self.active = 0  # connections (tcp_proxy) or requests (HTTP) open to it from this worker
        self.errors_5xx = self.errors_gateway = 0  # consecutive, for outlier detection
        self.ejections = 0
        self.ejected_until = 0.0  # monotonic time; 0: not ejected

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0


def _mtls(cluster: Cluster, endpoint: Endpoint) -> tuple[bool, str]:
    """(mTLS?, the identity to check) for an endpoint: the DestinationRule's tls.mode, else auto mTLS (endpoints
    whose sidecar takes it). ISTIO_MUTUAL checks the DestinationRule's subjectAltNames when it gives some."""
    if not cluster.sni or cluster.tls_mode == "DISABLE":
        return False, ""
    if cluster.tls_mode in ("SIMPLE", "MUTUAL"):  # the server's own certificate: no SPIFFE id to check
        return True, ""
    if cluster.tls_mode == "ISTIO_MUTUAL":
        return True, cluster.subject_alt_names[0] if cluster.subject_alt_names else endpoint.identity
    return endpoint.tls_mode == "istio", endpoint.identity


class LoadBalancer:
    __slots__ = ("hosts", "next", "next_check", "outlier", "pick", "policy", "usable")

    def __init__(self, policy: str, hosts: Sequence[Host], outlier: OutlierPolicy | None = None) -> None:
        self.policy = policy
        self.hosts = list(hosts)
        self.outlier = outlier
        self.next_check = 0.0  # when ejected hosts are looked at again
        self.next = random.randrange(len(self.hosts)) if self.hosts else 0
        self.usable: list[Host] = []
        self.pick = {"LEAST_REQUEST": self._least_request, "RANDOM": self._random,
                     "RING_HASH": self._ring_hash}.get(policy, self._round_robin)
        self.refresh()

    @classmethod
    def of(cls, cluster: Cluster) -> LoadBalancer:
        return cls(cluster.lb_policy, [Host((e.address, e.port), e.health == HEALTHY, e.pod, *_mtls(cluster, e))
                                       for e in cluster.endpoints], cluster.outlier)

    def refresh(self) -> None:
        """After a host's health changed: the hosts to choose from (all of them in panic mode)."""
        healthy = [h for h in self.hosts if h.healthy and not h.ejected]
        panic = bool(self.hosts) and len(healthy) < PANIC_THRESHOLD * len(self.hosts)
        self.usable = self.hosts if panic else healthy

    def _round_robin(self, key: str | None = None) -> Host | None:
        usable = self.usable
        if not usable:
            return None
        self.next += 1
        return usable[self.next % len(usable)]

    def _random(self, key: str | None = None) -> Host | None:
        usable = self.usable
        return usable[random.randrange(len(usable))] if usable else None

    def _least_request(self, key: str | None = None) -> Host | None:
        usable = self.usable
        if not usable:
            return None
        n = len(usable)
        first = usable[random.randrange(n)]
        second = usable[random.randrange(n)]
        return second if second.active < first.active else first

    def _ring_hash(self, key: str | None = None) -> Host | None:
        if key is None:  # nothing to hash on (the header is absent): Envoy picks at random
            return self._random()
        usable = self.usable
        return max(usable, key=lambda h: zlib.crc32(f"{key}|{h.addr[0]}:{h.addr[1]}".encode())) if usable else None

    # --- outlier detection --------------------------------------------------------------------------------------

    def report(self, host: Host, status: int) -> None:
        """An attempt's result on `host`: the response status, or 503 for a connect failure or reset."""
        policy = self.outlier
        if policy is None:
            return
        self.unexpire()
        if status >= 500:
            host.errors_5xx += 1
            host.errors_gateway = host.errors_gateway + 1 if status in (502, 503, 504) else 0
        else:
            host.errors_5xx = host.errors_gateway = 0
            return
        tripped = (policy.consecutive_5xx and host.errors_5xx >= policy.consecutive_5xx) or (
            policy.consecutive_gateway and host.errors_gateway >= policy.consecutive_gateway)
        if tripped and not host.ejected:
            out = sum(1 for h in self.hosts if h.ejected)
            if out == 0 or (out + 1) * 100 <= policy.max_ejection_percent * len(self.hosts):
                host.ejections += 1
                host.ejected_until = time.monotonic() + policy.base_ejection * host.ejections
                host.errors_5xx = host.errors_gateway = 0
                self.refresh()

    def unexpire(self) -> None:
        """Hosts whose ejection is over come back (looked at once per interval, as Envoy's timer does)."""
        policy = self.outlier
        now = time.monotonic()
        if policy is None or now < self.next_check:
            return
        self.next_check = now + policy.interval
        back = [h for h in self.hosts if h.ejected and h.ejected_until <= now]
        for h in back:
            h.ejected_until = 0.0
        if back:
            self.refresh()
