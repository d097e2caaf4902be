"""Upstream HTTP/1.1 connections and their pools. A connection carries one request at a time (Envoy does not
pipeline upstream) and goes back to its pool when its response has ended and both sides want to keep it; the pool
is per worker and per (cluster, endpoint, source address), as Envoy's per-host connection pools are."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from netlab.proxy import stats as st
from netlab.proxy.origdst import Addr

PoolKey = tuple[str, Addr, str]  # cluster, endpoint, source address ("" for the kernel's choice)


class ResponseSink(Protocol):
    """What a connection hands its response to: the exchange it serves (netlab.proxy.http.exchange)."""

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
    """A worker's idle upstream connections."""

    def __init__(self) -> None:
        self.idle: dict[PoolKey, list[UpstreamHttp]] = {}

    def take(self, key: PoolKey) -> UpstreamHttp | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def give(self, conn: UpstreamHttp) -> None:
        """Back to the pool when it may carry another request; closed otherwise."""
        conn.exchange = None
        conn.sent_any = False
        if conn.reusable and not conn.lost:
            self.idle.setdefault(conn.key, []).append(conn)
        else:
            conn.close()

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
