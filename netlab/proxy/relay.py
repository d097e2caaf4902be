"""The forwarding core: a Protocol pair per connection, with transport flow control and Envoy's failure semantics.

- Bytes go straight from `data_received` to the peer transport; a peer whose write buffer passes the high-water
  mark pauses reading on this side (large reads and no copies make bulk fast).
- Bytes that arrive before the upstream is connected are buffered (uvloop may deliver data even when paused).
- Half-close: EOF on one side becomes `write_eof()` on the other; the connection closes once both ended.
- An upstream connect failure or reset resets the client (SO_LINGER 0 + abort: RST, "connection reset by peer").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import sys
import time
from collections.abc import Callable
from functools import partial

from netlab.proxy import stats as st
from netlab.proxy.accesslog import AccessLog, Entry
from netlab.proxy.origdst import Addr, Resolver
from netlab.proxy.routes import Route, loop_reason, refused
from netlab.proxy.upstream import connect

HIGH_WATER = 256 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)


def errno_detail(prefix: str, err: int | None) -> str:
    if err is None:
        return prefix
    return f"{prefix}:{errno.errorcode.get(err, 'E?')}({err})"


def reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close with RST instead of FIN, as Envoy does on upstream failure."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class Context:
    """What a listener's connections share: routing, stats, log, the set of live connections."""

    __slots__ = ("active", "capture_ports", "choose", "connect_timeout", "direction", "log", "loop",
                 "redirect_mode", "resolver", "stats")

    def __init__(self, loop: asyncio.AbstractEventLoop, direction: str, resolver: Resolver,
                 choose: Callable[[Addr], Route], stats: st.Stats, log: AccessLog | None,
                 connect_timeout: float, capture_ports: frozenset[int], redirect_mode: bool) -> None:
        self.loop = loop
        self.direction = direction
        self.resolver = resolver
        self.choose = choose
        self.stats = stats
        self.log = log
        self.connect_timeout = connect_timeout
        self.capture_ports = capture_ports
        self.redirect_mode = redirect_mode
        self.active: set[Downstream] = set()


class Upstream(asyncio.Protocol):
    __slots__ = ("d",)

    def __init__(self, downstream: Downstream) -> None:
        self.d = downstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.d.upstream_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        d = self.d
        d.tx += len(data)
        d.t.write(data)

    def eof_received(self) -> bool:
        d = self.d
        d.up_eof = True
        if not d.t.is_closing():
            d.t.write_eof()
        if d.down_eof:
            d.close_both()
        return True  # keep the other direction open (half-close)

    def pause_writing(self) -> None:
        self.d.t.pause_reading()

    def resume_writing(self) -> None:
        self.d.t.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.d.upstream_lost(exc)


class Downstream(asyncio.Protocol):
    __slots__ = (
        "base",
        "ctx",
        "details",
        "down_eof",
        "down_lost",
        "flags",
        "idle_mark",
        "idle_since",
        "local",
        "orig",
        "peer",
        "pending",
        "pub_rx",
        "pub_tx",
        "route",
        "row",
        "rx",
        "start",
        "t",
        "task",
        "timed_out",
        "timer",
        "tx",
        "up_eof",
        "up_local",
        "up_lost",
        "up_t",
    )

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.up_t: asyncio.Transport | None = None
        self.pending: list[bytes] | None = []
        self.rx = self.tx = self.pub_rx = self.pub_tx = 0
        self.down_eof = self.up_eof = self.down_lost = self.up_lost = self.timed_out = False
        self.flags = self.details = "-"
        self.up_local: Addr | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_mark = -1
        self.idle_since = 0.0

    # --- downstream side -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ctx = self.ctx
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.start = time.time()
        self.t.set_write_buffer_limits(HIGH_WATER)
        # One plain socket object over the fd for all the per-connection syscalls (the transport's wrapper
        # builds a new one per call under uvloop).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, transport.get_extra_info("socket").fileno())
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.local = sock.getsockname()
                self.peer = sock.getpeername()
            except OSError as e:  # the client reset before we got here
                self.local = self.peer = self.orig = ("0.0.0.0", 0)
                self.route = refused(ctx.direction, errno_detail("downstream_gone", e.errno))
                return self.fail_early()
            try:
                self.orig = ctx.resolver(sock)
            except OSError as e:
                self.orig = self.local
                self.route = refused(ctx.direction, errno_detail("no_original_destination", e.errno))
            else:
                loop = loop_reason(ctx.direction, self.orig, self.peer, self.local, ctx.capture_ports,
                                   ctx.redirect_mode)
                if loop is None:
                    self.route = ctx.choose(self.orig)
                else:
                    self.route = refused(ctx.direction, loop[0])
                    print(f"netlab-proxy: {loop[1]}", file=sys.stderr, flush=True)
        finally:
            sock.detach()
        row = self.row = ctx.stats.row
        base = self.base = ctx.stats.base(self.route.cluster)
        row[base + st.CX_TOTAL] += 1
        if self.route.refused is not None:
            if self.route.refused.startswith("loop_detected"):
                row[base + st.LOOP] += 1
            self.fail("NR", self.route.refused)
            return
        row[base + st.CX_ACTIVE] += 1
        ctx.active.add(self)
        self.task = ctx.loop.create_task(
            connect(ctx.loop, self.route, self.peer[0], partial(Upstream, self)))
        self.task.add_done_callback(self._connect_done)
        self.timer = ctx.loop.call_later(ctx.connect_timeout, self._connect_timed_out)

    def fail_early(self) -> None:
        self.row = self.ctx.stats.row
        self.base = self.ctx.stats.base(self.route.cluster)
        self.fail("DC", self.route.refused or "-")

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        up = self.up_t
        if up is not None:
            up.write(data)
        elif self.pending is not None:
            self.pending.append(data)
            if self.rx > HIGH_WATER:
                self.t.pause_reading()

    def eof_received(self) -> bool:
        self.down_eof = True
        up = self.up_t
        if up is not None:
            if not up.is_closing():
                up.write_eof()
            if self.up_eof:
                self.close_both()
        return True

    def pause_writing(self) -> None:
        if self.up_t is not None:
            self.up_t.pause_reading()

    def resume_writing(self) -> None:
        if self.up_t is not None:
            self.up_t.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.down_lost = True
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        up = self.up_t
        if exc is not None and self.flags == "-":
            self.flags = "DC"
            self.details = errno_detail("downstream_reset", getattr(exc, "errno", None))
            self.row[self.base + st.DOWN_RESET] += 1
            if up is not None:
                reset_transport(up)  # pass the client's reset on to the app
        elif up is not None:
            up.close()
        if up is None or self.up_lost:
            self.finish()

    # --- upstream side ---------------------------------------------------------------------------------------

    def upstream_made(self, transport: asyncio.Transport) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.up_t = transport
        if self.down_lost:  # the client left while we were connecting
            transport.close()
            return
        transport.set_write_buffer_limits(HIGH_WATER)
        if self.ctx.log is not None:
            self.up_local = transport.get_extra_info("sockname")
        pending = self.pending
        self.pending = None
        if pending:
            transport.write(b"".join(pending))
            self.t.resume_reading()
        if self.down_eof:
            transport.write_eof()

    def _connect_timed_out(self) -> None:
        self.timed_out = True
        if self.task is not None:
            self.task.cancel()

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        if self.down_lost or self.up_t is not None:
            return
        if task.cancelled():
            if self.timed_out:
                self.row[self.base + st.CONNECT_TIMEOUT] += 1
                self.connect_failed(errno.ETIMEDOUT)
            return
        exc = task.exception()
        if exc is not None:
            self.connect_failed(getattr(exc, "errno", None) or errno.EIO)

    def connect_failed(self, err: int) -> None:
        self.row[self.base + st.CONNECT_FAIL] += 1
        self.fail("UF", errno_detail("upstream_connect_error", err))

    def upstream_lost(self, exc: Exception | None) -> None:
        self.up_lost = True
        if not self.down_lost:
            if exc is not None and self.flags == "-":
                self.row[self.base + st.UP_RESET] += 1
                self.fail("UC", errno_detail("upstream_reset", getattr(exc, "errno", None)))
                return
            self.t.close()
        else:
            self.finish()

    # --- endings ---------------------------------------------------------------------------------------------

    def fail(self, flags: str, details: str) -> None:
        """Reset the client; finish() runs from connection_lost."""
        self.flags = flags
        self.details = details
        self.pending = None
        reset_transport(self.t)
        if self.up_t is not None and not self.up_t.is_closing():
            reset_transport(self.up_t)

    def close_both(self) -> None:
        self.t.close()
        if self.up_t is not None:
            self.up_t.close()

    def idle_close(self) -> None:
        self.details = "idle_timeout"
        self.close_both()

    def finish(self) -> None:
        """Both sides are gone: account and log once."""
        ctx = self.ctx
        if self.route.refused is None:
            if self not in ctx.active:
                return
            ctx.active.discard(self)
            self.row[self.base + st.CX_ACTIVE] -= 1
            self.publish()
        log = ctx.log
        if log is not None:
            log.log(Entry(self.start, ctx.direction, self.route.cluster, self.flags, self.details, self.rx,
                          self.tx, int((time.time() - self.start) * 1000), self.route.upstream, self.up_local,
                          self.orig, self.peer))

    def publish(self) -> None:
        """Add the bytes moved since the last call to the shared counters."""
        row, base = self.row, self.base
        row[base + st.TX_BYTES] += self.rx - self.pub_rx
        row[base + st.RX_BYTES] += self.tx - self.pub_tx
        self.pub_rx, self.pub_tx = self.rx, self.tx
