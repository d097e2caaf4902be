"""Latency client for `netlab bench proxy`, run inside the client pod: `python -m netlab.bench.loadgen MODE ...`.

Modes (HTTP/1.1 GET against nginx; one JSON object on stdout, latencies in microseconds):
- `open`: sequential requests on one keep-alive connection (what a hop adds to an open connection);
- `new`:  connect, request with `Connection: close`, full response, close (what a hop adds to a new connection);
- `rate`: open loop at a fixed request rate over a pool of keep-alive connections (p50/p90/p99 under load).

wrk measures throughput; this client measures latency with one request in flight per connection, so the figures
are round trips, not queueing in the load generator.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from netlab.bench.report import median, percentile
from netlab.hostport import split_host_port

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def response_length(buf: bytes | bytearray) -> int | None:
    """Length of the first complete HTTP response in buf (headers + Content-Length body), None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without Content-Length: " + head[:80].decode(errors="replace"))
    stop = head.find(b"\r\n", at + 2)
    total = end + 4 + int(head[at + 17: stop if stop >= 0 else len(head)])
    return total if len(buf) >= total else None


def summarize(samples_ns: list[int], errors: int = 0, elapsed_s: float = 0.0) -> dict[str, float]:
    ordered = sorted(s / 1000 for s in samples_ns)
    out: dict[str, float] = {"samples": len(ordered), "errors": errors}
    if ordered:
        out.update(median=median(ordered), p50=percentile(ordered, 50), p90=percentile(ordered, 90),
                   p99=percentile(ordered, 99), max=ordered[-1])
    if elapsed_s > 0:
        out["rate"] = len(ordered) / elapsed_s
    return out


def _connect(target: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(target, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _exchange(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    buf = bytearray()
    while response_length(buf) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a full response")
        buf += chunk


def run_open(target: tuple[str, int], count: int, warmup: int = 200) -> dict[str, float]:
    samples = []
    with _connect(target) as sock:
        for i in range(warmup + count):
            start = time.perf_counter_ns()
            _exchange(sock, REQUEST)
            if i >= warmup:
                samples.append(time.perf_counter_ns() - start)
    return summarize(samples)


def run_new(target: tuple[str, int], count: int, warmup: int = 50) -> dict[str, float]:
    samples, errors = [], 0
    for i in range(warmup + count):
        start = time.perf_counter_ns()
        try:
            with _connect(target) as sock:
                _exchange(sock, CLOSE_REQUEST)
                done = time.perf_counter_ns()
        except OSError:
            errors += 1
            continue
        if i >= warmup:
            samples.append(done - start)
    return summarize(samples, errors)


@dataclass
class _Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    sent_ns: int = 0


def run_rate(target: tuple[str, int], rate: float, duration: float, connections: int) -> dict[str, float]:
    """Send on a fixed schedule (open loop); a request waits only when every connection is busy."""
    sel = selectors.DefaultSelector()
    idle: deque[_Conn] = deque()
    for _ in range(connections):
        conn = _Conn(_connect(target))
        _exchange(conn.sock, REQUEST)  # warm the connection (and the proxy's upstream) before timing
        conn.sock.setblocking(False)
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        idle.append(conn)
    total = int(rate * duration)
    interval = 1e9 / rate
    start = time.perf_counter_ns() + 10_000_000
    due = deque[int]()
    scheduled = 0
    samples: list[int] = []
    errors = lagged = 0
    while len(samples) + errors < total:
        now = time.perf_counter_ns()
        while scheduled < total and start + scheduled * interval <= now:
            due.append(int(start + scheduled * interval))
            scheduled += 1
        while due and idle:
            conn = idle.popleft()
            if now - due.popleft() > 1_000_000:
                lagged += 1  # sent over 1 ms late: all connections were busy or the client was descheduled
            conn.sent_ns = time.perf_counter_ns()
            conn.sock.send(REQUEST)
        wait = (start + scheduled * interval - now) / 1e9 if scheduled < total else 1.0
        for key, _ in sel.select(max(0.0, wait)):
            conn = key.data
            try:
                chunk = conn.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                errors += 1
                sel.unregister(conn.sock)
                conn.sock.close()
                continue
            conn.buf += chunk
            length = response_length(conn.buf)
            if length is not None:
                samples.append(time.perf_counter_ns() - conn.sent_ns)
                del conn.buf[:length]
                idle.append(conn)
        if not sel.get_map():
            break
    elapsed = (time.perf_counter_ns() - start) / 1e9
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    out = summarize(samples, errors, elapsed)
    out["lagged"] = lagged
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netlab.bench.loadgen")
    p.add_argument("mode", choices=("open", "new", "rate"))
    p.add_argument("--target", required=True, metavar="IP:PORT")
    p.add_argument("--count", type=int, default=2000, help="samples (open, new)")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (rate)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds (rate)")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections (rate)")
    a = p.parse_args(argv)
    target = split_host_port(a.target)
    if a.mode == "open":
        result = run_open(target, a.count)
    elif a.mode == "new":
        result = run_new(target, a.count)
    else:
        result = run_rate(target, a.rate, a.duration, a.connections)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
