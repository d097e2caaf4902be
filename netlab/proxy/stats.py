"""Counters per cluster, shared by all worker processes, rendered in Prometheus text format.

The table lives in an anonymous shared mmap created before the workers fork: each worker owns one row, so
no locks are needed, and the admin listener (worker 0) sums the rows when scraped.
"""

from __future__ import annotations

import mmap

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
)
_GAUGES = {"upstream_cx_active"}
CX_TOTAL, CX_ACTIVE, CONNECT_FAIL, CONNECT_TIMEOUT, UP_RESET, RX_BYTES, TX_BYTES, DOWN_RESET, LOOP = range(
    len(CLUSTER_COUNTERS)
)


class Stats:
    def __init__(self, clusters: list[str], workers: int = 1) -> None:
        self.clusters = clusters
        self.index = {name: i for i, name in enumerate(clusters)}
        self.width = len(clusters) * len(CLUSTER_COUNTERS)
        self.workers = workers
        self._mem = mmap.mmap(-1, 8 * self.width * workers)  # MAP_SHARED | MAP_ANONYMOUS
        self._all = memoryview(self._mem).cast("q")
        self.row = self._all[0 : self.width]

    def use_row(self, worker: int) -> None:
        """Called in each worker after fork: its increments go to its own row."""
        self.row = self._all[worker * self.width : (worker + 1) * self.width]

    def base(self, cluster: str) -> int:
        """Offset of the cluster's counters in a row; add a counter index (CX_TOTAL, ...)."""
        return self.index[cluster] * len(CLUSTER_COUNTERS)

    def total(self, cluster: str, counter: int) -> int:
        off = self.base(cluster) + counter
        return sum(self._all[w * self.width + off] for w in range(self.workers))

    def prometheus(self) -> str:
        lines: list[str] = []
        for ci, name in enumerate(CLUSTER_COUNTERS):
            metric = f"envoy_cluster_{name}"
            lines.append(f"# TYPE {metric} {'gauge' if name in _GAUGES else 'counter'}")
            for cluster in self.clusters:
                value = self.total(cluster, ci)
                lines.append(f'{metric}{{cluster_name="{cluster}"}} {value}')
        return "\n".join(lines) + "\n"
