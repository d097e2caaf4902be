"""The forwarding core: a proxied connection is two transports (the client's, from the listener's server, and the
upstream's, on a socket connected here), each relaying what it reads straight into the other.

Why transports: a side's data_received is not a method but the peer transport's write, so under uvloop a read is
forwarded without running any Python. Measured with callgrind, one keep-alive request through the proxy costs 6.2k
user-space instructions this way, HAProxy 6.4k, with a Python data_received 8.8k, and a relay that reads and
writes raw sockets from Python at least 17.6k. The kernel counts the bytes (TCP_INFO), read when a connection
ends and once a second for the stats and the idle timeout.

A new connection costs 152k user-space instructions (HAProxy 28k), most of it the loop's work for two transports;
what is ours is kept lean: no Task, no timer for an upstream that answered at once, nothing left for the cycle
collector, no socket-object churn (199k before those).

- The upstream socket is made here (open_upstream: 127.0.0.6 or transparent bind, non-blocking connect) and given
  to the loop with create_connection(sock=) while the connect is in flight: writes queue until it completes, a
  failed connect surfaces as the transport's error (ECONNREFUSED, EHOSTUNREACH...), a timer covers silence (armed
  when the upstream transport is made and still not connected).
- Client bytes that arrive before the upstream transport exists are held in a list (uvloop starts reading right
  after connection_made; pausing there is undone); then the client side's data_received becomes the upstream's
  write, and set_protocol() makes uvloop (which caches the bound method) pick it up.
- Flow control: a transport holding over 256 KiB it could not send yet pauses reading on its peer (pause_writing
  → pause_reading), resumed below 64 KiB.
- Half-close: EOF on one side becomes write_eof() on the other (FIN after what is queued); when both directions
  have ended, both transports are closed.
- An upstream connect failure or reset resets the client (SO_LINGER 0 + abort: RST, "connection reset by peer");
  a client reset is passed on to the app the same way.
- Live connections stay in Context.active until both transports are lost. Besides the accounting, this keeps
  each transport referenced while a write_eof() is pending: uvloop 0.23 crashes ("double free or corruption") when
  such a transport is garbage-collected, as the shutdown request does not hold a reference to it.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import fcntl
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import cast

from netlab.mesh.types import AuthzPolicy
from netlab.proxy import stats as st
from netlab.proxy.accesslog import AccessLog, Entry
from netlab.proxy.http.headers import Edge
from netlab.proxy.http.session import HttpSession, session_for
from netlab.proxy.http.sniff import HTTP1, detect
from netlab.proxy.http.upstream import Pool
from netlab.proxy.lb import Host
from netlab.proxy.origdst import Addr, Resolver
from netlab.proxy.rbac import Attributes, decide
from netlab.proxy.routes import Route, TlsChain, loop_reason, refused
from netlab.proxy.secure import serve_tls
from netlab.proxy.stream import StreamRelay
from netlab.proxy.telemetry import Telemetry
from netlab.proxy.tls import Hello, Identity, client_hello, is_tls, upstream_tls
from netlab.proxy.upstream import open_upstream

HIGH_WATER = 256 * 1024  # unsent bytes per transport before its peer stops reading (low-water: a quarter)
ROUTE_CACHE = 4096  # original destinations remembered per listener (cleared when full)
_RESET_AFTER_CONNECT = (errno.ECONNRESET, errno.EPIPE)  # other upstream errors mean the connect failed
_LINGER_RST = struct.pack("ii", 1, 0)
# struct tcp_info up to tcpi_bytes_received: tcpi_state (offset 0), tcpi_bytes_acked (120), tcpi_bytes_received (128).
_TCP_INFO = struct.Struct("=B119xQQ")
_FIN_RECEIVED = frozenset((6, 8, 9, 11))  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING: tcpi_bytes_received counts it
_FIN_SENT = frozenset((4, 5, 6, 9, 11))  # FIN_WAIT1, FIN_WAIT2, TIME_WAIT, LAST_ACK, CLOSING: bytes_acked/outq do


def tcp_info(sock: socket.socket) -> tuple[int, int, int]:
    """(state, bytes acked, bytes received) as the kernel counts them (SYN and FIN included)."""
    return _TCP_INFO.unpack(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size))


def errno_detail(prefix: str, err: int | None) -> str:
    if err is None:
        return prefix
    return f"{prefix}:{errno.errorcode.get(err, 'E?')}({err})"


class Context:
    """What a listener's connections share: routing, stats, log, the live connections."""

    __slots__ = ("active", "authz", "capture_ports", "choose", "connect_timeout", "direction", "edge", "identity",
                 "libuv", "log", "loop", "pool", "redirect_mode", "resolver", "routes", "sessions", "stats",
                 "telemetry")

    def __init__(self, loop: asyncio.AbstractEventLoop, direction: str, resolver: Resolver,
                 choose: Callable[[Addr], Route], stats: st.Stats, log: AccessLog | None,
                 connect_timeout: float, capture_ports: frozenset[int], redirect_mode: bool,
                 telemetry: Telemetry, edge: Edge | None = None) -> None:
        self.loop = loop
        self.edge = edge  # a gateway's listeners: the HTTP connection manager uses the remote address (XFF)
        self.libuv = type(loop).__module__.startswith("uvloop")
        self.direction = direction
        self.resolver = resolver
        self.choose = choose
        self.stats = stats
        self.telemetry = telemetry  # replaced with the snapshot on a reload
        self.identity: Identity | None = None  # the workload certificate (mTLS), when the proxy has one
        self.authz: tuple[AuthzPolicy, ...] = ()  # the AuthorizationPolicies of this workload (inbound RBAC)
        self.log = log
        self.connect_timeout = connect_timeout
        self.capture_ports = capture_ports
        self.redirect_mode = redirect_mode
        self.active: set[Connection] = set()
        self.routes: dict[Addr, Route] = {}  # choose() is a pure function of the original destination
        self.sessions: set[HttpSession] = set()  # connections on the HTTP connection manager
        self.pool = Pool()  # their idle upstream connections

    def accept(self) -> Side:
        """The listener's protocol factory: a new connection's client side."""
        return Connection(self).d


class Side(asyncio.Protocol):
    """One end of a proxied connection: its transport's protocol. data_received (a slot, see the module docstring)
    is the peer transport's write once both exist."""

    __slots__ = ("conn", "data_received", "eof", "lost", "peer", "sock", "transport")

    def __init__(self, conn: Connection, data_received: Callable[[bytes], object],
                 sock: socket.socket | None = None) -> None:
        self.conn = conn
        # A socket object to ask the kernel about this side: the upstream's own; the client's, see connection_made.
        self.sock = cast(socket.socket, sock)
        self.peer: Side = self  # the other end, set once the upstream side exists
        self.transport: asyncio.Transport | None = None
        self.data_received = data_received  # type: ignore[misc]
        self.eof = self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = cast(asyncio.Transport, transport)  # uvloop's are not registered as subclasses
        tr.set_write_buffer_limits(HIGH_WATER)
        if self.sock is None:
            sock = tr.get_extra_info("socket")
            if self.conn.ctx.libuv:
                # uvloop's stand-in builds a socket object (and getsockname()s) on every call: one of ours, on the
                # same fd, detached when the side is lost (libuv closes the fd). The C type: socket.socket's
                # Python-level __init__ and detach() would double its cost.
                sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
            self.sock = cast(socket.socket, sock)
        conn = self.conn
        if self is conn.d:
            conn.begin()
        else:
            conn.upstream_made()

    def eof_received(self) -> bool:
        self.conn.at_eof(self)
        return True  # keep the transport: the other direction may still run; Connection closes it

    def pause_writing(self) -> None:
        self.conn.pause(self.peer)

    def resume_writing(self) -> None:
        self.conn.resume(self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost(self, exc)

    def connected(self) -> bool:
        try:
            self.sock.getpeername()
        except OSError:
            return False
        return True

    def received(self) -> int:
        """Data bytes the kernel received on this side. eof: the FIN was read (in state CLOSE, after LAST_ACK,
        only that tells it from an RST)."""
        if self.transport is None:
            return 0
        state, _, received = tcp_info(self.sock)
        return received - (self.eof or state in _FIN_RECEIVED)

    def written(self, active_open: bool) -> int:
        """Bytes written to the transport: acknowledged + still in the socket + still in the transport's buffer."""
        assert self.transport is not None
        sock = self.sock
        state, acked, _ = tcp_info(sock)
        outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        return acked + outq - active_open - (state in _FIN_SENT) + self.transport.get_write_buffer_size()


def quiet_relay_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The loop's exception handler. Under uvloop a read relayed into a transport that failed earlier in the same
    wake-up raises there; that connection is already being reset and logged by the relay: nothing to print."""
    protocol = context.get("protocol")
    if isinstance(protocol, Side) and isinstance(context.get("exception"), RuntimeError):
        peer = getattr(protocol, "peer", None)  # unset once the connection has finished
        if peer is None or (peer.transport is not None and peer.transport.is_closing()):
            return
    loop.default_exception_handler(context)


class Connection:
    __slots__ = ("base", "client", "closing", "counts", "ctx", "d", "details", "failure", "final", "flags", "held",
                 "held_size", "host", "idle_mark", "idle_since", "orig", "pub_rx", "pub_tx", "reset_up", "route",
                 "row", "sni", "sniffing", "start", "timer", "u", "up_local", "upstream")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.d = Side(self, self.hold)
        self.u: Side | None = None
        self.held: list[bytes] | None = []  # client bytes waiting for the upstream transport
        self.held_size = 0
        self.client: Addr = ("0.0.0.0", 0)
        self.orig: Addr = ("0.0.0.0", 0)
        self.pub_rx = self.pub_tx = 0
        self.counts = (0, 0)  # (from the client, from the upstream): the last measure()
        self.final = False  # counts are the final ones (settle())
        # Access-log fields: RESPONSE_FLAGS, CONNECTION_TERMINATION_DETAILS, UPSTREAM_TRANSPORT_FAILURE_REASON.
        self.flags = self.details = self.failure = self.sni = "-"
        self.up_local: Addr | None = None
        self.upstream: Addr | None = None  # the endpoint chosen (the original destination for passthrough)
        self.host: Host | None = None  # its load-balancer entry, whose open connections this one counts in
        self.timer: asyncio.TimerHandle | None = None
        self.closing = self.reset_up = False
        self.sniffing = False  # waiting for the first bytes to tell HTTP from TCP
        self.idle_mark = -1
        self.idle_since = 0.0
        self.start = 0.0

    @property
    def rx(self) -> int:
        """Bytes received from the client."""
        return self.counts[0]

    @property
    def tx(self) -> int:
        """Bytes received from the upstream."""
        return self.counts[1]

    def measure(self) -> None:
        """Ask the kernel for both byte counts (while both sockets are open). The client side's count includes bytes
        not read yet, such as those of a connection whose connect failed at once (as the raw relay counted them)."""
        if self.final:
            return
        u = self.u
        try:  # (not contextlib.suppress: this runs for every connection, and it costs three Python calls)
            counts = (self.d.received(), 0 if u is None else u.received())
        except OSError:  # a socket already gone: keep the last counts
            return
        self.counts = counts

    def settle(self, failed: Side | None = None) -> None:
        """Fix the byte counts before the sockets go. A failed side's socket is already closed: what it received
        is what was written to its peer."""
        if self.final:
            return
        if failed is None:
            self.measure()
        else:
            with contextlib.suppress(OSError):
                peer = failed.peer
                got = self.held_size if peer is failed or peer.transport is None else peer.written(peer is self.u)
                other = 0 if peer is failed else peer.received()
                self.counts = (got, other) if failed is self.d else (other, got)
        self.final = True

    # --- accept -> route -> connect --------------------------------------------------------------------------

    def begin(self) -> None:
        ctx = self.ctx
        if ctx.log is not None:
            self.start = time.time()
        route = self.route = self.resolve()
        if route.tls or (route.http is not None and route.sniff):
            self.sniffing = True  # hold() decides once the first bytes are in (tls_inspector, http_inspector)
            return
        if route.http is not None:
            return self.to_http()
        self.relay()

    def decide(self) -> None:
        """The first bytes pick the filter chain: a ClientHello one of the TLS chains, plaintext HTTP or TCP."""
        route = self.route
        data = b"".join(self.held or ())
        if route.tls:
            if data[:1] == b"\x16" and (len(data) < 2 or is_tls(data)):
                try:
                    hello = client_hello(data)
                except ValueError:
                    hello = Hello("", ())  # not a ClientHello Envoy can read: only a chain matching any TLS
                if hello is None:
                    return
                self.sniffing = False
                return self.to_tls(hello)
            if not route.plaintext:
                self.sniffing = False
                return self.no_filter_chain()
        if route.http is not None and route.sniff:
            found = detect(data)
            if found is None:
                return
            self.sniffing = False
            return self.to_http() if found == HTTP1 else self.relay()
        self.sniffing = False
        return self.to_http() if route.http is not None else self.relay()

    def to_tls(self, hello: Hello) -> None:
        """A TLS chain: terminate Istio's mTLS or a gateway's HTTPS (then HTTP or tcp_proxy), or relay the client's
        own TLS."""
        chain = TlsChain.pick(self.route.tls, hello.sni, hello.alpn)
        if chain is None or (chain.terminate and chain.context is None and self.ctx.identity is None):
            self.sni = hello.sni or "-"  # tls_inspector read it before the chain match: the log has it
            return self.no_filter_chain()
        if not chain.terminate:
            assert chain.route is not None
            self.route = chain.route
            return self.relay()
        d = self.d
        held = b"".join(self.held or ())
        self.held = None
        serve_tls(self.ctx, d.transport, d.sock, self.client, self.orig, self.start, chain, hello, held)  # type: ignore[arg-type]
        del d.conn, d.peer

    def no_filter_chain(self) -> None:
        """No chain takes these bytes (plaintext on a STRICT port): Envoy resets the connection and logs
        NR filter_chain_not_found, no cluster."""
        self.route = refused(self.ctx.direction, "filter_chain_not_found", "-")
        self.fail("NR", "-")

    def to_http(self) -> None:
        """The connection goes to the HTTP connection manager: a session takes over its transport."""
        d = self.d
        held = b"".join(self.held or ())
        self.held = None
        assert self.route.http is not None
        session_for(self.ctx, d.transport, d.sock, self.client, self.orig, self.route.http, held)  # type: ignore[arg-type]
        del d.conn, d.peer

    def relay(self) -> None:
        """Count the connection against its cluster, pick the upstream, connect."""
        ctx = self.ctx
        route = self.route
        row = self.row = ctx.stats.row
        base = self.base = ctx.stats.base(route.cluster)
        if route.refused == "downstream_gone":  # reset before we got to it: not counted, as Envoy
            return self.fail("DC", route.refused)
        row[base + st.CX_TOTAL] += 1
        if ctx.authz and ctx.direction == "inbound" and route.refused is None:  # the network RBAC filter
            denied = decide(ctx.authz, Attributes("", self.client[0], *self.orig))
            if denied is not None:
                self.route = refused(ctx.direction, denied, route.cluster, "-")
                return self.fail("-", denied)
        if route.refused is not None:
            if route.refused.startswith("loop_detected"):
                row[base + st.LOOP] += 1
            # Envoy's tcp_proxy logs no details with UH (no host to pick); netlab's own refusals name theirs.
            return self.fail(route.flags, "-" if route.flags == "UH" else route.refused)
        upstream, host = route.pick()
        if upstream is None:  # every endpoint gone
            self.route = refused(route.direction, "no_healthy_upstream", route.cluster, "UH")
            return self.fail("UH", "-")
        tls = upstream_tls(route.sni, route.origination, host.mtls, host.identity, ctx.identity, http=False) \
            if host is not None else None
        if tls is not None:  # TLS to the endpoint: the TLS-aware relay takes the connection
            d = self.d
            held = b"".join(self.held or ())
            self.held = None
            StreamRelay(ctx, route, self.client, self.orig, self.start or time.time(), d.transport, d.sock,
                        upstream, host, held=held, counted=True, upstream_tls=tls)
            del d.conn, d.peer
            return None
        self.upstream = upstream
        if host is not None:
            host.active += 1
            self.host = host
        row[base + st.CX_ACTIVE] += 1
        ctx.active.add(self)
        try:
            up, err = open_upstream(route, upstream, self.client[0])
        except OSError as e:
            return self.connect_failed(e.errno or errno.EIO)
        if err not in (0, errno.EINPROGRESS):
            up.close()
            return self.connect_failed(err)
        if ctx.log is not None:  # the source port is chosen by connect() (IP_BIND_ADDRESS_NO_PORT): known now
            with contextlib.suppress(OSError):
                self.up_local = up.getsockname()
        d = self.d
        assert d.transport is not None
        u = self.u = Side(self, d.transport.write, up)
        u.peer, d.peer = d, u
        self.attach(ctx.loop.create_connection(lambda: u, sock=up))

    def resolve(self) -> Route:
        """Client, original destination, loop guard, route. The local address is only read when the guard needs it."""
        ctx = self.ctx
        transport = self.d.transport
        assert transport is not None
        sock = self.d.sock
        client = transport.get_extra_info("peername")
        if client is None:
            return refused(ctx.direction, "downstream_gone")
        self.client = client
        try:
            orig = self.orig = ctx.resolver(sock)
        except OSError as e:
            with contextlib.suppress(OSError):
                self.orig = sock.getsockname()
            return refused(ctx.direction, errno_detail("no_original_destination", e.errno))
        local = orig
        if orig[1] in ctx.capture_ports:
            try:
                local = sock.getsockname()
            except OSError as e:
                return refused(ctx.direction, errno_detail("downstream_gone", e.errno))
        loop = loop_reason(ctx.direction, orig, client, local, ctx.capture_ports, ctx.redirect_mode)
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

    def attach(self, connecting: Coroutine[object, None, object], _done: object = None) -> None:
        """Run create_connection(sock=) to its end: it makes the upstream transport (whose connection_made comes
        next), waits for that, then ties our socket object to the transport. Stepped here on the future it waits
        for rather than by a Task: no Task object, no entry in the loop's task set, one scheduled step less."""
        try:
            waiting = connecting.send(None)
        except StopIteration:
            return
        except OSError as e:
            assert self.u is not None
            self.lost(self.u, e)
            return
        if waiting is None:  # a bare yield: go on in the next loop round
            self.ctx.loop.call_soon(self.attach, connecting)
        else:
            waiting.add_done_callback(partial(self.attach, connecting))

    def upstream_made(self) -> None:
        d, u = self.d, self.u
        assert u is not None and u.transport is not None and d.transport is not None
        if self.closing:  # the client went away (or the worker is stopping) first
            return self.end(u, self.reset_up)
        if self.held_size > HIGH_WATER and not d.eof:  # hold() paused the client; the upstream's own limit now
            d.transport.resume_reading()
        write = u.transport.write
        for data in self.held or ():
            write(data)
        self.held = None
        d.data_received = write  # type: ignore[misc]
        d.transport.set_protocol(d)  # uvloop keeps the bound data_received: refresh it
        if d.eof:
            u.transport.write_eof()
        if not u.connected():  # a local app has answered by now: a timer only for slower ones
            self.timer = self.ctx.loop.call_later(self.ctx.connect_timeout, self.check_connected)

    def hold(self, data: bytes) -> None:
        """Client bytes before the upstream transport exists (or before sniffing has decided)."""
        assert self.held is not None
        self.held.append(data)
        self.held_size += len(data)
        if self.sniffing:
            return self.decide()
        if self.held_size > HIGH_WATER:
            self.d.transport.pause_reading()  # type: ignore[union-attr]

    def check_connected(self) -> None:
        """The connect timeout: still no connection (SYN unanswered) resets the client."""
        self.timer = None
        u = self.u
        assert u is not None  # armed by upstream_made
        if self.closing or u.connected():
            return
        self.row[self.base + st.CONNECT_TIMEOUT] += 1
        self.connect_failed(errno.ETIMEDOUT)

    def connect_failed(self, err: int) -> None:
        """As tcp_proxy logs it: UF, and URX (its one connect attempt used up); the socket's error as Envoy words
        a transport failure ("delayed connect error: 111"), or our own connect timer's."""
        self.row[self.base + st.CONNECT_FAIL] += 1
        self.up_local = None  # never connected: no upstream local address in the log
        if err == errno.ETIMEDOUT:
            self.fail("UF,URX", "connect_timeout")
        else:
            self.failure = f"delayed_connect_error:_{err}"
            self.fail("UF,URX", "-")

    # --- flow control and half-close -------------------------------------------------------------------------

    def pause(self, src: Side) -> None:
        if src.transport is not None and not src.lost:
            src.transport.pause_reading()

    def resume(self, src: Side) -> None:
        if src.transport is not None and not src.lost and not src.eof:
            src.transport.resume_reading()

    def at_eof(self, src: Side) -> None:
        """src sent EOF: pass the FIN on, or close both when the other direction has ended too."""
        src.eof = True
        if self.sniffing:  # the client ended before saying anything HTTP: the TCP chain (http_inspector's end)
            self.sniffing = False
            return self.relay()
        dst = src.peer
        if dst is src or dst.transport is None:  # upstream not there yet: upstream_made passes it on
            return
        if dst.eof:
            self.close()
        else:
            dst.transport.write_eof()

    # --- endings ---------------------------------------------------------------------------------------------

    def lost(self, side: Side, exc: Exception | None) -> None:
        side.lost = True
        self.settle(side)
        if self.ctx.libuv:
            # libuv closed the fd itself: our socket objects must not close it again when collected, as the fd
            # number may be in use by then. (uvloop detaches the upstream's only when it closes the transport, and
            # when the connect fails fast it attaches the object after that.)
            side.sock.detach()
        if not self.closing:
            err = getattr(exc, "errno", None)
            if exc is None:
                self.close()
            elif side is self.u and self.tx == 0 and err not in _RESET_AFTER_CONNECT:
                self.connect_failed(err or errno.EIO)
            else:
                self.reset_by(side, err)
        u = self.u
        if self.d.lost and (u is None or u.lost):
            self.finish()

    def reset_by(self, side: Side, err: int | None) -> None:
        """side failed (reset, broken pipe): reset the other one too, as Envoy does."""
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
        if self.closing:
            return
        self.closing = True
        self.settle()
        self.reset_up = reset_up
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.end(self.d, reset_down)
        if self.u is not None:
            self.end(self.u, reset_up)

    @staticmethod
    def end(side: Side, reset: bool) -> None:
        transport = side.transport
        if transport is None or side.lost:
            return
        if reset:
            with contextlib.suppress(OSError):
                side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()
        else:
            transport.close()  # after what is queued, with a FIN

    def finish(self) -> None:
        """Both transports are gone: account and log once."""
        ctx = self.ctx
        if self.route.refused is None:
            if self not in ctx.active:
                return
            ctx.active.discard(self)
            self.row[self.base + st.CX_ACTIVE] -= 1
            if self.host is not None:
                self.host.active -= 1
            self.publish()
        route = self.route
        no_chain = route.refused == "filter_chain_not_found"
        if route.refused != "downstream_gone" and not no_chain:
            ctx.telemetry.tcp(ctx.direction == "outbound", route.cluster, self.upstream[0] if self.upstream else None,
                              self.flags, self.tx, self.rx)
        log = ctx.log
        if log is not None:
            if no_chain:  # no filter read anything: Envoy logs 0 bytes and the reason as the response details
                log.log(Entry(self.start, "-", self.orig, self.client, flags="NR",
                              response_code_details="filter_chain_not_found", requested_server_name=self.sni))
            else:
                log.log(Entry(self.start, self.route.cluster, self.orig, self.client, self.upstream, self.up_local,
                              self.flags, self.rx, self.tx, int((time.time() - self.start) * 1000), self.details,
                              self.failure))
        # Each side refers to the connection and to the other: unlinked, all of it is freed now rather than by the
        # cycle collector (7k instructions per connection).
        for side in (self.d, self.u):
            if side is not None:
                del side.conn, side.peer

    def publish(self) -> None:
        """Add the bytes moved since the last call to the shared counters."""
        row, base = self.row, self.base
        rx, tx = self.rx, self.tx
        row[base + st.TX_BYTES] += rx - self.pub_rx
        row[base + st.RX_BYTES] += tx - self.pub_tx
        self.pub_rx, self.pub_tx = rx, tx
