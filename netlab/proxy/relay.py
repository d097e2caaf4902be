"""The forwarding core: one Connection per accepted socket, relayed with raw non-blocking sockets that sit in the
worker's edge-triggered epoll set (poller.py), with flow control and Envoy's failure semantics.

Why not transports: per new connection they cost a transport object per side, getsockname/getpeername calls,
repeated ioctl(FIONBIO) and epoll registrations, a Task and futures for the connect. Here the accept gives the
peer, SO_ORIGINAL_DST the destination, and each socket is registered once. (Also measured: a transports relay
that propagates half-close with write_eof() made uvloop 0.23 abort with "double free or corruption" under ~7k
Connection: close requests/s; the stdlib loop ran the same code clean.)

- Each Side's own handler runs the common case (read, send to the peer) with as few Python steps as possible:
  per event, that path is most of what the proxy adds to a request. Connection handles the rest: routing,
  connecting, failures, endings, accounting.
- Each read (up to 256 KiB, a fresh bytes object: measured cheaper for bulk than recv_into one shared buffer)
  goes straight to the peer socket; only what the peer cannot take now is kept (its backlog). Reading from the
  source stops while that backlog is over 256 KiB and resumes below 64 KiB (the transports' high/low-water
  marks), so reads overlap the peer's draining.
- Client bytes that arrive before the upstream is connected wait in the kernel; they are read once connected.
- Half-close: EOF on one side becomes shutdown(SHUT_WR) on the other once its backlog is drained; when the
  second direction ends both sockets are closed (close() sends that FIN, no extra shutdown).
- An upstream connect failure or reset resets the client (SO_LINGER 0 + close: RST, "connection reset by peer");
  a client reset is passed on to the app the same way.
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

from netlab.proxy import stats as st
from netlab.proxy.accesslog import AccessLog, Entry
from netlab.proxy.origdst import Addr, Resolver
from netlab.proxy.poller import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, Poller
from netlab.proxy.routes import Route, loop_reason, refused
from netlab.proxy.upstream import open_upstream

HIGH_WATER = 256 * 1024
READS_PER_WAKEUP = 16  # bulk: consecutive full reads before letting other connections run
LOW_WATER = HIGH_WATER // 4  # resume reading the source once its peer's backlog is this small
ROUTE_CACHE = 4096  # original destinations remembered per listener (cleared when full)
_READABLE = EPOLLIN | EPOLLERR | EPOLLHUP
_RESET_AFTER_CONNECT = (errno.ECONNRESET, errno.EPIPE)  # a refused connect is ECONNREFUSED
_UNUSUAL = EPOLLRDHUP | EPOLLERR  # events that need more than read/write
_LINGER_RST = struct.pack("ii", 1, 0)
_SOL_SOCKET, _SO_LINGER, _SO_ERROR = socket.SOL_SOCKET, socket.SO_LINGER, socket.SO_ERROR
_NEW = socket.SocketType  # the C socket type: no Python-level __init__ per connection
_AGAIN = (BlockingIOError, InterruptedError)


def prime_allocator() -> None:
    """Make 256 KiB reads come from the heap. Each recv(HIGH_WATER) allocates HIGH_WATER bytes and shrinks them to
    what arrived; above glibc's mmap threshold (128 KiB at start) that is mmap + mremap + munmap per read, which a
    small read never raises. Freeing one larger mmapped block raises the threshold past it (glibc's dynamic
    M_MMAP_THRESHOLD); elsewhere this is a harmless allocation."""
    block = bytes(HIGH_WATER + 8192)
    del block


def errno_detail(prefix: str, err: int | None) -> str:
    if err is None:
        return prefix
    return f"{prefix}:{errno.errorcode.get(err, 'E?')}({err})"


class Context:
    """What a listener's connections share: routing, stats, log, the live connections, the epoll set."""

    __slots__ = ("active", "capture_ports", "choose", "connect_timeout", "direction", "log", "loop", "poller",
                 "redirect_mode", "resolver", "routes", "stats")

    def __init__(self, loop: asyncio.AbstractEventLoop, direction: str, resolver: Resolver,
                 choose: Callable[[Addr], Route], stats: st.Stats, log: AccessLog | None,
                 connect_timeout: float, capture_ports: frozenset[int], redirect_mode: bool,
                 poller: Poller | None = None) -> None:
        self.loop = loop
        self.poller = poller or Poller(loop)
        self.direction = direction
        self.resolver = resolver
        self.choose = choose
        self.stats = stats
        self.log = log
        self.connect_timeout = connect_timeout
        self.capture_ports = capture_ports
        self.redirect_mode = redirect_mode
        self.active: set[Connection] = set()
        self.routes: dict[Addr, Route] = {}  # choose() is a pure function of the original destination


class Side:
    """One socket of a connection: its epoll handler relays what it reads to the peer side."""

    __slots__ = ("backlog", "closed", "conn", "eof", "fd", "hup", "moved", "peer", "reading", "recv", "send", "shut",
                 "sock", "waiting")

    def __init__(self, conn: Connection, sock: socket.socket) -> None:
        self.conn: Connection = conn
        self.peer: Side = self  # the other side, set once the upstream socket exists
        self.sock = sock
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.send = sock.send
        self.moved = 0  # bytes read from this socket
        self.waiting = True  # the upstream connect is in progress: events go to the connection
        self.reading = True  # False: paused (peer backlog full), at EOF or closed
        self.eof = self.shut = self.closed = False
        self.hup = False  # its FIN is queued (EPOLLRDHUP): read on to EOF even after a short read
        self.backlog: bytearray | None = None  # bytes this side could not take yet

    # The two methods below run for every event of an established connection: kept flat (local names, rare
    # cases out of line), since Python steps are most of what the proxy adds to a request.

    def on_event(self, events: int) -> None:
        if (events & _UNUSUAL or self.waiting) and not self.conn.unusual(self, events):
            return
        if events & _READABLE and self.reading:
            self.pump()
        if self.backlog is not None and events & EPOLLOUT and not self.closed:
            self.drain()

    def pump(self) -> None:
        """Read until a short read (edge-triggered: the next arrival is a new event), EOF, or a full backlog."""
        recv = self.recv
        peer = self.peer
        reads = 0
        while True:
            try:
                data = recv(HIGH_WATER)
            except _AGAIN:
                return
            except OSError as e:
                return self.conn.reset_by(self, e.errno)
            n = len(data)
            if not n:
                return self.conn.at_eof(self)
            self.moved += n
            if peer.backlog is None:
                try:
                    sent = peer.send(data)
                except _AGAIN:
                    sent = 0
                except OSError as e:
                    return self.conn.reset_by(peer, e.errno)
                if sent != n:
                    self.keep(data, sent)
            else:
                self.queue(data)
            if (n < HIGH_WATER and not self.hup) or not self.reading:
                return
            reads += 1
            if reads == READS_PER_WAKEUP:  # maybe more: read on after the others had a turn
                self.conn.ctx.loop.call_soon(self.resume)
                return

    def keep(self, data: bytes, sent: int) -> None:
        """The peer took only part: the rest goes out on its next EPOLLOUT edge (a short send arms it)."""
        self.peer.backlog = bytearray(memoryview(data)[sent:])
        if len(data) - sent >= HIGH_WATER:  # flow control: read no more until the peer takes some
            self.reading = False

    def queue(self, data: bytes) -> None:
        """The peer is still draining: queue behind its backlog, in order."""
        backlog = self.peer.backlog
        assert backlog is not None
        backlog += data
        if len(backlog) >= HIGH_WATER:
            self.reading = False

    def resume(self) -> None:
        if self.reading:
            self.pump()

    def drain(self) -> None:
        """Send this side's backlog; let the peer read again once the backlog is small or gone."""
        data = self.backlog
        assert data is not None
        src = self.peer
        try:
            sent = self.send(data)
        except _AGAIN:
            return
        except OSError as e:
            return self.conn.reset_by(self, e.errno)
        if sent < len(data):
            del data[:sent]  # bytearray: cheap from the front
            if not src.reading and not src.eof and not src.closed and len(data) <= LOW_WATER:
                src.reading = True
                src.pump()  # edges seen while paused were ignored: read now
            return
        self.backlog = None
        if src.eof:
            self.conn.end_direction(src)
        elif not src.reading and not src.closed:
            src.reading = True
            src.pump()


class Connection:
    __slots__ = ("base", "client", "ctx", "d", "details", "flags", "idle_mark", "idle_since", "orig", "pub_rx",
                 "pub_tx", "route", "row", "start", "timer", "u", "up_local")

    def __init__(self, ctx: Context, sock: socket.socket, client: Addr) -> None:
        self.ctx = ctx
        self.d = Side(self, sock)
        self.u: Side | None = None
        self.client = client
        self.pub_rx = self.pub_tx = 0
        self.flags = self.details = "-"
        self.up_local: Addr | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_mark = -1
        self.idle_since = 0.0
        self.start = 0.0

    @property
    def rx(self) -> int:
        """Bytes received from the client."""
        return self.d.moved

    @property
    def tx(self) -> int:
        """Bytes received from the upstream."""
        return 0 if self.u is None else self.u.moved

    # --- accept -> route -> connect --------------------------------------------------------------------------

    def begin(self) -> None:
        ctx = self.ctx
        if ctx.log is not None:
            self.start = time.time()
        sock = self.d.sock
        try:
            sock.setblocking(False)  # TCP_NODELAY comes from the listener (worker.listen)
        except OSError as e:  # the client reset before we got here
            self.orig = ("0.0.0.0", 0)
            self.route = refused(ctx.direction, errno_detail("downstream_gone", e.errno))
            self.row, self.base = ctx.stats.row, ctx.stats.base(self.route.cluster)
            return self.fail("DC", self.route.refused or "-")
        self.route = self.resolve()
        route = self.route
        row = self.row = ctx.stats.row
        base = self.base = ctx.stats.base(route.cluster)
        row[base + st.CX_TOTAL] += 1
        if route.refused is not None:
            if route.refused.startswith("loop_detected"):
                row[base + st.LOOP] += 1
            return self.fail("NR", route.refused)
        row[base + st.CX_ACTIVE] += 1
        ctx.active.add(self)
        try:
            up, err = open_upstream(route, self.client[0])
        except OSError as e:
            return self.connect_failed(e.errno or errno.EIO)
        d = self.d
        u = self.u = Side(self, up)
        d.peer, u.peer = u, d
        if ctx.log is not None:  # the source port is chosen by connect() (IP_BIND_ADDRESS_NO_PORT): known now
            with contextlib.suppress(OSError):
                self.up_local = up.getsockname()
        poller = ctx.poller
        poller.add(d.fd, d.on_event)
        poller.add(u.fd, u.on_event)
        if err == 0:
            self.connected()
        elif err == errno.EINPROGRESS:
            self.timer = ctx.loop.call_later(ctx.connect_timeout, self.connect_timed_out)
        else:
            self.connect_failed(err)

    def resolve(self) -> Route:
        """Original destination, loop guard, route. The local address is only read when the guard needs it."""
        ctx = self.ctx
        sock = self.d.sock
        try:
            orig = self.orig = ctx.resolver(sock)
        except OSError as e:
            try:
                self.orig = sock.getsockname()
            except OSError:
                self.orig = ("0.0.0.0", 0)
            return refused(ctx.direction, errno_detail("no_original_destination", e.errno))
        local = orig
        if orig[1] in ctx.capture_ports:
            try:
                local = sock.getsockname()
            except OSError as e:
                return refused(ctx.direction, errno_detail("downstream_gone", e.errno))
        loop = loop_reason(ctx.direction, orig, self.client, local, ctx.capture_ports, ctx.redirect_mode)
        if loop is not None:
            print(f"netlab-proxy: {loop[1]}", file=sys.stderr, flush=True)
            return refused(ctx.direction, loop[0])
        routes = ctx.routes
        route = routes.get(orig)
        if route is None:
            if len(routes) >= ROUTE_CACHE:
                routes.clear()
            route = routes[orig] = ctx.choose(orig)
        return route

    def stop_waiting(self) -> None:
        """The upstream connect is over (either way): events go to the sides' own handlers from now on."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.d.waiting = False
        if self.u is not None:
            self.u.waiting = False

    def connect_timed_out(self) -> None:
        self.timer = None
        self.row[self.base + st.CONNECT_TIMEOUT] += 1
        self.connect_failed(errno.ETIMEDOUT)

    def connect_failed(self, err: int) -> None:
        self.row[self.base + st.CONNECT_FAIL] += 1
        self.up_local = None  # never connected: no upstream local address in the log
        self.count_unread()
        self.fail("UF", errno_detail("upstream_connect_error", err))

    def count_unread(self) -> None:
        """Client bytes that waited for a connect that failed still count as received (log, tx_bytes)."""
        d = self.d
        while not d.closed and d.moved < HIGH_WATER:
            try:
                n = len(d.recv(HIGH_WATER))
            except OSError:
                return
            if n == 0:
                return
            d.moved += n

    def connected(self) -> None:
        self.stop_waiting()
        self.d.pump()  # what the client sent (or its EOF) while we were connecting

    # --- rare events ------------------------------------------------------------------------------------------

    def unusual(self, side: Side, events: int) -> bool:
        """EPOLLRDHUP/EPOLLERR, or any event while connecting. True: the usual read/write handling follows."""
        if events & EPOLLRDHUP:
            side.hup = True
        if not side.waiting:
            return not (events & EPOLLERR and self.failed(side))
        if side is self.d:
            if events & EPOLLERR:
                self.failed(side)
            return False  # bytes and EOF wait in the kernel until connected() reads them
        if events & (EPOLLERR | EPOLLHUP):  # only then is SO_ERROR worth a syscall
            err = side.sock.getsockopt(_SOL_SOCKET, _SO_ERROR) or errno.ECONNREFUSED
            if err not in _RESET_AFTER_CONNECT:
                self.connect_failed(err)
                return False
            # Connected, then reset before we got to it: an upstream reset (UC), as if seen a bit later.
            self.stop_waiting()
            self.count_unread()
            self.reset_by(side, err)
            return False
        if not events & EPOLLOUT:
            return False
        self.connected()
        return True

    def failed(self, side: Side) -> bool:
        """EPOLLERR: a reset (or other socket error) ends the connection now, whatever is still queued."""
        err = side.sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
        if err:
            self.reset_by(side, err)
        return bool(err)

    def at_eof(self, src: Side) -> None:
        src.eof = True
        src.reading = False
        if src.peer.backlog is None:
            self.end_direction(src)

    def end_direction(self, src: Side) -> None:
        """src sent EOF and its peer has everything: pass the FIN on, or close both when the other way ended too."""
        if src.shut:
            self.close()
            return
        dst = src.peer
        dst.shut = True
        try:
            dst.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.reset_by(dst, e.errno)

    # --- endings ---------------------------------------------------------------------------------------------

    def reset_by(self, side: Side, err: int | None) -> None:
        """side failed (reset, broken pipe): reset the other one too, as Envoy does."""
        if self.flags != "-":
            return self.close()
        if side is self.d:
            self.flags, self.details = "DC", errno_detail("downstream_reset", err)
            self.row[self.base + st.DOWN_RESET] += 1
            self.close(reset_up=True)  # pass the client's reset on to the app
        else:
            self.flags, self.details = "UC", errno_detail("upstream_reset", err)
            self.row[self.base + st.UP_RESET] += 1
            self.close(reset_down=True)

    def fail(self, flags: str, details: str) -> None:
        """Reset the client (and an upstream, if any)."""
        self.flags = flags
        self.details = details
        self.close(reset_down=True, reset_up=True)

    def idle_close(self) -> None:
        self.details = "idle_timeout"
        self.close()

    def close(self, reset_down: bool = False, reset_up: bool = False) -> None:
        if self.d.closed:  # both sides are closed together: already done
            return
        self.stop_waiting()
        forget = self.ctx.poller.forget
        for side, rst in ((self.d, reset_down), (self.u, reset_up)):
            if side is None:
                continue
            side.closed = True
            side.reading = False
            forget(side.fd)  # close() takes it out of the epoll set
            if rst:
                with contextlib.suppress(OSError):
                    side.sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER_RST)
            side.sock.close()
        self.finish()

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
                          self.orig, self.client))

    def publish(self) -> None:
        """Add the bytes moved since the last call to the shared counters."""
        row, base = self.row, self.base
        rx, tx = self.rx, self.tx
        row[base + st.TX_BYTES] += rx - self.pub_rx
        row[base + st.RX_BYTES] += tx - self.pub_tx
        self.pub_rx, self.pub_tx = rx, tx


class Acceptor:
    """Accepts on a listening socket from the loop's reader callback: (fd, peer) straight from accept4."""

    __slots__ = ("ctx", "fd", "paused", "sock")

    BATCH = 64  # accepts per wake-up: bounded so a flood cannot starve established connections
    RETRY_DELAY = 1.0  # out of fds or memory: stop accepting for a while instead of spinning

    def __init__(self, ctx: Context, sock: socket.socket) -> None:
        self.ctx = ctx
        self.sock = sock
        self.fd = sock.fileno()
        self.paused = False
        ctx.loop.add_reader(self.fd, self.ready)

    def ready(self) -> None:
        ctx = self.ctx
        accept = self.sock._accept  # (fd, address) without building a Python-level socket object
        for _ in range(self.BATCH):
            try:
                fd, peer = accept()
            except _AGAIN:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    print(f"netlab-proxy: accept: {e}; pausing {self.RETRY_DELAY:g} s", file=sys.stderr, flush=True)
                    self.paused = True
                    ctx.loop.remove_reader(self.fd)
                    ctx.loop.call_later(self.RETRY_DELAY, self.resume)
                    return
                continue  # ECONNABORTED and the like: that one connection is gone
            Connection(ctx, _NEW(socket.AF_INET, socket.SOCK_STREAM, 0, fd), peer).begin()

    def resume(self) -> None:
        if self.paused and self.fd >= 0:
            self.paused = False
            self.ctx.loop.add_reader(self.fd, self.ready)

    def close(self) -> None:
        if self.fd >= 0:
            if not self.paused:
                self.ctx.loop.remove_reader(self.fd)
            self.fd = -1
