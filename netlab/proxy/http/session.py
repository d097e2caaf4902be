"""A downstream connection on the sidecar's HTTP connection manager: httptools (llhttp, the parser of Node.js)
parses the requests; they run one at a time, in order (pipelined ones wait their turn); the responses go back on
the same connection, kept alive unless the client or an error ends it.

As Envoy's HTTP/1 codec and connection manager do with Istio's settings: HTTP/1.0 gets 426 (Istio does not set
accept_http_10); a malformed request 400 "Bad Request" (DPE, http1.codec_error) and the connection closed; request
headers over 60 KiB or more than 100 of them 431 (http1.headers_too_large, http1.too_many_headers); an Upgrade
other than websocket 403 (upgrade_failed), and h2c's is dropped (served as HTTP/1.1); `Expect: 100-continue` is
answered here; a client's FIN ends the connection (HTTP connections are not half-closed) and a request still in
flight is logged DC.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import cast

import httptools

from netlab.proxy.http import headers as hd
from netlab.proxy.http.exchange import Exchange, HttpContext
from netlab.proxy.http.router import HttpRouter
from netlab.proxy.http.upstream import UpstreamHttp
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import Route
from netlab.proxy.telemetry import Security

MAX_HEADERS_BYTES = 60 * 1024  # HCM max_request_headers_kb default (the URL counts)
MAX_HEADERS_COUNT = 100  # HttpProtocolOptions max_headers_count default
MAX_QUEUED = 16  # pipelined requests parsed ahead before the client is paused


class _HeadersTooLarge(Exception):
    def __init__(self, details: str) -> None:
        self.details = details


class HttpSession(asyncio.Protocol):
    def __init__(self, ctx: HttpContext, transport: asyncio.Transport, sock: socket.socket, client: Addr,
                 orig: Addr, router: HttpRouter[Route]) -> None:
        self.ctx = ctx
        self.transport = transport
        self.sock = sock
        self.client = client
        self.orig = orig
        self.router = router
        self.outbound_side = ctx.direction == "outbound"
        self.server_name = hd.SERVER_INBOUND if ctx.edge is not None else None  # a gateway's is "istio-envoy"
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.building: Exchange | None = None
        self.url: list[bytes] = []
        self.headers: hd.Headers = []
        self.header_bytes = 0
        self.close_after_response = False
        self.upgrading = False  # an upgrade request went upstream: what the client sends next waits for its answer
        self.upgrade_rest = b""
        self.stopped = False  # nothing more is read (after a malformed request)
        self.pauses = 0
        self.lost = False
        self.corked: list[bytes] | None = None  # writes held until uncork()
        self.security: Security | None = None  # the client's mTLS, when the server sidecar terminated it
        self.tunnel_to: asyncio.Transport | None = None
        ctx.sessions.add(self)

    # --- parsing -----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel_to is not None:
            self.tunnel_to.write(data)
        elif self.upgrading:  # after an upgrade request: for the new protocol, if the upstream agrees
            self.upgrade_rest += data
        elif not self.stopped:
            self.parse(data)

    def parse(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] if upgrade.args else len(data):]
            building = self.building
            if building is not None and building.upgrade is not None:
                self.upgrading = True
                self.upgrade_rest = rest
            elif building is not None and building.reject is None:  # h2c's upgrade, dropped: go on as HTTP/1.1
                self.parser = httptools.HttpRequestParser(self)
                if rest:
                    self.parse(rest)
            else:
                self.stopped = True
        except httptools.HttpParserError as error:
            too_large = error.__context__ if isinstance(error.__context__, _HeadersTooLarge) else None
            self.protocol_error(431 if too_large else 400, too_large.details if too_large else "http1.codec_error")

    def on_message_begin(self) -> None:
        self.url = []
        self.headers = []
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.header_bytes += len(url)
        if self.header_bytes > MAX_HEADERS_BYTES:
            raise _HeadersTooLarge("http1.headers_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADERS_BYTES:
            raise _HeadersTooLarge("http1.headers_too_large")
        if len(self.headers) > MAX_HEADERS_COUNT:
            raise _HeadersTooLarge("http1.too_many_headers")

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = self.headers
        chunked = content_length = False
        upgrade: bytes | None = None
        expect = False
        kept: hd.Headers = []
        for name, value in headers:
            if name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-length":
                content_length = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
                continue
            elif name == b"upgrade":
                upgrade = value
            elif name == b"http2-settings":  # h2c's upgrade: dropped with it
                continue
            kept.append((name, value))
        reject: tuple[int, str] | None = None
        if parser.get_http_version() != "1.1":
            reject = (426, "low_version")
        elif parser.should_upgrade() and upgrade is not None:
            if upgrade.lower() == b"h2c":
                upgrade = None
            elif upgrade.lower() != b"websocket":  # Istio's upgrade_configs: websocket only
                reject = (403, "upgrade_failed")
        else:
            upgrade = None
        exchange = Exchange(self, parser.get_method(), b"".join(self.url), kept, chunked, content_length, upgrade)
        exchange.keep_alive = parser.should_keep_alive() and reject is None
        exchange.expect_continue = expect
        exchange.reject = reject
        self.building = exchange
        self.queue.append(exchange)
        if len(self.queue) == 1:
            self.start(exchange)
        elif len(self.queue) > MAX_QUEUED:
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.building is not None:
            self.building.request_body(body)

    def on_message_complete(self) -> None:
        if self.building is not None:
            self.building.request_complete()

    def protocol_error(self, status: int, details: str) -> None:
        """A request the codec cannot read: answered at once when nothing is in flight, else the connection ends
        after the response in flight. Either way nothing more is read."""
        self.close_after_response = self.stopped = True
        self.building = None
        if self.queue:  # the requests read before it are answered first
            return
        bad = Exchange(self, b"-", b"-", [], False, False, None)
        bad.keep_alive = False
        self.queue.append(bad)
        bad.local_reply(status, hd.REASONS[status].decode(), "DPE", details)

    # --- running requests --------------------------------------------------------------------------------------

    def start(self, exchange: Exchange) -> None:
        if exchange.reject is not None:
            status, details = exchange.reject
            exchange.keep_alive = False
            return exchange.local_reply(status, "", "", details)
        if exchange.expect_continue:
            self.write(hd.CONTINUE)
        exchange.begin()

    def closing_after(self, exchange: Exchange) -> bool:
        return self.close_after_response or not exchange.keep_alive

    def exchange_done(self, exchange: Exchange) -> None:
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        if self.lost:
            return
        if self.tunnel_to is not None:
            return
        if self.closing_after(exchange):
            self.queue.clear()
            self.close()
            return
        if self.queue:
            self.start(self.queue[0])
        if len(self.queue) <= MAX_QUEUED and self.pauses:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if self.lost:
            return
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.transport.write(data)

    def cork(self) -> None:
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked, self.corked = self.corked, None
        if corked and not self.lost:
            self.transport.write(b"".join(corked))

    def abort(self) -> None:
        """Reset the client connection (a response cut off midway)."""
        self.corked = None
        if not self.lost:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.transport.abort()

    def close(self) -> None:
        self.uncork()
        if not self.lost:
            self.transport.close()

    # --- flow control ------------------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        self.pauses += 1
        if self.pauses == 1 and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.pauses == 0:
            return
        self.pauses -= 1
        if self.pauses == 0 and not self.lost:
            self.transport.resume_reading()

    def pause_writing(self) -> None:  # the client reads slowly: stop reading the upstream
        up = self.queue[0].upstream if self.queue else None
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.queue[0].upstream if self.queue else None
        if up is not None and up.transport is not None and not up.lost:
            up.transport.resume_reading()

    # --- endings -----------------------------------------------------------------------------------------------

    def eof_received(self) -> bool:
        return False  # HTTP connections are not half-closed: the connection ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ctx.sessions.discard(self)
        if self.ctx.libuv:
            self.sock.detach()  # libuv closed the fd (see relay.Side.sock)
        if self.tunnel_to is not None:
            self.tunnel_to.close()
        queue, self.queue = list(self.queue), deque()
        if queue:
            queue[0].downstream_lost()

    def tunnel(self, conn: UpstreamHttp, rest: bytes) -> None:
        """After a 101: relay bytes both ways until either side closes; the exchange is logged then."""
        exchange = self.queue[0]
        up = conn.transport
        assert up is not None
        self.tunnel_to = up
        self.uncork()
        up.set_protocol(_TunnelEnd(self, exchange))
        if rest:
            exchange.sent += len(rest)
            self.write(rest)
        if self.upgrade_rest:
            up.write(self.upgrade_rest)
            self.upgrade_rest = b""


class _TunnelEnd(asyncio.Protocol):
    """The upstream side of an upgraded connection."""

    def __init__(self, session: HttpSession, exchange: Exchange) -> None:
        self.session = session
        self.exchange = exchange

    def data_received(self, data: bytes) -> None:
        self.exchange.sent += len(data)
        self.session.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()
        self.exchange.response_finished()


def session_for(ctx: HttpContext, transport: asyncio.BaseTransport, sock: socket.socket, client: Addr, orig: Addr,
                router: HttpRouter[Route], held: bytes) -> HttpSession:
    """Hand an accepted connection (its first bytes already read) to a new session."""
    tr = cast(asyncio.Transport, transport)
    session = HttpSession(ctx, tr, sock, client, orig, router)
    tr.set_protocol(session)
    if held:
        session.data_received(held)
    return session
