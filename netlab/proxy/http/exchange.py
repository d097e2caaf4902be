"""One request and its response through the sidecar: routing (a VirtualService's matches, weights, rewrites,
header changes, redirects), the fault filter's delay and abort, the upstream attempts (the route's retry policy and
per-try timeout, the cluster's circuit breakers and outlier detection), the route timeout, the mirror, local
replies with Envoy's bodies, response flags and details, and the request's access-log line.

Envoy's words are kept (source/common/router/router.cc, source/extensions/filters/http/fault,
envoy/stream_info/stream_info.h): a connect failure is a 503 "upstream connect error or disconnect/reset before
headers. reset reason: remote connection failure, transport failure reason: delayed connect error: 111" with flag UF
and details upstream_reset_before_response_started{remote_connection_failure,delayed_connect_error:_111}; URX is
added when the retry policy would have retried but has no attempt left; the route timeout is a 504 "upstream
request timeout" (UT, response_timeout); a fault abort "fault filter abort" (FI, fault_filter_abort), a fault delay
flags DI; a circuit breaker's overflow a 503 "... reset reason: overflow" (UO) with x-envoy-overloaded.
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from netlab.mesh.types import AuthzPolicy, Cluster, HeaderOps, RetryPolicy
from netlab.mesh.types import Route as HttpRoute
from netlab.proxy import stats as st
from netlab.proxy.accesslog import AccessLog, Entry
from netlab.proxy.http import headers as hd
from netlab.proxy.http.router import HttpRouter
from netlab.proxy.http.upstream import Pool, PoolKey, UpstreamHttp
from netlab.proxy.lb import Host
from netlab.proxy.origdst import Addr
from netlab.proxy.rbac import DENIED_BODY, Attributes, decide, principal_of
from netlab.proxy.routes import Route
from netlab.proxy.telemetry import PEER_HEADER, PEER_ID_HEADER, Security, Telemetry
from netlab.proxy.tls import Identity, TlsFailed, UpstreamTls, open_tls, upstream_tls
from netlab.proxy.upstream import upstream_socket

RETRY_BUFFER = 1024 * 1024  # request bytes kept for a retry (Envoy's per-connection buffer limit)
HOLD_LIMIT = 256 * 1024  # request bytes held while no upstream connection takes them, before the client is paused
BACKOFF_BASE, BACKOFF_MAX = 0.025, 0.25  # Envoy's default retry back-off: 25 ms, at most 10 times that
HOST_SELECTION_ATTEMPTS = 5  # Istio's host_selection_retry_max_attempts with the previous_hosts predicate
MIRROR_TIMEOUT = 10.0
_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. "


class HttpContext(Protocol):
    """What a listener's connections share (netlab.proxy.relay.Context), as far as HTTP uses it."""

    loop: asyncio.AbstractEventLoop
    direction: str
    stats: st.Stats
    log: AccessLog | None
    connect_timeout: float
    pool: Pool
    sessions: set[Any]
    libuv: bool
    telemetry: Telemetry
    identity: Identity | None
    authz: tuple[AuthzPolicy, ...]
    edge: hd.Edge | None


class Downstream(Protocol):
    """The client's connection an exchange answers on (netlab.proxy.http.session.HttpSession)."""

    ctx: HttpContext
    router: HttpRouter[Route]
    client: Addr
    orig: Addr
    outbound_side: bool
    server_name: bytes | None
    close_after_response: bool
    security: Security | None

    def write(self, data: bytes) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def closing_after(self, exchange: Exchange) -> bool: ...
    def exchange_done(self, exchange: Exchange) -> None: ...
    def tunnel(self, conn: UpstreamHttp, rest: bytes) -> None: ...


class Exchange:
    # Defaults, read from the class until an exchange sets its own: a request costs only the assignments it needs
    # (this runs on every request, before it goes upstream).
    response_head_bytes = 0
    # The peer's metadata: the client's on a request (inbound), the server's on its response (outbound).
    peer_metadata: bytes | None = None
    peer_id = False  # the client sent x-envoy-peer-metadata-id: it is answered with this proxy's
    original_path = b""  # before a rewrite (x-envoy-original-path)
    body_size = 0
    replayable = True  # the whole body is still at hand
    holding = False  # the client is paused while no upstream connection takes the body
    request_done = False
    request_done_at = 0.0
    routed = False  # past the fault filter: the router has the request (the route timeout may run)
    route: HttpRoute | None = None
    target: Route | None = None
    cluster_config: Cluster | None = None
    response_ops: list[HeaderOps] = []  # noqa: RUF012 - replaced, never changed in place
    mirror = ""  # the cluster a copy goes to once the request is complete
    cluster = "-"
    route_name = "-"
    count_attempts = False  # the virtual host's include_request_attempt_count
    attempt = 0
    waiting: PoolKey | None = None  # the endpoint whose connection this request waits for
    upstream: UpstreamHttp | None = None
    host: Host | None = None
    upstream_addr: Addr | None = None
    upstream_local: Addr | None = None
    status = 0
    responding = False  # the response head has gone to the client
    discarding = False  # a response being read only to be dropped (a retried 503)
    response_chunked = False  # re-chunked for the client (the upstream gave no content-length)
    close_delimited = False  # the upstream's response ends with its connection
    service_time: int | None = None
    sent = 0  # response body bytes to the client
    details = "-"
    failure = "-"  # UPSTREAM_TRANSPORT_FAILURE_REASON
    upstream_security: Security | None = None  # the mTLS of the upstream connection used
    timer: asyncio.TimerHandle | None = None  # the route timeout
    try_timer: asyncio.TimerHandle | None = None  # the per-try timeout
    pending: asyncio.Future[object] | asyncio.TimerHandle | None = None  # a connect, delay or back-off
    done = False
    # Set by the session from the request head:
    keep_alive = True  # the client keeps the connection after this response
    expect_continue = False  # "Expect: 100-continue", answered by the proxy
    reject: tuple[int, str] | None = None  # (status, details) of a request refused as it stands

    def __init__(self, session: Downstream, method: bytes, path: bytes, headers: hd.Headers, chunked: bool,
                 content_length: bool, upgrade: bytes | None) -> None:
        self.session = session
        self.start = time.time()
        self.method = method
        self.path = path
        # istio_request_bytes counts the request as received: its head (as HTTP/1.1 spells it) and body.
        head_bytes = len(method) + len(path) + 13
        authority: bytes | None = None
        inbound = not session.outbound_side
        for name, value in headers:
            head_bytes += len(name) + len(value) + 4
            if name == b"host":
                if authority is None:
                    authority = value
            elif inbound and name == PEER_HEADER:
                self.peer_metadata = value
            elif inbound and name == PEER_ID_HEADER:
                self.peer_id = True
        self.head_bytes = head_bytes
        self.authority = authority.decode("latin-1") if authority else ""
        edge = session.ctx.edge
        if edge is not None:
            self.headers, self.request_id = hd.edge_request_additions(headers, session.client[0],
                                                                      edge.private_is_internal,
                                                                      session.security is not None)
        else:
            self.headers, self.request_id = hd.request_additions(headers)
        self.framing = b"chunked" if chunked else b"content-length" if content_length else None
        self.upgrade = upgrade
        self.body: list[bytes] = []  # request body kept for the upstream (until attached) and for retries
        self.tried: list[Addr] = []
        self.flags: list[str] = []

    # --- routing, the fault filter ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Route the request (the route is resolved first, as the connection manager does, so a denial is logged
        with its cluster), authorize it (inbound RBAC); the fault filter may delay or abort it."""
        session = self.session
        match = session.router.match(self.authority, self.path.decode("latin-1"), self.method.decode("latin-1"),
                                     self.headers, "http" if session.security is None else "https")
        if match is not None:
            self.cluster, self.route_name = match.route.cluster or "-", match.route.name or "-"
        if session.ctx.authz and not session.outbound_side:
            denied = self.authorize()
            if denied is not None:  # no response flag: the details say it
                return self.local_reply(403, DENIED_BODY, "", denied)
        host = match.host if match is not None else session.router.virtual_host(self.authority)
        if host is not None and host.require_tls and session.security is None:  # before any route, as Envoy
            return self.https_redirect()
        if match is None:
            return self.local_reply(404, "", "NR", "route_not_found")
        self.route = route = match.route
        self.count_attempts = match.host.include_request_attempt_count
        if route.direct_response:
            return self.local_reply(route.direct_response, "", "", "direct_response")
        if route.redirect is not None:
            return self.redirect()
        fault = route.fault
        if fault is not None and fault.delay and _chance(fault.delay_percent):
            self.flags.append("DI")
            self.pending = self.session.ctx.loop.call_later(fault.delay, self.route_request)
            return None
        return self.route_request()

    def authorize(self) -> str | None:
        """The RBAC filter's answer: None to go on, else the denial's details."""
        session = self.session
        security = session.security
        return decide(session.ctx.authz, Attributes(
            principal_of(security.peer) if security is not None else "", session.client[0], *session.orig,
            sni=security.sni if security is not None else "", method=self.method.decode("latin-1"),
            path=self.path.decode("latin-1"), host=self.authority,
            headers={n.decode("latin-1"): v.decode("latin-1") for n, v in self.headers}))

    def route_request(self) -> None:
        """After the fault filter: an abort, else the destination, the header changes, the first attempt."""
        self.pending = None
        route = self.route
        assert route is not None
        fault = route.fault
        if fault is not None and fault.abort_status and _chance(fault.abort_percent):
            return self.local_reply(fault.abort_status, "fault filter abort", "FI", "fault_filter_abort")
        cluster = route.cluster
        request_ops: list[HeaderOps | None] = [route.request_headers]
        self.response_ops = [ops for ops in (route.response_headers,) if ops is not None]
        if route.weighted:
            chosen = _weighted(route)
            cluster = chosen.name
            request_ops.insert(0, chosen.request_headers)
            if chosen.response_headers is not None:
                self.response_ops.insert(0, chosen.response_headers)
        for ops in request_ops:
            if ops is not None:
                apply_ops(self.headers, ops)
        self.rewrite(route)
        session = self.session
        target = session.router.resolve(cluster, session.orig)
        self.cluster = target.cluster
        if target.refused is not None:
            if target.flags == "UH":
                return self.local_reply(503, "no healthy upstream", "UH", "no_healthy_upstream")
            self.cluster = "-"
            return self.local_reply(503, "", target.flags, "cluster_not_found")
        self.target = target
        self.cluster_config = session.router.cluster(target.cluster)
        self.replayable = route.retry is not None
        if route.mirror_cluster and _chance(route.mirror_percent):
            self.mirror = route.mirror_cluster
        self.routed = True
        if self.request_done:
            self.arm_route_timeout()
        self.attempt_upstream()

    def rewrite(self, route: HttpRoute) -> None:
        """rewrite.uri (the matched prefix, or the whole path, replaced) and rewrite.authority."""
        if route.prefix_rewrite is not None:
            path = self.path.decode("latin-1")
            matcher = route.match.path
            if matcher.kind == "prefix":
                rest = path[len(matcher.value):]
            else:
                rest = "?" + path.split("?", 1)[1] if "?" in path else ""
            self.original_path = self.path
            self.path = (route.prefix_rewrite + rest).encode("latin-1")
            self.headers.append((b"x-envoy-original-path", self.original_path))
        if route.host_rewrite:
            self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"]
            self.headers.insert(0, (b"host", route.host_rewrite.encode("latin-1")))

    def redirect(self) -> None:
        """A VirtualService redirect: Envoy answers with the code and a Location, without an upstream."""
        route = self.route
        assert route is not None and route.redirect is not None
        r = route.redirect
        host = r.authority or self.authority
        if r.port:
            host = f"{host.rsplit(':', 1)[0]}:{r.port}"
        # Without a scheme of its own, the request's: x-forwarded-proto (Envoy's RouteEntryImplBase::newUri).
        scheme = r.scheme or next((v.decode("latin-1") for n, v in self.headers if n == b"x-forwarded-proto"), "http")
        location = f"{scheme}://{host}{r.path or self.path.decode('latin-1')}"
        # A redirect is a direct response entry: details direct_response (envoy source/common/router/router.cc).
        self.local_reply(r.code, "", "", "direct_response", extra=[(b"location", location.encode("latin-1"))])

    def https_redirect(self) -> None:
        """A virtual host with require_tls ALL (a Gateway server's tls.httpsRedirect) answers a plaintext request
        with 301 to the same authority and path over https (Envoy's SslRedirector); no route took it."""
        self.cluster = self.route_name = "-"
        location = f"https://{self.authority}{self.path.decode('latin-1')}"
        self.local_reply(301, "", "", "direct_response", extra=[(b"location", location.encode("latin-1"))])

    # --- from the downstream session ---------------------------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        """Body bytes go upstream at once when a connection is attached; they are kept until then, and while a
        retry may need them (up to RETRY_BUFFER)."""
        if self.done:
            return
        self.body_size += len(data)
        up = self.upstream
        attached = up is not None and up.exchange is self and not self.discarding
        if attached:
            up.write(hd.chunk(data) if self.framing == b"chunked" else data)  # type: ignore[union-attr]
        if self.replayable and self.body_size > RETRY_BUFFER:
            self.replayable = False
            if attached:
                self.body.clear()
        if not attached or self.replayable:
            self.body.append(data)
            if not attached and self.body_size > HOLD_LIMIT and not self.holding:
                self.holding = True
                self.session.pause_reading()  # until an upstream takes it

    def request_complete(self) -> None:
        self.request_done = True
        self.request_done_at = time.monotonic()
        up = self.upstream
        if up is not None and up.exchange is self and self.framing == b"chunked":
            up.write(hd.LAST_CHUNK)
        if self.routed and not self.done:
            self.arm_route_timeout()
            if up is not None and up.exchange is self:
                self.arm_try_timeout()

    def pause_request(self) -> None:  # the upstream reads slowly: stop reading the client
        self.session.pause_reading()

    def resume_request(self) -> None:
        self.session.resume_reading()

    def downstream_lost(self) -> None:
        """The client went away before the response ended."""
        if self.done:
            return
        self.flags.append("DC")
        self.details = "downstream_remote_disconnect"
        if self.upstream is not None:
            self.upstream.close(abort=True)
        self.finish()

    # --- attempts ----------------------------------------------------------------------------------------------

    def attempt_upstream(self) -> None:
        self.pending = None
        target = self.target
        assert target is not None
        self.attempt += 1
        upstream, host = self.pick(target)
        if upstream is None:
            return self.local_reply(503, "no healthy upstream", "UH", "no_healthy_upstream")
        if self.host is not None:
            self.host.active -= 1
        self.host, self.upstream_addr = host, upstream
        if host is not None:
            host.active += 1
        self.tried.append(upstream)
        ctx = self.session.ctx
        ctx.stats.row[ctx.stats.base(target.cluster) + st.RQ_TOTAL] += 1
        source = self.session.client[0] if target.transparent else target.bind_ip or ""
        key: PoolKey = (target.cluster, upstream, source)
        conn = ctx.pool.take(key)
        if conn is not None:
            return self.attach(conn)
        config = self.cluster_config
        if config is not None and config.max_connections and ctx.pool.open.get(target.cluster, 0) >= \
                config.max_connections:
            if config.max_pending_requests and ctx.pool.pending(target.cluster) >= config.max_pending_requests:
                ctx.stats.row[ctx.stats.base(target.cluster) + st.RQ_OVERFLOW] += 1
                return self.reset_reply("UO", "overflow", "overflow", extra=[(b"x-envoy-overloaded", b"true")])
            self.waiting = key
            ctx.pool.wait(key, self)
            return None
        self.open_connection(key)

    def open_connection(self, key: PoolKey) -> None:
        ctx = self.session.ctx
        ctx.pool.opening(key[0])
        self.pending = ctx.loop.create_task(self.connect(key))

    def connection_freed(self, conn: UpstreamHttp | None) -> None:
        """The pool's answer to a waiting request: a connection to use, or room to open one."""
        key, self.waiting = self.waiting, None
        if self.done or key is None:
            if conn is not None:
                self.session.ctx.pool.give(conn)
            return
        if conn is not None:
            self.attach(conn)
        else:
            self.open_connection(key)

    def pick(self, target: Route) -> tuple[Addr | None, Host | None]:
        """An endpoint; by the request's hash key on a RING_HASH cluster; on a retry, one not tried before if the
        policy asks for it (previous_hosts)."""
        lb = target.lb
        key = None
        if lb is not None:
            if lb.outlier is not None:
                lb.unexpire()
            config = self.cluster_config
            if config is not None and config.hash_on:
                key = self.hash_key(config.hash_on)
        addr, host = target.pick(key)
        retry = self.route.retry if self.route else None
        if addr is None or not self.tried or retry is None or not retry.previous_hosts or key is not None:
            return addr, host
        for _ in range(HOST_SELECTION_ATTEMPTS - 1):
            if addr not in self.tried:
                break
            addr, host = target.pick()
        return addr, host

    def hash_key(self, hash_on: str) -> str | None:
        kind, _, name = hash_on.partition(":")
        if kind == "source_ip":
            return self.session.client[0]
        if kind == "header":
            return next((v.decode("latin-1") for n, v in self.headers if n == name.encode("latin-1")), None)
        values = parse_qs(urlsplit(self.path.decode("latin-1")).query).get(name)
        return values[0] if values else None

    async def connect(self, key: PoolKey) -> None:
        ctx = self.session.ctx
        target = self.target
        assert target is not None
        row, base = ctx.stats.row, ctx.stats.base(target.cluster)
        row[base + st.CX_TOTAL] += 1
        timeout = self.cluster_config.connect_timeout if self.cluster_config else ctx.connect_timeout
        try:
            sock = upstream_socket(target, self.session.client[0])
        except OSError as e:
            row[base + st.CONNECT_FAIL] += 1
            ctx.pool.closed(key)
            return self.connect_failed(e.errno or errno.EIO)
        host = self.host
        tls = upstream_tls(target.sni, target.origination, host.mtls, host.identity, ctx.identity, http=True) \
            if host is not None else None
        try:
            await asyncio.wait_for(ctx.loop.sock_connect(sock, key[1]), timeout)
            local = sock.getsockname()
            if tls is not None:
                conn = await self.connect_tls(sock, key, local, tls, timeout)
                if conn is None:
                    return None
            else:
                _, conn = await ctx.loop.create_connection(
                    lambda: UpstreamHttp(ctx.pool, key, row, base, local), sock=sock)
        except asyncio.CancelledError:
            sock.close()
            ctx.pool.closed(key)
            raise
        except Exception as e:  # OSError, TimeoutError; anything else must not strand the request either
            sock.close()
            row[base + st.CONNECT_FAIL] += 1
            ctx.pool.closed(key)
            if isinstance(e, TimeoutError):
                row[base + st.CONNECT_TIMEOUT] += 1
                return self.connect_failed(errno.ETIMEDOUT)
            return self.connect_failed(getattr(e, "errno", None) or errno.EIO)
        self.pending = None
        if self.done:
            ctx.pool.give(conn)
        else:
            self.attach(conn)

    async def connect_tls(self, sock: Any, key: PoolKey, local: Addr, tls: UpstreamTls,
                          timeout: float) -> UpstreamHttp | None:
        """The TLS handshake on a connected socket. None when it fails: the attempt ends with UF and Envoy's
        TLS_error reason."""
        ctx = self.session.ctx
        target = self.target
        assert target is not None
        try:
            stream = await open_tls(ctx.loop, sock, tls, timeout)
        except TlsFailed as failed:
            ctx.stats.row[ctx.stats.base(target.cluster) + st.CONNECT_FAIL] += 1
            ctx.pool.closed(key)
            self.connect_failed(errno.ECONNRESET, failed.args[0])
            return None
        conn = UpstreamHttp(ctx.pool, key, ctx.stats.row, ctx.stats.base(target.cluster), local)
        if tls.local:
            conn.security = Security("", stream.peer, tls.local)
        stream.start(conn)
        return conn

    def attach(self, conn: UpstreamHttp) -> None:
        """Send the request on this connection: its head, and what of the body has arrived."""
        self.upstream = conn
        self.upstream_local = conn.local
        self.upstream_security = conn.security
        conn.exchange = self
        if self.method == b"HEAD" or self.upgrade is not None:
            conn.reusable = False  # the parser cannot be told to skip a HEAD response's body
        route = self.route
        framing = self.framing
        outbound = self.session.outbound_side
        head = hd.upstream_request(self.method, self.path, self.headers, outbound,
                                   self.attempt if self.count_attempts else None, framing, self.upgrade,
                                   route.decorator if route and outbound else "",
                                   self.session.ctx.telemetry.headers if outbound else None,
                                   self.session.ctx.edge is not None)
        chunked = framing == b"chunked"
        parts = [head, *(hd.chunk(b) if chunked else b for b in self.body)]
        if self.request_done and chunked:
            parts.append(hd.LAST_CHUNK)
        conn.write(b"".join(parts))
        if not self.replayable:
            self.body.clear()
        if self.holding:
            self.holding = False
            self.session.resume_reading()
        if self.request_done:
            self.arm_try_timeout()
            if self.mirror:
                self.send_mirror()

    def arm_route_timeout(self) -> None:
        route = self.route
        if route is not None and route.timeout and self.timer is None:
            self.timer = self.session.ctx.loop.call_later(route.timeout, self.route_timeout)

    def arm_try_timeout(self) -> None:
        retry = self.route.retry if self.route else None
        if retry is not None and retry.per_try_timeout and self.try_timer is None:
            self.try_timer = self.session.ctx.loop.call_later(retry.per_try_timeout, self.try_timeout)

    def end_attempt(self, status: int) -> None:
        """An attempt's outcome: outlier detection learns it; its per-try timer stops."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        target = self.target
        if target is not None and target.lb is not None and self.host is not None:
            target.lb.report(self.host, status)

    def retry_or(self, condition: str, fail: Callable[[], None]) -> None:
        """Retry when the route's policy covers `condition` and has attempts left (after Envoy's jittered back-off),
        else `fail()`; URX joins the flags when only the attempt limit stopped it."""
        retry = self.route.retry if self.route else None
        if retry is not None and self.replayable and not self.responding and covers(retry.retry_on, condition):
            if self.attempt <= retry.num_retries:
                return self.schedule_retry()
            self.flags.append("URX")
        fail()

    def schedule_retry(self) -> None:
        target = self.target
        assert target is not None
        ctx = self.session.ctx
        ctx.stats.row[ctx.stats.base(target.cluster) + st.RQ_RETRY] += 1
        self.upstream = None
        ceiling = min(BACKOFF_BASE * (2 ** self.attempt - 1), BACKOFF_MAX)
        self.pending = ctx.loop.call_later(random.uniform(0, ceiling), self.attempt_upstream)

    def connect_failed(self, err: int, tls_error: str = "") -> None:
        self.pending = None
        if self.done:
            return
        self.end_attempt(503)
        if tls_error:
            self.failure = tls_error
            reason = f"remote connection failure, transport failure reason: {tls_error}"
            details = f"remote_connection_failure,{tls_error}"
        elif err == errno.ETIMEDOUT:
            reason, details = "connection timeout", "connection_timeout"
        else:
            self.failure = f"delayed_connect_error:_{err}"
            reason = f"remote connection failure, transport failure reason: delayed connect error: {err}"
            details = f"remote_connection_failure,delayed_connect_error:_{err}"
        self.retry_or("connect-failure", lambda: self.reset_reply("UF", reason, details))

    def upstream_lost(self, conn: UpstreamHttp, exc: Exception | None) -> None:
        """The upstream connection closed or was reset while this exchange used it."""
        if self.done or conn is not self.upstream:
            return
        self.upstream = None
        if self.discarding:  # the dropped response's connection ended: retry as decided
            self.discarding = False
            return self.schedule_retry()
        if self.responding:
            if self.close_delimited and exc is None:
                return self.response_finished()  # a response delimited by the connection's end
            self.flags.append("UC")
            self.details = "upstream_reset_after_response_started{connection_termination}"
            self.session.abort()
            return self.finish()
        self.end_attempt(503)
        condition = "reset-before-request" if not conn.sent_any else "reset"
        self.retry_or(condition, lambda: self.reset_reply("UC", "connection termination", "connection_termination"))

    def upstream_protocol_error(self, conn: UpstreamHttp, error: Exception) -> None:
        if self.done or conn is not self.upstream:
            return
        conn.close(abort=True)
        self.upstream = None
        self.end_attempt(502)
        if self.responding:
            self.flags.append("UPE")
            self.details = "upstream_reset_after_response_started{protocol_error}"
            self.session.abort()
            return self.finish()
        self.reset_reply("UPE", "protocol error", "protocol_error", status=502)

    def try_timeout(self) -> None:
        """The per-try timeout: the attempt is given up; another may follow."""
        self.try_timer = None
        if self.done or self.responding:
            return
        if self.upstream is not None:
            self.upstream.exchange = None
            self.upstream.close(abort=True)
            self.upstream = None
        self.discarding = False
        self.end_attempt(504)
        target = self.target
        if target is not None:
            ctx = self.session.ctx
            ctx.stats.row[ctx.stats.base(target.cluster) + st.RQ_TIMEOUT] += 1
        self.retry_or("per-try-timeout", lambda: self.local_reply(504, "upstream request timeout", "UT",
                                                                  "upstream_per_try_timeout"))

    def route_timeout(self) -> None:
        self.timer = None
        if self.done:
            return
        target = self.target
        if target is not None:
            ctx = self.session.ctx
            ctx.stats.row[ctx.stats.base(target.cluster) + st.RQ_TIMEOUT] += 1
        self.cancel_pending()
        if self.upstream is not None:
            self.upstream.exchange = None
            self.upstream.close(abort=True)
            self.upstream = None
        if self.responding:  # the stream is reset mid-response
            self.flags.append("UT")
            self.details = "response_timeout"
            self.session.abort()
            return self.finish()
        self.local_reply(504, "upstream request timeout", "UT", "response_timeout")

    # --- the response ------------------------------------------------------------------------------------------

    def response_head(self, conn: UpstreamHttp, status: int, headers: hd.Headers) -> None:
        if self.done or conn is not self.upstream:
            return
        if not self.request_done:
            conn.reusable = False  # answered before the whole request went out: the connection is not reused
        self.end_attempt(status)
        retry = self.route.retry if self.route else None
        if retry is not None and self.replayable and retries_status(retry, status):
            if self.attempt <= retry.num_retries:
                self.discarding = True  # read it to its end, then retry (response_done, or its connection's end)
                return
            self.flags.append("URX")
        self.status = status
        self.responding = True
        self.details = "via_upstream"
        if self.request_done:
            self.service_time = int((time.monotonic() - self.request_done_at) * 1000)
        bodiless = self.method == b"HEAD" or status in (204, 304) or status < 200
        length = chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        self.close_delimited = not bodiless and not length and not chunked and status != 101
        self.response_chunked = not bodiless and not length and status != 101
        upgrade = self.upgrade if status == 101 else None
        for ops in self.response_ops:
            apply_ops(headers, ops)
        outbound = self.session.outbound_side
        if outbound:
            self.peer_metadata = next((v for n, v in headers if n == PEER_HEADER), None)
        head = hd.response_head(status, headers, outbound, self.service_time, self.response_chunked,
                                self.session.closing_after(self), upgrade, self.metadata_reply(),
                                self.session.server_name)
        self.response_head_bytes = len(head)
        self.session.write(head)
        if self.method == b"HEAD":
            conn.exchange = None
            conn.close()
            self.upstream = None
            self.response_finished()

    def response_body(self, data: bytes) -> None:
        if self.done or self.discarding or not self.responding:
            return
        self.sent += len(data)
        self.session.write(hd.chunk(data) if self.response_chunked else data)

    def response_done(self, conn: UpstreamHttp) -> None:
        if self.done or conn is not self.upstream:
            return
        self.upstream = None
        config = self.cluster_config
        self.session.ctx.pool.give(conn, config.max_requests_per_connection if config else 0)
        if self.discarding:
            self.discarding = False
            return self.schedule_retry()
        self.response_finished()

    def upgraded(self, conn: UpstreamHttp, rest: bytes) -> None:
        """The upstream switched protocols (a websocket's 101): from now on both connections are relayed as bytes."""
        if self.done or conn is not self.upstream or self.status != 101:
            conn.close(abort=True)
            return
        self.session.tunnel(conn, rest)

    def response_finished(self) -> None:
        if self.response_chunked:
            self.session.write(hd.LAST_CHUNK)
        self.finish()

    # --- the mirror ----------------------------------------------------------------------------------------------

    def send_mirror(self) -> None:
        """A copy of the request to the mirror cluster, its Host with "-shadow" added; the answer is dropped."""
        name, self.mirror = self.mirror, ""
        target = self.session.router.resolve(name, self.session.orig)
        addr, _host = target.pick()
        if addr is None or not self.replayable:
            return
        authority = self.authority.rsplit(":", 1)
        shadow = authority[0] + "-shadow" + (f":{authority[1]}" if len(authority) > 1 else "")
        headers = [(n, v) for n, v in self.headers if n != b"host"]
        headers.insert(0, (b"host", shadow.encode("latin-1")))
        body = b"".join(self.body)
        framing = b"content-length" if body else None
        if body:
            headers = [(n, v) for n, v in headers if n != b"content-length"] + [
                (b"content-length", str(len(body)).encode())]
        head = hd.upstream_request(self.method, self.path, headers, self.session.outbound_side,
                                   1 if self.count_attempts else None, framing, None, "")
        self.session.ctx.loop.create_task(_shadow(target, addr, self.session.client[0], head + body))

    # --- endings -----------------------------------------------------------------------------------------------

    def reset_reply(self, flag: str, reason: str, details: str, status: int = 503,
                    extra: hd.Headers | None = None) -> None:
        retried = "retried and the latest " if self.attempt > 1 else ""
        self.local_reply(status, f"{_BEFORE_HEADERS}{retried}reset reason: {reason}", flag,
                         f"upstream_reset_before_response_started{{{details}}}", extra)

    def local_reply(self, status: int, body: str, flag: str, details: str, extra: hd.Headers | None = None) -> None:
        """A response made here. The connection is closed after it when the request has not been read whole."""
        if self.done:
            return
        self.cancel_pending()
        if flag:
            self.flags.append(flag)
        self.details = details
        self.status = status
        self.responding = True
        session = self.session
        if not self.request_done:
            session.close_after_response = True
        data = hd.local_reply(status, body, session.outbound_side, session.closing_after(self),
                              head_only=self.method == b"HEAD", extra=[*(extra or ()), *self.metadata_reply()],
                              server=session.server_name)
        self.sent = len(body.encode()) if self.method != b"HEAD" else 0
        self.response_head_bytes = len(data) - self.sent
        session.write(data)
        self.finish()

    def cancel_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        if self.waiting is not None:
            self.session.ctx.pool.cancel(self.waiting, self)
            self.waiting = None

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.session.uncork()  # the response goes out first: its metrics and log line are not on the client's path
        for timer in (self.timer, self.try_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.try_timer = None
        self.cancel_pending()
        if self.host is not None:
            self.host.active -= 1
            self.host = None
        self.flags.sort(key=FLAG_ORDER.index)
        duration = int((time.time() - self.start) * 1000)
        flags = ",".join(self.flags) or "-"
        self.report(duration, flags)
        self.log(duration, flags)
        self.session.exchange_done(self)

    def metadata_reply(self) -> hd.Headers:
        """The inbound side answers a meshed client's request with its own metadata."""
        return self.session.ctx.telemetry.headers if self.peer_id else []

    def report(self, duration: int, flags: str) -> None:
        """Istio's request metrics: istio_requests_total and the duration and size histograms."""
        ctx = self.session.ctx
        telemetry = ctx.telemetry
        outbound = self.session.outbound_side
        upstream = self.upstream_addr[0] if outbound and self.upstream_addr else None
        peer = telemetry.peer(self.peer_metadata, self.cluster, upstream)
        telemetry.http(outbound, peer, self.cluster, self.route_name, self.authority, self.status, flags, duration,
                       self.head_bytes + self.body_size, self.response_head_bytes + self.sent,
                       self.upstream_security if outbound else self.session.security)

    def log(self, duration: int, flags: str) -> None:
        log = self.session.ctx.log
        if log is None:
            return
        session = self.session
        forwarded = agent = None
        for name, value in self.headers:
            if name == b"x-forwarded-for":
                forwarded = value
            elif name == b"user-agent":
                agent = value
        sni = session.security.sni if session.security is not None and session.security.sni else "-"
        remote = session.client
        if forwarded and session.ctx.edge is None:
            # use_remote_address false: the downstream address is x-forwarded-for's last one, without a port
            # (a sidecar behind a gateway logs the client as CLIENT_IP:0).
            last = forwarded.rsplit(b",", 1)[-1].strip().decode("latin-1")
            remote = (last, 0) if last.count(".") == 3 else remote
        log.log(Entry(
            self.start, self.cluster, session.orig, remote, self.upstream_addr, self.upstream_local,
            flags, self.body_size, self.sent, duration, "-",
            self.failure, self.method.decode("latin-1"), (self.original_path or self.path).decode("latin-1"),
            "HTTP/1.1", self.status, self.details, self.service_time,
            _text(forwarded), _text(agent),
            self.request_id.decode("latin-1"), self.authority or "-", sni, self.route_name,
        ))


# The order Envoy prints response flags in (its flag table, stream_info.h).
FLAG_ORDER = ["LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX",
              "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR"]


def covers(retry_on: str, condition: str) -> bool:
    """Whether Envoy's retry_on list retries on `condition`: a connect failure, a reset before the request went out
    (reset-before-request), another reset (reset), a per-try timeout, or a retriable status code. 5xx and
    gateway-error also cover connect failures, resets and per-try timeouts."""
    conditions = retry_on.split(",")
    if condition in conditions:
        return True
    if condition in ("connect-failure", "reset", "reset-before-request", "per-try-timeout"):
        return "5xx" in conditions or "gateway-error" in conditions or (
            condition != "connect-failure" and "reset" in conditions)
    return False


def retries_status(retry: RetryPolicy, status: int) -> bool:
    """Whether a response status is retried: its code is listed (retriable-status-codes), or 5xx / gateway-error
    (502, 503, 504) are among the conditions."""
    conditions = retry.retry_on.split(",")
    return ((status in retry.retriable_status_codes and "retriable-status-codes" in conditions)
            or (status >= 500 and "5xx" in conditions)
            or (status in (502, 503, 504) and "gateway-error" in conditions))


def apply_ops(headers: hd.Headers, ops: HeaderOps) -> None:
    """A VirtualService's header operations, in Envoy's order: remove, then set (replace), then add (append)."""
    names = {n.lower().encode("latin-1") for n in ops.remove} | {n.lower().encode("latin-1") for n, _ in ops.set}
    headers[:] = [(n, v) for n, v in headers if n not in names]
    headers += [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in (*ops.set, *ops.add)]


def _chance(percent: float) -> bool:
    return percent >= 100 or random.random() * 100 < percent


def _weighted(route: HttpRoute) -> Any:
    total = sum(w.weight for w in route.weighted)
    point = random.uniform(0, total)
    for chosen in route.weighted:
        point -= chosen.weight
        if point < 0:
            return chosen
    return route.weighted[-1]


def _text(value: bytes | None) -> str:
    return value.decode("latin-1") if value else "-"


async def _shadow(target: Route, addr: Addr, client_ip: str, request: bytes) -> None:
    """Send a mirrored request and read its answer's head (or time out); failures are not reported, as Envoy's
    shadow requests are fire-and-forget."""
    try:
        sock = upstream_socket(target, client_ip)
    except OSError:
        return
    try:
        async with asyncio.timeout(MIRROR_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, addr)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    finally:
        sock.close()
