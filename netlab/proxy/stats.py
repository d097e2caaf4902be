"""Counters per cluster, shared by all worker processes, rendered in Prometheus text format.

One anonymous shared mmap, created before the workers fork, holds a region per worker: its counters (a slot of
counters per cluster) and the names of its slots. A worker only writes its own region, so no locks are needed on
the hot path. Clusters come and go with configuration reloads: a worker gives a new cluster the next free slot
and publishes its name list (seqlock: an odd sequence number while writing), so the admin listener (worker 0) can
sum the regions by name when scraped, whatever order each worker learned the names in.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterable

# Envoy's names, so the queries users know from Istio work here too.
CLUSTER_COUNTERS = (
    "upstream_cx_total",
    "upstream_cx_active",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy_remote",  # the upstream reset the connection
    "upstream_cx_rx_bytes_total",  # bytes read from the upstream (sent to the client)
    "upstream_cx_tx_bytes_total",  # bytes written to the upstream (read from the client)
    "downstream_cx_destroy_remote",  # the client reset the connection
    "loop_detected",  # refused by the loop guard
    "upstream_rq_total",  # HTTP requests sent to the cluster (each attempt)
    "upstream_rq_retry",
    "upstream_rq_timeout",
    "upstream_rq_pending_overflow",  # refused by a circuit breaker (UO)
)
_GAUGES = {"upstream_cx_active"}
(CX_TOTAL, CX_ACTIVE, CONNECT_FAIL, CONNECT_TIMEOUT, UP_RESET, RX_BYTES, TX_BYTES, DOWN_RESET, LOOP, RQ_TOTAL,
 RQ_RETRY, RQ_TIMEOUT, RQ_OVERFLOW) = range(len(CLUSTER_COUNTERS))
MAX_CLUSTERS = 16384  # slots per worker (pages are only touched as they are used)
NAMES_BYTES = 2 * 1024 * 1024
_HEADER = struct.Struct("=QQ")  # sequence number, length of the name list


class StatsFull(Exception):
    """More distinct clusters than slots."""


class Stats:
    def __init__(self, workers: int = 1, capacity: int = MAX_CLUSTERS) -> None:
        self.workers = workers
        self.capacity = capacity
        self.width = capacity * len(CLUSTER_COUNTERS)
        self.region = _HEADER.size + NAMES_BYTES + 8 * self.width
        self._mem = mmap.mmap(-1, self.region * workers)  # MAP_SHARED | MAP_ANONYMOUS
        self.index: dict[str, int] = {}  # this worker's cluster -> slot
        self.use_row(0)

    def use_row(self, worker: int) -> None:
        """Called in each worker after fork: its increments go to its own region. The names it knows so far (from
        the parent) are published for it."""
        self.worker = worker
        start = worker * self.region + _HEADER.size + NAMES_BYTES
        self.row = memoryview(self._mem)[start:start + 8 * self.width].cast("q")
        self._publish()

    def register(self, clusters: Iterable[str]) -> None:
        """Give every cluster not seen before a slot of this worker (a reload keeps the counts of the others)."""
        new = [name for name in dict.fromkeys(clusters) if name not in self.index]
        if not new:
            return
        if len(self.index) + len(new) > self.capacity:
            raise StatsFull(f"more than {self.capacity} clusters")
        for name in new:
            self.index[name] = len(self.index)
        self._publish()

    def base(self, cluster: str) -> int:
        """Offset of the cluster's counters in this worker's row; add a counter index (CX_TOTAL, ...)."""
        return self.index[cluster] * len(CLUSTER_COUNTERS)

    def _publish(self) -> None:
        names = json.dumps(list(self.index)).encode()
        if len(names) > NAMES_BYTES:
            raise StatsFull("cluster names exceed the shared name area")
        off = self.worker * self.region
        seq, _ = _HEADER.unpack_from(self._mem, off)
        _HEADER.pack_into(self._mem, off, seq + 1, 0)  # odd: being written
        self._mem[off + _HEADER.size:off + _HEADER.size + len(names)] = names
        _HEADER.pack_into(self._mem, off, seq + 2, len(names))

    def _names(self, worker: int) -> list[str]:
        off = worker * self.region
        for _ in range(1000):
            seq, size = _HEADER.unpack_from(self._mem, off)
            if seq % 2:
                continue
            data = self._mem[off + _HEADER.size:off + _HEADER.size + size]
            if _HEADER.unpack_from(self._mem, off)[0] == seq:
                return json.loads(data) if size else []
        return []  # a worker stuck mid-write: leave it out of this scrape

    def totals(self) -> dict[str, list[int]]:
        """cluster -> its counters summed over the workers."""
        sums: dict[str, list[int]] = {}
        n = len(CLUSTER_COUNTERS)
        for worker in range(self.workers):
            start = (worker * self.region + _HEADER.size + NAMES_BYTES) // 8
            for slot, name in enumerate(self._names(worker)):
                values = memoryview(self._mem).cast("q")[start + slot * n:start + (slot + 1) * n]
                total = sums.setdefault(name, [0] * n)
                for i, value in enumerate(values):
                    total[i] += value
        return sums

    def total(self, cluster: str, counter: int) -> int:
        return self.totals().get(cluster, [0] * len(CLUSTER_COUNTERS))[counter]

    def prometheus(self) -> str:
        totals = self.totals()
        lines: list[str] = []
        for ci, name in enumerate(CLUSTER_COUNTERS):
            metric = f"envoy_cluster_{name}"
            lines.append(f"# TYPE {metric} {'gauge' if name in _GAUGES else 'counter'}")
            for cluster, values in totals.items():
                lines.append(f'{metric}{{cluster_name="{cluster}"}} {values[ci]}')
        return "\n".join(lines) + "\n"
