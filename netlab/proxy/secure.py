"""The server sidecar's side of mTLS, and a gateway's HTTPS: a connection whose ClientHello picked a terminating
filter chain is handed here with the bytes read so far; once the handshake is done (for mTLS: the client's
certificate verified against the mesh's root; a gateway credential asks for none), the plaintext goes to the HTTP
connection manager or to tcp_proxy, with the SNI and both identities for the access log and the metrics. A
handshake that fails (another CA's certificate, none at all, garbage, a timeout) closes the connection and logs
why."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from netlab.proxy.accesslog import Entry
from netlab.proxy.http.session import session_for
from netlab.proxy.origdst import Addr
from netlab.proxy.rbac import Attributes, decide, principal_of
from netlab.proxy.routes import TlsChain
from netlab.proxy.stream import StreamRelay
from netlab.proxy.telemetry import Security
from netlab.proxy.tls import Hello, TlsStream, failure_reason


def serve_tls(ctx: Any, transport: asyncio.Transport, sock: socket.socket, client: Addr, orig: Addr, start: float,
              chain: TlsChain, hello: Hello, held: bytes) -> None:
    start = start or time.time()

    def ready(stream: TlsStream) -> None:
        # A gateway's HTTPS (a credential of its own) has no identities: it is not mTLS.
        security = Security(hello.sni, "", "") if chain.context else Security(hello.sni, stream.peer,
                                                                              ctx.identity.spiffe)
        if chain.http is None and ctx.authz:  # the network RBAC filter, with the client's identity
            denied = decide(ctx.authz, Attributes(principal_of(stream.peer), client[0], *orig, sni=hello.sni))
            if denied is not None:
                return failed(stream, PermissionError(denied))
        if chain.http is not None:
            session = session_for(ctx, stream, sock, client, orig, chain.http, b"")
            session.security = security
            stream.start(session)
            return
        route = chain.route
        assert route is not None
        upstream, host = route.pick()
        if upstream is None:
            failed(stream, ConnectionAbortedError("no_healthy_upstream"))
            return
        StreamRelay(ctx, route, client, orig, start, stream, sock, upstream, host, security)

    def failed(stream: TlsStream, error: BaseException) -> None:
        stream.abort()
        if ctx.libuv:
            sock.detach()  # libuv closes the fd (see relay.Side.sock)
        if ctx.log is not None:
            cluster = chain.route.cluster if chain.route is not None else "-"
            details = str(error) if isinstance(error, PermissionError) else failure_reason(error).replace(
                "TLS_error", "downstream_tls_error")
            ctx.log.log(Entry(start, cluster, orig, client, termination_details=details,
                              requested_server_name=hello.sni or "-", duration_ms=int((time.time() - start) * 1000)))

    stream = TlsStream(chain.context or ctx.identity.server, True, None, ready, failed)
    transport.set_protocol(stream)
    stream.attach(transport, held)
