"""Upstream HTTP/1.1 connections and their pools. A connection carries one request at a time (Envoy does not
pipeline upstream) and goes back to its pool when its response has ended and both sides want to keep it; the pool
is per worker and per (cluster, endpoint, source address), as Envoy's per-host connection pools are."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol, cast

import httptools

from netlab.proxy import stats as st
from netlab.proxy.origdst import Addr
from netlab.proxy.telemetry import Security

PoolKey = tuple[str, Addr, str]  # cluster, endpoint, source address ("" for the kernel's choice)


class Corkable(Protocol):
    """The client's connection: writes between cork() and uncork() go out as one."""

    def cork(self) -> None: ...
    def uncork(self) -> None: ...


class ResponseSink(Protocol):
    """What a connection hands its response to: the exchange it serves (netlab.proxy.http.exchange)."""

    session: Corkable

    def response_head(self, conn: UpstreamHttp, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_done(self, conn: UpstreamHttp) -> None: ...
    def upgraded(self, conn: UpstreamHttp, rest: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamHttp, exc: Exception | None) -> None: ...
    def upstream_protocol_error(self, conn: UpstreamHttp, error: Exception) -> None: ...
    def pause_request(self) -> None: ...
    def resume_request(self) -> None: ...


class UpstreamHttp(asyncio.Protocol):
    """One upstream connection: forwards its response's parts to the exchange it serves."""

    def __init__(self, pool: Pool, key: PoolKey, row: memoryview, base: int, local: Addr | None) -> None:
        self.pool = pool
        self.key = key
        self.row = row
        self.base = base
        self.local = local  # the connection's source address, for the access log
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: ResponseSink | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False  # a 1xx response other than 101, which is not forwarded
        self.reusable = True
        self.lost = False
        self.sent_any = False  # the current exchange's request has started going out on this connection
        self.served = 0  # requests answered on it
        self.security: Security | None = None  # its mTLS (the server's identity), when it has one
        self.generation = pool.generation.get(key[0], 0)  # the cluster's configuration it was made for

    # --- transport ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.row[self.base + st.CX_ACTIVE] += 1

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.sent_any = True
        self.row[self.base + st.TX_BYTES] += len(data)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.row[self.base + st.RX_BYTES] += len(data)
        if self.exchange is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close(abort=True)
            return
        # What these bytes make the exchange write to the client (a head, its body) goes out in one write.
        downstream = self.exchange.session
        downstream.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange = self.exchange
            if exchange is not None:
                offset = upgrade.args[0] if upgrade.args else len(data)
                exchange.upgraded(self, data[offset:])
        except httptools.HttpParserError as error:
            self.reusable = False
            if self.exchange is not None:
                self.exchange.upstream_protocol_error(self, error)
        finally:
            downstream.uncork()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_request()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.row[self.base + st.CX_ACTIVE] -= 1
        if exc is not None:
            self.row[self.base + st.UP_RESET] += 1
        self.pool.discard(self)
        self.pool.closed(self.key)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost(self, exc)

    def close(self, abort: bool = False) -> None:
        self.reusable = False
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    # --- the response, from the parser -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        # A 1xx other than 101 is not forwarded; after a 101 the parser stops (HttpParserUpgrade), the connection
        # staying with its exchange.
        self.interim = 100 <= status < 200
        if self.exchange is None or (self.interim and status != 101):
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        self.exchange.response_head(self, status, self.headers)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.response_done(self)


class Pool:
    """A worker's upstream HTTP connections: the idle ones per (cluster, endpoint, source), how many each cluster
    has open (its max_connections circuit breaker), and the requests waiting for one (max_pending_requests)."""

    def __init__(self) -> None:
        self.idle: dict[PoolKey, list[UpstreamHttp]] = {}
        self.open: dict[str, int] = {}  # cluster -> connections open or opening
        self.waiting: dict[PoolKey, deque[Waiter]] = {}
        self.generation: dict[str, int] = {}  # cluster -> how many times its configuration changed

    def drain(self, clusters: set[str]) -> None:
        """A reload changed these clusters (endpoints, TLS): their connections are not used for new requests."""
        for cluster in clusters:
            self.generation[cluster] = self.generation.get(cluster, 0) + 1
        for key in [k for k in self.idle if k[0] in clusters]:
            for conn in self.idle.pop(key):
                conn.close()

    def take(self, key: PoolKey) -> UpstreamHttp | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def opening(self, cluster: str) -> None:
        self.open[cluster] = self.open.get(cluster, 0) + 1

    def closed(self, key: PoolKey) -> None:
        """A connection of `key` is gone (or never came up): a request waiting for one may open its own."""
        self.open[key[0]] = max(0, self.open.get(key[0], 0) - 1)
        waiter = self._next_waiter(key)
        if waiter is not None:
            waiter.connection_freed(None)

    def pending(self, cluster: str) -> int:
        return sum(len(q) for k, q in self.waiting.items() if k[0] == cluster)

    def wait(self, key: PoolKey, waiter: Waiter) -> None:
        self.waiting.setdefault(key, deque()).append(waiter)

    def cancel(self, key: PoolKey, waiter: Waiter) -> None:
        queue = self.waiting.get(key)
        if queue and waiter in queue:
            queue.remove(waiter)

    def _next_waiter(self, key: PoolKey) -> Waiter | None:
        queue = self.waiting.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done:
                return waiter
        return None

    def give(self, conn: UpstreamHttp, max_requests: int = 0) -> None:
        """A connection whose response has ended: to a waiting request, else idle, when it may carry another
        request (max_requests per connection, 0 unlimited); closed otherwise."""
        conn.exchange = None
        conn.sent_any = False
        conn.served += 1
        if max_requests and conn.served >= max_requests:
            conn.reusable = False
        if not conn.reusable or conn.lost or conn.generation != self.generation.get(conn.key[0], 0):
            conn.close()
            return
        waiter = self._next_waiter(conn.key)
        if waiter is not None:
            waiter.connection_freed(conn)
        else:
            self.idle.setdefault(conn.key, []).append(conn)

    def discard(self, conn: UpstreamHttp) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.idle[conn.key]

    def close(self) -> None:
        for conns in list(self.idle.values()):
            for conn in conns:
                conn.close()
        self.idle.clear()


class Waiter(Protocol):
    """A request waiting for a connection of its endpoint (an exchange)."""

    done: bool

    def connection_freed(self, conn: UpstreamHttp | None) -> None: ...
