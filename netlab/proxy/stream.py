"""tcp_proxy where TLS is on one side: a connection whose mTLS the server sidecar terminated, or one the client
sidecar sends to a meshed endpoint with mTLS. Bytes are counted as the application sees them, a half-close is
passed on (as close_notify over TLS), a reset resets the other side; the access-log line and Istio's TCP metrics
carry the identities. (Plaintext both ways takes relay.Connection's faster path.)"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from typing import Any, Protocol

from netlab.proxy import stats as st
from netlab.proxy.accesslog import Entry
from netlab.proxy.lb import Host
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import Route
from netlab.proxy.telemetry import Security
from netlab.proxy.tls import TlsFailed, TlsStream, UpstreamTls, open_tls
from netlab.proxy.upstream import upstream_socket

_LINGER_RST = b"\1\0\0\0\0\0\0\0"


class StreamContext(Protocol):
    """What a listener's connections share (netlab.proxy.relay.Context), as far as this uses it."""

    loop: asyncio.AbstractEventLoop
    direction: str
    stats: st.Stats
    log: Any
    telemetry: Any
    connect_timeout: float
    active: set[Any]
    libuv: bool


class _End(asyncio.Protocol):
    def __init__(self, relay: StreamRelay) -> None:
        self.relay = relay
        self.transport: Any = None
        self.eof = self.lost = False
        self.peer: _End = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.relay.forward(self, data)

    def eof_received(self) -> bool:
        self.relay.at_eof(self)
        return True

    def pause_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay.lost(self, exc)


class StreamRelay:
    def __init__(self, ctx: StreamContext, route: Route, client: Addr, orig: Addr, start: float,
                 downstream: Any, sock: socket.socket, upstream: Addr, host: Host | None = None,
                 security: Security | None = None, held: bytes = b"", counted: bool = False,
                 upstream_tls: UpstreamTls | None = None) -> None:
        """`counted`: the connection is already in the cluster's upstream_cx_total (handed over by the relay).
        `upstream_tls`: how to speak TLS to the upstream (None: plaintext)."""
        self.upstream_tls = upstream_tls
        self.ctx, self.route, self.client, self.orig, self.start = ctx, route, client, orig, start
        self.sock = sock  # the client's socket (for a reset)
        self.upstream, self.host = upstream, host
        self.security = security  # the downstream mTLS (server side), or set once the upstream's is up
        self.d, self.u = _End(self), _End(self)
        self.d.peer, self.u.peer = self.u, self.d
        self.held: list[bytes] | None = [held] if held else []
        self.rx = self.tx = self.pub_rx = self.pub_tx = 0
        self.flags = self.details = self.failure = "-"
        self.up_local: Addr | None = None
        self.idle_mark, self.idle_since = -1, 0.0
        self.closing = self.done = False
        self.resumed = False  # the upstream TLS session was resumed (no full handshake)
        self.row, self.base = ctx.stats.row, ctx.stats.base(route.cluster)
        if not counted:
            self.row[self.base + st.CX_TOTAL] += 1
        self.row[self.base + st.CX_ACTIVE] += 1
        if host is not None:
            host.active += 1
        ctx.active.add(self)
        if isinstance(downstream, TlsStream):
            downstream.start(self.d)
        else:
            downstream.set_protocol(self.d)
            self.d.connection_made(downstream)
        self.task = ctx.loop.create_task(self.connect())

    # --- the upstream ---

    async def connect(self) -> None:
        ctx, route, tls = self.ctx, self.route, self.upstream_tls
        try:
            sock = upstream_socket(route, self.client[0])
            try:
                await asyncio.wait_for(ctx.loop.sock_connect(sock, self.upstream), ctx.connect_timeout)
                self.up_local = sock.getsockname()
                if tls is None:
                    await ctx.loop.create_connection(lambda: self.u, sock=sock)
                    return self.upstream_ready()
                stream = await open_tls(ctx.loop, sock, tls, ctx.connect_timeout)
            except TlsFailed as failed:
                self.failure = failed.args[0]
                return self.connect_failed(None)
            except BaseException:
                sock.close()
                raise
            if tls.local:
                self.security = Security("", stream.peer, tls.local)
            self.resumed = stream.sslobj.session_reused
            stream.start(self.u)
            self.upstream_ready()
        except asyncio.CancelledError:
            return None
        except TimeoutError:
            self.row[self.base + st.CONNECT_TIMEOUT] += 1
            return self.connect_failed(errno.ETIMEDOUT)
        except OSError as e:
            return self.connect_failed(e.errno or errno.EIO)

    def upstream_ready(self) -> None:
        if self.closing:
            return self.u.transport.close()
        for data in self.held or ():
            self.u.transport.write(data)
        self.held = None
        if self.d.eof:
            self.u.transport.write_eof()

    def connect_failed(self, err: int | None) -> None:
        """UF,URX as tcp_proxy logs a failed connect (or TLS handshake) to its one upstream."""
        self.row[self.base + st.CONNECT_FAIL] += 1
        if err is not None:
            self.failure = "connect_timeout" if err == errno.ETIMEDOUT else \
                f"delayed_connect_error:_{err}"
        self.flags = "UF,URX"
        self.up_local = None
        self.close(reset=True)
        self.finish()

    # --- bytes ---

    def forward(self, side: _End, data: bytes) -> None:
        if side is self.d:
            self.rx += len(data)
            if self.held is not None:
                self.held.append(data)
                return
            self.u.transport.write(data)
        else:
            self.tx += len(data)
            self.d.transport.write(data)

    def at_eof(self, side: _End) -> None:
        side.eof = True
        other = side.peer
        if other.transport is not None and not other.lost and not (side is self.d and self.held is not None):
            if other.eof:
                return self.close()
            other.transport.write_eof()

    def lost(self, side: _End, exc: Exception | None) -> None:
        if side is self.d and self.ctx.libuv:
            self.sock.detach()  # libuv closed the fd (see relay.Side.sock)
        if not self.closing:
            if exc is not None:
                if side is self.d:
                    self.row[self.base + st.DOWN_RESET] += 1
                else:
                    self.row[self.base + st.UP_RESET] += 1
                self.details = f"{'downstream' if side is self.d else 'upstream'}_reset"
            self.close(reset=exc is not None)
        if self.d.lost and (self.u.lost or self.u.transport is None):
            self.finish()

    # --- the worker's view (relay.Connection's): ticks, idle timeout, shutdown ---

    def measure(self) -> None:
        pass

    def publish(self) -> None:
        self.row[self.base + st.TX_BYTES] += self.rx - self.pub_rx
        self.row[self.base + st.RX_BYTES] += self.tx - self.pub_tx
        self.pub_rx, self.pub_tx = self.rx, self.tx

    def idle_close(self) -> None:
        self.details = "idle_timeout"
        self.close()

    def close(self, reset: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        if self.held is not None:
            self.task.cancel()
        for end in (self.d, self.u):
            transport = end.transport
            if transport is None or end.lost:
                continue
            if reset:
                if end is self.d:
                    with contextlib.suppress(OSError):
                        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                transport.abort()
            else:
                transport.close()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        ctx = self.ctx
        ctx.active.discard(self)
        self.row[self.base + st.CX_ACTIVE] -= 1
        if self.host is not None:
            self.host.active -= 1
        self.publish()
        outbound = ctx.direction == "outbound"
        ctx.telemetry.tcp(outbound, self.route.cluster, self.upstream[0], self.flags, self.tx, self.rx,
                          self.security)
        if ctx.log is not None:
            sni = self.security.sni if self.security is not None and self.security.sni else "-"
            ctx.log.log(Entry(self.start, self.route.cluster, self.orig, self.client, self.upstream, self.up_local,
                              self.flags, self.rx, self.tx, int((time.time() - self.start) * 1000), self.details,
                              self.failure, requested_server_name=sni))
