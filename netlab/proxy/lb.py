"""Load balancers: which endpoint of a cluster a new connection goes to, as Envoy picks it.

- ROUND_ROBIN: the healthy hosts in turn, from a random start (Envoy seeds the index so that proxies do not all
  begin with the same host).
- LEAST_REQUEST: with equal weights Envoy's "power of two choices": two hosts drawn at random, the one with fewer
  active requests wins (the first drawn on a tie). For tcp_proxy a request is a connection.
- RANDOM: one healthy host at random.
Unhealthy hosts are skipped unless fewer than the panic threshold (50%) are healthy; then, as Envoy does, every
host is used ("panic mode"). Counts are per worker process, as Envoy's are per worker thread for the choice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from netlab.mesh.types import HEALTHY, Cluster
from netlab.proxy.origdst import Addr

PANIC_THRESHOLD = 0.5


class Host:
    __slots__ = ("active", "addr", "healthy", "pod")

    def __init__(self, addr: Addr, healthy: bool = True, pod: str = "") -> None:
        self.addr = addr
        self.healthy = healthy
        self.pod = pod
        self.active = 0  # connections open to it from this worker


class LoadBalancer:
    __slots__ = ("hosts", "next", "pick", "policy", "usable")

    def __init__(self, policy: str, hosts: Sequence[Host]) -> None:
        self.policy = policy
        self.hosts = list(hosts)
        self.next = random.randrange(len(self.hosts)) if self.hosts else 0
        self.usable: list[Host] = []
        self.pick = {"LEAST_REQUEST": self._least_request, "RANDOM": self._random}.get(policy, self._round_robin)
        self.refresh()

    @classmethod
    def of(cls, cluster: Cluster) -> LoadBalancer:
        return cls(cluster.lb_policy, [Host((e.address, e.port), e.health == HEALTHY, e.pod)
                                       for e in cluster.endpoints])

    def refresh(self) -> None:
        """After a host's health changed: the hosts to choose from (all of them in panic mode)."""
        healthy = [h for h in self.hosts if h.healthy]
        panic = bool(self.hosts) and len(healthy) < PANIC_THRESHOLD * len(self.hosts)
        self.usable = self.hosts if panic else healthy

    def _round_robin(self) -> Host | None:
        usable = self.usable
        if not usable:
            return None
        self.next += 1
        return usable[self.next % len(usable)]

    def _random(self) -> Host | None:
        usable = self.usable
        return usable[random.randrange(len(usable))] if usable else None

    def _least_request(self) -> Host | None:
        usable = self.usable
        if not usable:
            return None
        n = len(usable)
        first = usable[random.randrange(n)]
        second = usable[random.randrange(n)]
        return second if second.active < first.active else first
