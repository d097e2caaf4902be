"""The sidecar's HTTP/1.1 path over loopback, under asyncio and uvloop: sniffing, Envoy's header changes, keep-alive
and pooling, pipelining, framing, local replies, Istio's default retries, the per-request access-log line.
Clients are the standard library's http.client or raw sockets; the app is a real HTTP server (http_support)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import time
from collections.abc import Iterator

import pytest
from http_support import FQDN, VIP, HttpApp, http_app, service_config
from proxy_support import LOOPS, ProxyUnderTest, exchange, make_config

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


def entries(p: ProxyUnderTest, n: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 5
    while len(p.log_lines()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return p.log_entries()


def get(addr: tuple[str, int], path: str = "/", method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(*addr, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def raw(addr: tuple[str, int], data: bytes, timeout: float = 5) -> bytes:
    """Send bytes, read until the proxy closes (or the timeout)."""
    got = b""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return got


# --- inbound: a sniffed port, Envoy's headers, the log line ---------------------------------------------------


def test_inbound_request_headers_log_line(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        response, data = get(p.inbound, "/reviews/0?x=1", headers={"User-Agent": "curl/8", "Connection": "x-drop",
                                                                 "X-Drop": "1", "Keep-Alive": "5",
                                                                 "X-Envoy-Retry-On": "5xx"})
        doc = json.loads(data)
        seen = doc["headers"]
        # What the app sees: Envoy's request id and x-forwarded-proto; no hop-by-hop or internal-only headers,
        # no x-forwarded-for (sidecars do not add one), no attempt count (an inbound virtual host).
        assert UUID4.fullmatch(seen["x-request-id"]) and seen["x-forwarded-proto"] == "http"
        assert not {"connection", "x-drop", "keep-alive", "x-envoy-retry-on", "x-forwarded-for",
                    "x-envoy-attempt-count"} & set(seen)
        assert doc["peer"] == "127.0.0.6" and doc["path"] == "/reviews/0?x=1"
        # What the client sees: the inbound side's server name and the upstream service time.
        assert response.status == 200 and response.getheader("server") == "istio-envoy"
        assert int(response.getheader("x-envoy-upstream-service-time")) >= 0
        assert response.getheader("x-request-id") is None  # not echoed (no x-envoy-force-trace)
        (e,) = entries(p, 1)
        assert (e["method"], e["path"], e["protocol"], e["response_code"]) == ("GET", "/reviews/0?x=1",
                                                                               "HTTP/1.1", "200")
        assert (e["flags"], e["response_code_details"], e["route_name"]) == ("-", "via_upstream", "default")
        assert (e["cluster"], e["upstream_host"]) == ("InboundPassthroughClusterIpv4", f"{app.addr[0]}:{app.addr[1]}")
        assert e["request_id"] == seen["x-request-id"] and e["user_agent"] == "curl/8"
        assert e["bytes_sent"] == str(len(data)) and e["bytes_received"] == "0"
        assert e["upstream_local"].startswith("127.0.0.6:") and e["direction"] == "inbound"
        assert e["upstream_service_time"] == response.getheader("x-envoy-upstream-service-time")


def test_an_existing_request_id_is_kept(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        _, data = get(p.inbound, headers={"X-Request-Id": "abc-123", "X-Forwarded-Proto": "https"})
        seen = json.loads(data)["headers"]
        assert (seen["x-request-id"], seen["x-forwarded-proto"]) == ("abc-123", "https")


def test_keep_alive_reuses_one_upstream_connection(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        conn = http.client.HTTPConnection(*p.inbound, timeout=5)
        for i in range(5):
            conn.request("GET", f"/{i}")
            assert conn.getresponse().read()
        conn.close()
        for i in range(3):  # new client connections: the pooled upstream connection still serves them
            assert get(p.inbound, f"/again/{i}")[0].status == 200
        assert app.connections == 1
        assert len(entries(p, 8)) == 8


def test_pipelined_requests_are_answered_in_order(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        requests = b"".join(b"GET /slow/%d HTTP/1.1\r\nHost: web\r\n\r\n" % ms for ms in (60, 0, 20))
        got = raw(p.inbound, requests + b"GET /last HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        paths = re.findall(rb'"path": "([^"]+)"', got)
        assert paths == [b"/slow/60", b"/slow/0", b"/slow/20", b"/last"]
        assert got.count(b"HTTP/1.1 200 OK") == 4 and got.endswith(b"}")
        assert b"connection: close" in got.split(b"\r\n\r\n")[-2].lower()  # the last response says so


def test_bodies_both_ways_chunked_and_large(loop_name: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        response, data = get(p.inbound, "/upload", "POST", payload)
        doc = json.loads(data)
        assert (doc["body_bytes"], doc["body_sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
        # A chunked request (a generator body): re-chunked upstream, the app reads it whole.
        response, data = get(p.inbound, "/upload", "POST", iter([b"a" * 1000, b"b" * 5]))  # type: ignore[arg-type]
        assert json.loads(data)["body_bytes"] == 1005
        # A chunked response stays chunked; one delimited by the connection's end is chunked by the proxy.
        response, data = get(p.inbound, "/chunked")
        assert data == b"one two three" and response.getheader("transfer-encoding") == "chunked"
        response, data = get(p.inbound, "/until-close")
        assert data == b"until the end" and response.getheader("transfer-encoding") == "chunked"
        log = entries(p, 4)
        assert log[0]["bytes_received"] == str(len(payload)) and log[1]["bytes_received"] == "1005"
        assert log[2]["bytes_sent"] == str(len("one two three"))


def test_head_and_expect_continue(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        response, data = get(p.inbound, "/", "HEAD")
        assert response.status == 200 and data == b"" and response.getheader("content-length")
        got = raw(p.inbound, b"POST /p HTTP/1.1\r\nHost: w\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
                             b"Connection: close\r\n\r\nhi")
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        assert b'"expect"' not in got  # answered by the proxy, not passed on


def test_websocket_upgrade_becomes_a_byte_relay(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        with socket.create_connection(p.inbound, timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: w\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1000)
            assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: websocket" in head.lower()
            s.sendall(b"frame-1")
            assert s.recv(100) == b"frame-1"
        (e,) = entries(p, 1)
        assert e["response_code"] == "101"


# --- bad input and failures: local replies, never a dead worker ----------------------------------------------


@pytest.mark.parametrize(("request_bytes", "status", "details"), [
    (b"GET / HTTP/1.1\r\nHost: w\r\nBad Header\r\n\r\n", 400, "http1.codec_error"),
    (b"GET / HTTP/1.0\r\nHost: w\r\n\r\n", 426, "low_version"),
    (b"GET / HTTP/1.1\r\nHost: w\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, "http1.headers_too_large"),
    (b"GET / HTTP/1.1\r\nHost: w\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431,
     "http1.too_many_headers"),
    (b"GET / HTTP/1.1\r\nHost: w\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n", 403, "upgrade_failed"),
])
def test_bad_requests_get_envoys_local_replies(loop_name: str, request_bytes: bytes, status: int,
                                               details: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        got = raw(p.inbound, request_bytes)
        assert got.startswith(b"HTTP/1.1 %d " % status), got[:100]
        assert b"server: istio-envoy" in got and b"connection: close" in got
        (e,) = entries(p, 1)
        assert (e["response_code"], e["response_code_details"]) == (str(status), details)
        assert e["flags"] == ("DPE" if status in (400, 431) else "-")
        assert app.requests == []
        assert get(p.inbound)[0].status == 200  # the worker goes on


def test_upstream_failures_before_and_after_the_response_started(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        response, data = get(p.inbound, "/no-answer")
        assert response.status == 503
        assert data == (b"upstream connect error or disconnect/reset before headers. reset reason: connection "
                        b"termination")
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
            get(p.inbound, "/close-early")
        before, after = entries(p, 2)
        assert (before["flags"], before["details"]) == (
            "UC", "upstream_reset_before_response_started{connection_termination}")
        assert (after["flags"], after["response_code"], after["details"]) == (
            "UC", "200", "upstream_reset_after_response_started{connection_termination}")
        assert get(p.inbound)[0].status == 200


def test_refused_inbound_connect_is_a_503_uf(loop_name: str) -> None:
    """Istio's inbound route has no retry policy before 1.24: one attempt, UF, Envoy's body naming the errno."""
    with ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = ("127.0.0.1", 1)
        response, data = get(p.inbound)
        assert response.status == 503 and response.getheader("content-type") == "text/plain"
        assert data == (b"upstream connect error or disconnect/reset before headers. reset reason: remote connection "
                        b"failure, transport failure reason: delayed connect error: 111")
        (e,) = entries(p, 1)
        assert (e["flags"], e["upstream_transport_failure_reason"]) == ("UF", "delayed_connect_error:_111")
        assert e["response_code_details"] == (
            "upstream_reset_before_response_started{remote_connection_failure,delayed_connect_error:_111}")


def test_client_gone_mid_request_is_logged_dc(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        with socket.create_connection(p.inbound, timeout=5) as s:
            s.sendall(b"GET /slow/300 HTTP/1.1\r\nHost: w\r\n\r\n")
            time.sleep(0.1)
        (e,) = entries(p, 1)
        assert (e["flags"], e["response_code"]) == ("DC", "0")
        assert p.call(lambda: sum(len(ctx.sessions) for ctx in p.worker.contexts)) == 0


def test_non_http_bytes_on_a_sniffed_port_are_relayed_as_tcp(loop_name: str) -> None:
    with http_app() as app, ProxyUnderTest(make_config("1.10"), loop_name) as p:
        p.dst = app.addr
        assert exchange(p.inbound, b"hello\r\n\r\n")[0] == "reply"  # the app's own 400, relayed byte for byte
        (e,) = entries(p, 1)
        assert (e["method"], e["cluster"]) == ("-", "InboundPassthroughClusterIpv4")


# --- outbound: a service's virtual host, attempts and Istio's default retries ------------------------------------


@contextlib.contextmanager
def two_endpoints(istio: str, loop_name: str, **settings: object) -> Iterator[tuple[ProxyUnderTest, HttpApp,
                                                                                   HttpApp]]:
    """A client sidecar whose service web has endpoints 127.0.0.2 and 127.0.0.3 (same port)."""
    with http_app("127.0.0.2", "web-0") as first, http_app("127.0.0.3", "web-1", first.addr[1]) as second:
        config = service_config(istio, [first.addr, second.addr], **settings)
        with ProxyUnderTest(config, loop_name) as p:
            p.dst = (VIP, 80)
            yield p, first, second


def test_outbound_routes_by_host_and_counts_attempts(loop_name: str) -> None:
    with two_endpoints("1.10", loop_name) as (p, _first, _second):
        apps = set()
        for host in ("web", FQDN, f"{VIP}:80", "web.default"):
            response, data = get(p.outbound, "/", headers={"Host": host})
            doc = json.loads(data)
            apps.add(doc["app"])
            assert doc["headers"]["x-envoy-attempt-count"] == "1"
            assert doc["headers"]["x-envoy-decorator-operation"] == f"{FQDN}:80/*"  # 1.10: the Zipkin tracer's
            assert response.getheader("server") == "envoy"  # the outbound side's name
        assert apps == {"web-0", "web-1"}  # ROUND_ROBIN in 1.10
        log = entries(p, 4)
        assert {e["cluster"] for e in log} == {f"outbound|80||{FQDN}"}
        assert {e["direction"] for e in log} == {"outbound"} and {e["route_name"] for e in log} == {"default"}


def test_an_unknown_host_goes_to_the_passthrough_cluster(loop_name: str) -> None:
    with http_app() as app, two_endpoints("1.10", loop_name) as (p, _first, _second):
        p.dst = app.addr  # port 80 is an HTTP port of the mesh, but this host is no service: allow_any
        with ProxyUnderTest(service_config("1.10", [("127.0.0.2", 1)], port=app.addr[1]), loop_name) as q:
            q.dst = app.addr
            _response, data = get(q.outbound, "/", headers={"Host": "example.com"})
            assert json.loads(data)["app"] == "app"
            (e,) = entries(q, 1)
            assert (e["cluster"], e["route_name"]) == ("PassthroughCluster", "allow_any")


def test_a_refused_endpoint_is_retried_on_another(loop_name: str) -> None:
    """Istio's default retry policy: connect-failure retried (twice), on a host not tried before."""
    with http_app("127.0.0.3", "web-1") as alive:
        config = service_config("1.10", [("127.0.0.2", alive.addr[1]), alive.addr])
        with ProxyUnderTest(config, loop_name) as p:
            p.dst = (VIP, 80)
            for _ in range(4):
                _response, data = get(p.outbound, "/", headers={"Host": "web"})
                doc = json.loads(data)
                assert doc["app"] == "web-1" and doc["headers"]["x-envoy-attempt-count"] in ("1", "2")
            assert any(e["flags"] == "-" and e["response_code"] == "200" for e in entries(p, 4))


def test_every_endpoint_refusing_gives_503_uf_urx(loop_name: str) -> None:
    config = service_config("1.10", [("127.0.0.2", 1), ("127.0.0.3", 1)])
    with ProxyUnderTest(config, loop_name) as p:
        p.dst = (VIP, 80)
        response, data = get(p.outbound, "/", headers={"Host": "web"})
        assert response.status == 503
        assert data == (b"upstream connect error or disconnect/reset before headers. retried and the latest reset "
                        b"reason: remote connection failure, transport failure reason: delayed connect error: 111")
        (e,) = entries(p, 1)
        assert (e["flags"], e["upstream_transport_failure_reason"]) == ("UF,URX", "delayed_connect_error:_111")
        assert p.stats.total(f"outbound|80||{FQDN}", 10) == 2  # upstream_rq_retry: attempts 2 and 3


@pytest.mark.parametrize(("istio", "statuses", "flags"), [("1.10", [503, 503, 503], "URX"), ("1.24", [503], "-")])
def test_a_503_is_retried_until_1_23(loop_name: str, istio: str, statuses: list[int], flags: str) -> None:
    with two_endpoints(istio, loop_name) as (p, first, second):
        response, _ = get(p.outbound, "/status/503", headers={"Host": "web"})
        assert response.status == 503
        assert len(first.requests) + len(second.requests) == len(statuses)
        (e,) = entries(p, 1)
        assert (e["response_code"], e["flags"], e["response_code_details"]) == ("503", flags, "via_upstream")


def test_edge_request_headers_as_a_gateway_sets_them() -> None:
    """use_remote_address with no trusted hops (Envoy's mutateRequestHeaders): the peer appended to XFF, the scheme
    set, x-envoy-internal for an internal peer (RFC 1918 until Envoy 1.33), else x-envoy-external-address, a new
    request id and no steering headers for an edge request."""
    from netlab.proxy.http.headers import edge_request_additions, is_internal

    sent = [(b"host", b"www.example"), (b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https"),
            (b"x-request-id", b"abc"), (b"x-envoy-retry-on", b"5xx"), (b"x-envoy-internal", b"true")]
    headers, rid = edge_request_additions(list(sent), "198.51.100.20", private_is_internal=True)
    got = dict(headers)
    assert got[b"x-forwarded-for"] == b"203.0.113.9, 198.51.100.20" and got[b"x-forwarded-proto"] == b"http"
    assert got[b"x-envoy-external-address"] == b"198.51.100.20" and b"x-envoy-internal" not in got
    assert b"x-envoy-retry-on" not in got and rid != b"abc" and got[b"x-request-id"] == rid
    headers, rid = edge_request_additions(list(sent), "192.168.10.254", private_is_internal=True)
    got = dict(headers)
    assert got[b"x-envoy-internal"] == b"true" and b"x-envoy-external-address" not in got
    assert rid == b"abc" and got[b"x-envoy-retry-on"] == b"5xx"  # an internal request keeps them
    assert not is_internal("192.168.10.254", private_is_internal=False) and is_internal("127.0.0.1", False)
    assert is_internal("172.31.0.1", True) and not is_internal("172.32.0.1", True)
    headers, _ = edge_request_additions(list(sent), "192.168.10.254", True, https=True)  # over a TLS listener
    assert dict(headers)[b"x-forwarded-proto"] == b"https"
