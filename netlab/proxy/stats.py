"""The proxy's metrics, shared by all worker processes, rendered in Prometheus text format as Envoy's /stats/prometheus:
counters per cluster (Envoy's envoy_cluster_*) and Istio's standard metrics per label set (istio_requests_total,
the istio_request_duration_milliseconds / istio_request_bytes / istio_response_bytes histograms, istio_tcp_*).

One anonymous shared mmap, created before the workers fork, holds a region per table and worker: its counters (a
slot of counters per key: a cluster name, or a tuple of label values) and the list of its keys. A worker only
writes its own regions, so no locks are needed on the hot path. A worker gives a new key the next free slot and
publishes its key list (seqlock: an odd sequence number while writing), so the admin listener (worker 0) can sum
the regions by key when scraped, whatever order each worker learned the keys in.

The text is written here rather than by prometheus_client's exposition, which prints counters as floats and names
their TYPE lines `NAME_total` (Envoy prints `envoy_cluster_upstream_cx_connect_fail 3`); the tests read the output
with prometheus_client's parser.
"""

from __future__ import annotations

import json
import mmap
import struct
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

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

# Istio's standard metrics (istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc): the labels in
# the order the filter adds them, HTTP's and TCP's.
_PEER_LABELS = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster",
)
HTTP_LABELS = (*_PEER_LABELS, "request_protocol", "response_code", "grpc_response_status", "response_flags",
               "connection_security_policy")
TCP_LABELS = (*_PEER_LABELS, "request_protocol", "response_flags", "connection_security_policy")
# Envoy's default histogram buckets (source/common/stats/histogram_impl.cc, defaultBuckets), in the unit recorded.
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
           3600000)
HISTOGRAMS = ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes")
_HIST_WIDTH = len(BUCKETS) + 2  # a count per bucket, the overflow (+Inf), the sum
HTTP_WIDTH = 1 + len(HISTOGRAMS) * _HIST_WIDTH  # istio_requests_total, then the histograms
TCP_COUNTERS = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total")

MAX_CLUSTERS = 16384  # slots per worker (pages are only touched as they are used)
MAX_SERIES = 2048  # label sets per worker and kind (HTTP, TCP); more are not counted
NAMES_BYTES = 2 * 1024 * 1024
_HEADER = struct.Struct("=QQ")  # sequence number, length of the key list


class StatsFull(Exception):
    """More distinct clusters than slots."""


class Table:
    """A fixed number of int64 counters (`width`) per key, one region per worker in the shared map."""

    def __init__(self, mem: mmap.mmap, offset: int, workers: int, capacity: int, width: int) -> None:
        self._mem, self.offset, self.workers, self.capacity, self.width = mem, offset, workers, capacity, width
        self.region = _HEADER.size + NAMES_BYTES + 8 * capacity * width
        self.index: dict[Hashable, int] = {}  # this worker's key -> slot
        self.use(0)

    @property
    def size(self) -> int:
        return self.region * self.workers

    def use(self, worker: int) -> None:
        """Called in each worker after fork: its increments go to its own region. The keys it knows so far (from
        the parent) are published for it."""
        self.worker = worker
        start = self.offset + worker * self.region + _HEADER.size + NAMES_BYTES
        self.row = memoryview(self._mem)[start:start + 8 * self.capacity * self.width].cast("q")
        self._publish()

    def register(self, keys: Iterable[Hashable]) -> None:
        """Give every key not seen before a slot of this worker (a reload keeps the counts of the others)."""
        new = [key for key in dict.fromkeys(keys) if key not in self.index]
        if not new:
            return
        if len(self.index) + len(new) > self.capacity:
            raise StatsFull(f"more than {self.capacity} keys")
        for key in new:
            self.index[key] = len(self.index)
        self._publish()

    def slot(self, key: Hashable) -> int:
        """Offset of the key's counters in this worker's row, given a slot if new; -1 when the table is full."""
        found = self.index.get(key)
        if found is None:
            if len(self.index) >= self.capacity:
                return -1
            found = self.index[key] = len(self.index)
            self._publish()
        return found * self.width

    def _publish(self) -> None:
        names = json.dumps(list(self.index)).encode()
        if len(names) > NAMES_BYTES:
            raise StatsFull("keys exceed the shared name area")
        off = self.offset + self.worker * self.region
        seq, _ = _HEADER.unpack_from(self._mem, off)
        _HEADER.pack_into(self._mem, off, seq + 1, 0)  # odd: being written
        self._mem[off + _HEADER.size:off + _HEADER.size + len(names)] = names
        _HEADER.pack_into(self._mem, off, seq + 2, len(names))

    def _keys(self, worker: int) -> list[Any]:
        off = self.offset + worker * self.region
        for _ in range(1000):
            seq, size = _HEADER.unpack_from(self._mem, off)
            if seq % 2:
                continue
            data = self._mem[off + _HEADER.size:off + _HEADER.size + size]
            if _HEADER.unpack_from(self._mem, off)[0] == seq:
                return json.loads(data) if size else []
        return []  # a worker stuck mid-write: leave it out of this scrape

    def totals(self) -> dict[Hashable, list[int]]:
        """key -> its counters summed over the workers (tuple keys come back as tuples)."""
        sums: dict[Hashable, list[int]] = {}
        width = self.width
        words = memoryview(self._mem).cast("q")
        for worker in range(self.workers):
            start = (self.offset + worker * self.region + _HEADER.size + NAMES_BYTES) // 8
            for slot, key in enumerate(self._keys(worker)):
                values = words[start + slot * width:start + (slot + 1) * width]
                total = sums.setdefault(tuple(key) if isinstance(key, list) else key, [0] * width)
                for i, value in enumerate(values):
                    total[i] += value
        return sums


class Stats:
    def __init__(self, workers: int = 1, capacity: int = MAX_CLUSTERS, series: int = MAX_SERIES) -> None:
        self.workers = workers
        shapes = ((capacity, len(CLUSTER_COUNTERS)), (series, HTTP_WIDTH), (series, len(TCP_COUNTERS)))
        regions = [(_HEADER.size + NAMES_BYTES + 8 * n * width) * workers for n, width in shapes]
        self._mem = mmap.mmap(-1, sum(regions))  # MAP_SHARED | MAP_ANONYMOUS
        offsets = [sum(regions[:i]) for i in range(len(regions))]
        self.clusters, self.http, self.tcp = (Table(self._mem, off, workers, n, width)
                                              for off, (n, width) in zip(offsets, shapes, strict=True))
        self.row = self.clusters.row

    def use_row(self, worker: int) -> None:
        for table in (self.clusters, self.http, self.tcp):
            table.use(worker)
        self.row = self.clusters.row

    def register(self, clusters: Iterable[str]) -> None:
        self.clusters.register(clusters)

    def base(self, cluster: str) -> int:
        """Offset of the cluster's counters in this worker's row; add a counter index (CX_TOTAL, ...)."""
        return self.clusters.index[cluster] * len(CLUSTER_COUNTERS)

    def total(self, cluster: str, counter: int) -> int:
        return self.clusters.totals().get(cluster, [0] * len(CLUSTER_COUNTERS))[counter]

    def record_http(self, labels: tuple[str, ...], duration_ms: int, request_bytes: int, response_bytes: int) -> None:
        base = self.http.slot(labels)
        if base < 0:
            return
        row = self.http.row
        row[base] += 1
        for i, value in enumerate((duration_ms, request_bytes, response_bytes)):
            hist = base + 1 + i * _HIST_WIDTH
            row[hist + bisect_left(BUCKETS, value)] += 1
            row[hist + _HIST_WIDTH - 1] += value

    def record_tcp(self, labels: tuple[str, ...], sent: int, received: int) -> None:
        """A connection's whole life: opened, closed and its bytes (`sent` to the client)."""
        base = self.tcp.slot(labels)
        if base < 0:
            return
        row = self.tcp.row
        row[base] += 1
        row[base + 1] += 1
        row[base + 2] += sent
        row[base + 3] += received

    def prometheus(self, build_tag: str = "") -> str:
        lines: list[str] = []
        totals = self.clusters.totals()
        for ci, name in enumerate(CLUSTER_COUNTERS):
            metric = f"envoy_cluster_{name}"
            lines.append(f"# TYPE {metric} {'gauge' if name in _GAUGES else 'counter'}")
            lines += [f'{metric}{{cluster_name="{cluster}"}} {values[ci]}' for cluster, values in totals.items()]
        http = [(_labels(HTTP_LABELS, key), values) for key, values in self.http.totals().items()]
        lines.append("# TYPE istio_requests_total counter")
        lines += [f"istio_requests_total{{{labels}}} {values[0]}" for labels, values in http]
        for i, metric in enumerate(HISTOGRAMS):
            lines.append(f"# TYPE {metric} histogram")
            for labels, values in http:
                lines += _histogram(metric, labels, values[1 + i * _HIST_WIDTH:1 + (i + 1) * _HIST_WIDTH])
        tcp = [(_labels(TCP_LABELS, key), values) for key, values in self.tcp.totals().items()]
        for i, metric in enumerate(TCP_COUNTERS):
            lines.append(f"# TYPE {metric} counter")
            lines += [f"{metric}{{{labels}}} {values[i]}" for labels, values in tcp]
        if build_tag:
            lines += ["# TYPE istio_build gauge", f'istio_build{{component="proxy",tag="{_escape(build_tag)}"}} 1']
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _labels(names: Sequence[str], values: Any) -> str:
    return ",".join(f'{name}="{_escape(str(value))}"' for name, value in zip(names, values, strict=True))


def _histogram(metric: str, labels: str, values: Sequence[int]) -> list[str]:
    """Prometheus' cumulative buckets from the per-bucket counts, then the sum and the count. Bounds print as
    Envoy's (%g: le="600000", le="1.8e+06")."""
    lines, running = [], 0
    for bound, count in zip((*(f"{b:.6g}" for b in BUCKETS), "+Inf"), values[:-1], strict=True):
        running += count
        lines.append(f'{metric}_bucket{{{labels},le="{bound}"}} {running}')
    lines += [f"{metric}_sum{{{labels}}} {values[-1]}", f"{metric}_count{{{labels}}} {running}"]
    return lines
