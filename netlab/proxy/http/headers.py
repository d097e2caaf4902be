"""Header changes and local replies of a sidecar's HTTP connection manager and router, as Envoy makes them with
Istio's settings (use_remote_address false, server_name "istio-envoy" inbound and Envoy's "envoy" outbound,
generate_request_id, include_request_attempt_count on outbound virtual hosts, no x-forwarded-for from sidecars);
and a gateway's, which uses the remote address (use_remote_address true, xff_num_trusted_hops 0, "istio-envoy").

Sources: Envoy source/common/http/conn_manager_utility.cc (mutateRequestHeaders, cleanInternalHeaders,
mutateResponseHeaders), source/common/router/router.cc (x-envoy-attempt-count, x-envoy-upstream-service-time, local
reply bodies), source/common/http/http1/codec_impl.cc (framing, lower-case names, host first); Istio
pilot/pkg/networking/core/httproute.go and listener_builder.go (what the sidecar's manager is told to do).

Headers are (name, value) byte pairs, names lower-case as the parser hands them over.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Edge:
    """A gateway's connection manager settings that depend on its Envoy."""

    private_is_internal: bool = True

# Never forwarded: hop-by-hop, and re-framed by the codec (transfer-encoding).
HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                        b"te", b"x-envoy-internal"))
# cleanInternalHeaders: a request that is not "internal" (with use_remote_address false: an x-forwarded-for of one
# private address, which sidecars never add) loses the headers that would steer Envoy.
INTERNAL_ONLY = frozenset((
    b"x-envoy-retriable-status-codes", b"x-envoy-retriable-header-names", b"x-envoy-retry-on",
    b"x-envoy-retry-grpc-on", b"x-envoy-max-retries", b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-timeout-ms", b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response", b"x-envoy-expected-rq-timeout-ms", b"x-envoy-force-trace",
    b"x-envoy-ip-tags", b"x-envoy-original-url", b"x-envoy-hedge-on-per-try-timeout",
))
# Istio's metadata exchange and tracing headers between sidecars: the receiving sidecar takes them off.
MESH_ONLY = frozenset((b"x-envoy-peer-metadata", b"x-envoy-peer-metadata-id", b"x-envoy-decorator-operation"))
_DROP_OUTBOUND = HOP_BY_HOP | INTERNAL_ONLY | {b"x-forwarded-client-cert", b"x-envoy-attempt-count"}
_DROP_EDGE = _DROP_OUTBOUND - {b"x-envoy-internal"}  # the gateway's own verdict goes upstream
_DROP_INBOUND = HOP_BY_HOP | INTERNAL_ONLY | MESH_ONLY | {b"x-forwarded-client-cert"}
_DROP_RESPONSE = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"server",
                            b"x-envoy-upstream-service-time"))
_DROP_RESPONSE_OUTBOUND = _DROP_RESPONSE | MESH_ONLY
# Requests that Envoy's codec sends without a body get no "content-length: 0" (HeaderUtility::requestShouldHaveNoBody).
BODILESS_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"))
SERVER_INBOUND, SERVER_OUTBOUND = b"istio-envoy", b"envoy"
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_date = ["", 0]


def http_date() -> bytes:
    """The IMF-fixdate Envoy's date provider writes, refreshed once a second."""
    now = int(time.time())
    if _date[1] != now:
        _date[0], _date[1] = formatdate(now, usegmt=True), now
    return str(_date[0]).encode()


def connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def upstream_request(method: bytes, path: bytes, headers: Headers, outbound: bool, attempt: int | None,
                     body_framing: bytes | None, upgrade: bytes | None, decorator: str,
                     metadata: Headers | None = None, edge: bool = False) -> bytes:
    """The request head sent upstream. `body_framing`: b"content-length" (kept), b"chunked" (re-chunked), or None
    for no body. `attempt`: x-envoy-attempt-count's value, None where the virtual host does not count attempts.
    `upgrade`: the websocket upgrade being forwarded, if any. `metadata`: the client sidecar's peer metadata.
    `edge`: sent by a gateway."""
    drop = _DROP_EDGE if edge else _DROP_OUTBOUND if outbound else _DROP_INBOUND
    tokens = connection_tokens(headers)
    if tokens:
        drop = drop | tokens
    host = b""
    out: Headers = []
    te_trailers = False
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"te":
            te_trailers = b"trailers" in value.lower()
        elif name not in drop and not (name == b"content-length" and body_framing != b"content-length"):
            out.append((name, value))
    if te_trailers:  # since Envoy 1.29 "te: trailers" survives, the rest of TE does not
        out.append((b"te", b"trailers"))
    if attempt is not None:  # the virtual host's include_request_attempt_count
        out.append((b"x-envoy-attempt-count", str(attempt).encode()))
    if decorator:
        out.append((b"x-envoy-decorator-operation", decorator.encode()))
    if metadata:
        out += metadata
    if upgrade is not None:
        out += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    elif body_framing == b"chunked":
        out.append((b"transfer-encoding", b"chunked"))
    elif body_framing is None and method not in BODILESS_METHODS:
        out.append((b"content-length", b"0"))
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, path, host)]
    lines += [b"%s: %s\r\n" % pair for pair in out]
    lines.append(b"\r\n")
    return b"".join(lines)


def request_additions(headers: Headers) -> tuple[Headers, bytes]:
    """What the connection manager adds to a request it received: x-request-id if absent (a UUID v4; an existing
    one is kept, the request not being an edge request) and x-forwarded-proto if absent. Returns the headers and the
    request id."""
    request_id = b""
    proto = False
    for name, value in headers:
        if name == b"x-request-id":
            request_id = value
        elif name == b"x-forwarded-proto":
            proto = True
    if not proto:
        headers.append((b"x-forwarded-proto", b"http"))
    if not request_id:
        request_id = new_request_id()
        headers.append((b"x-request-id", request_id))
    return headers, request_id


def is_internal(ip: str, private_is_internal: bool) -> bool:
    """Envoy's internal addresses for x-envoy-internal: loopback, and RFC 1918 networks until Envoy 1.33 (Istio
    1.25), which no longer counts them unless internal_address_config lists them."""
    if ip.startswith("127."):
        return True
    if not private_is_internal:
        return False
    first, second = (int(x) for x in ip.split(".")[:2])
    return first == 10 or (first == 172 and 16 <= second <= 31) or (first == 192 and second == 168)


def edge_request_additions(headers: Headers, remote: str, private_is_internal: bool,
                           https: bool = False) -> tuple[Headers, bytes]:
    """A gateway's connection manager (use_remote_address, no trusted hops; Envoy's mutateRequestHeaders): the peer's
    address appended to x-forwarded-for, x-forwarded-proto set to the scheme it was reached by, and either
    x-envoy-internal: true (an internal peer) or x-envoy-external-address (an edge request, which also loses the
    x-envoy-* headers that steer Envoy and gets a new x-request-id). Returns the headers and the request id."""
    internal = is_internal(remote, private_is_internal)
    drop = {b"x-forwarded-proto", b"x-envoy-internal", b"x-envoy-external-address"}
    if not internal:
        drop |= INTERNAL_ONLY | {b"x-request-id"}
    forwarded = [v for n, v in headers if n == b"x-forwarded-for"]
    out = [(n, v) for n, v in headers if n not in drop and n != b"x-forwarded-for"]
    out.append((b"x-forwarded-for", b", ".join([*forwarded, remote.encode()])))
    out.append((b"x-forwarded-proto", b"https" if https else b"http"))
    out.append((b"x-envoy-internal", b"true") if internal else (b"x-envoy-external-address", remote.encode()))
    request_id = next((v for n, v in out if n == b"x-request-id"), b"")
    if not request_id:
        request_id = new_request_id()
        out.append((b"x-request-id", request_id))
    return out, request_id


def new_request_id() -> bytes:
    """A random UUID v4 as Envoy's generator makes it (a third of the cost of uuid.uuid4(); not for secrets)."""
    n = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60) | (0x4000 << 64) | (0x8 << 60)
    h = b"%032x" % n
    return b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def response_head(status: int, headers: Headers, outbound: bool, service_time: int | None, chunked: bool,
                  close: bool, upgrade: bytes | None = None, metadata: Headers | None = None,
                  server: bytes | None = None) -> bytes:
    """The response head sent to the client: hop-by-hop headers off, `server` overwritten with this side's name
    (`server`, else the sidecar's for the direction), `date` added when the upstream sent none,
    x-envoy-upstream-service-time, the codec's framing; for a 101, the protocol switched to. `metadata`: the server
    sidecar's peer metadata for a meshed client."""
    drop = _DROP_RESPONSE_OUTBOUND if outbound else _DROP_RESPONSE
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))]
    dated = False
    for name, value in headers:
        if name not in drop:
            lines.append(b"%s: %s\r\n" % (name, value))
            dated = dated or name == b"date"
    if not dated:
        lines.append(b"date: %s\r\n" % http_date())
    lines.append(b"server: %s\r\n" % (server or (SERVER_OUTBOUND if outbound else SERVER_INBOUND)))
    if service_time is not None:
        lines.append(b"x-envoy-upstream-service-time: %d\r\n" % service_time)
    lines += [b"%s: %s\r\n" % pair for pair in metadata or ()]
    if upgrade is not None:
        lines.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade)
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def local_reply(status: int, body: str, outbound: bool, close: bool, head_only: bool = False,
                extra: Headers | None = None, server: bytes | None = None) -> bytes:
    """A response Envoy makes itself (sendLocalReply): text/plain when there is a body, content-length always."""
    data = body.encode()
    headers: Headers = [*(extra or []), (b"content-length", b"%d" % len(data))]
    if data:
        headers.insert(0, (b"content-type", b"text/plain"))
    return response_head(status, headers, outbound, None, False, close, server=server) + (b"" if head_only else data)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
