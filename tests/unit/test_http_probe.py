"""HTTP probes (pure): the request a probe sends, the response it parses, the scenario keys and the verdict; and
the built-in http app over loopback (JSON answers, keep-alive, its fail and delay behaviours)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from test_verdict import CLIENT, facts, result

from netlab.http_app import Behaviour, HttpApp
from netlab.http_reply import parse_response
from netlab.model.schema import HttpRequest, ProbeCheck
from netlab.probe.connect import TlsClient
from netlab.probe.http import request_bytes, server_name
from netlab.probe.observed import ProbeObservation
from netlab.verdict import judge_probe

BODY = b'{"reply": "hello", "pod": "reviews-v2-0"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nserver: envoy\r\nx-envoy-upstream-service-time: 3"
            b"\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY))


def test_the_request_is_whole_and_asks_to_close() -> None:
    data = request_bytes(HttpRequest(method="POST", path="/reviews/0", headers={"End-User": "jason"}, body="hi"),
                         "reviews:9080")
    assert data == (b"POST /reviews/0 HTTP/1.1\r\nhost: reviews:9080\r\nuser-agent: netlab-probe\r\nend-user: jason\r\n"
                    b"content-length: 2\r\nconnection: close\r\n\r\nhi")
    assert request_bytes(HttpRequest(), "web:80").startswith(b"GET / HTTP/1.1\r\nhost: web\r\n")  # as curl
    assert request_bytes(HttpRequest(scheme="https"), "web:443").startswith(b"GET / HTTP/1.1\r\nhost: web\r\n")
    assert b"host: web:80\r\n" in request_bytes(HttpRequest(scheme="https"), "web:80")


def test_an_https_probe_sends_the_host_as_sni_as_curl_does() -> None:
    https = HttpRequest(scheme="https", headers={"Host": "httpbin.example.com:30443"})
    assert server_name(https, "node-1:30443") == "httpbin.example.com"
    assert server_name(HttpRequest(scheme="https"), "node-1:30443") == "node-1"
    ip = TlsClient.trusting("", server_name(HttpRequest(scheme="https"), "192.168.10.10:30443"))
    assert ip.server_name == "" and not ip.context.check_hostname  # an address is sent as no SNI
    named = TlsClient.trusting("/nonexistent/root-cert.pem", "node-1")  # no gateway CA yet: the system's roots
    assert named.server_name == "node-1" and named.context.check_hostname
    for name in ("[fd00::1]", ""):  # no SNI: the chain is still checked, not the name
        client = TlsClient.trusting("", server_name(HttpRequest(scheme="https", headers={"host": name}), "x:443"))
        assert client.server_name == "" and not client.context.check_hostname


def test_responses_parse_and_name_who_answered() -> None:
    reply = parse_response(RESPONSE)
    assert reply is not None and reply.complete and reply.status == 200
    assert reply.headers["server"] == "envoy" and reply.answered_by() == "reviews-v2-0"
    cut = parse_response(RESPONSE[:-5])
    assert cut is not None and not cut.complete
    assert parse_response(b"pong\n") is None


@pytest.mark.parametrize(("expect", "passes"), [
    ({"status": 200}, True),
    ({"status": 503}, False),
    ({"body_contains": "reviews-v2"}, True),
    ({"headers": {"server": "envoy", "x-envoy-upstream-service-time": "present", "x-request-id": "absent"}}, True),
    ({"headers": {"x-request-id": "present"}}, False),
])
def test_http_expectations(expect: dict, passes: bool) -> None:
    check = ProbeCheck.model_validate({"from": "client", "to": "lo:8080", "http": {"path": "/"}, "expect": expect})
    obs = ProbeObservation(result("reply", RESPONSE))
    verdict = judge_probe(check, obs, facts("0.0.0.0"))
    assert verdict.passed is passes, verdict.observed
    assert verdict.observed.startswith("HTTP 200")


@pytest.mark.parametrize(("check", "message"), [
    ({"send": "x", "http": {}, "expect": "reply"}, "either `send`"),
    ({"expect": {"status": 200}}, "add `http:"),
    ({"http": {"method": "GE T"}, "expect": "reply"}, "not an HTTP method"),
    ({"http": {"path": "reviews"}, "expect": "reply"}, "starts with /"),
    ({"http": {"headers": {"a b": "1"}}, "expect": "reply"}, "not a header line"),
])
def test_bad_http_probes_are_named(check: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProbeCheck.model_validate({"from": "client", "to": "lo:8080", **check})


@contextmanager
def running_app(behaviour: Behaviour) -> Iterator[tuple[str, int]]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: HttpApp(behaviour, None), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.close()


def test_the_http_app_says_who_answered_and_what_arrived() -> None:
    with running_app(Behaviour("hi", "reviews-v2-0", "v2")) as addr:
        conn = http.client.HTTPConnection(*addr, timeout=5)
        for path in ("/a", "/b?x=1"):  # one connection, kept alive
            conn.request("POST", path, body=b"12345", headers={"End-User": "jason"})
            response = conn.getresponse()
            doc = json.loads(response.read())
            assert response.status == 200 and response.getheader("content-type") == "application/json"
            assert (doc["reply"], doc["pod"], doc["version"], doc["path"]) == ("hi", "reviews-v2-0", "v2", path)
            assert doc["headers"]["end-user"] == "jason" and doc["body_bytes"] == 5
            assert doc["peer"] == CLIENT or doc["peer"] == "127.0.0.1"
        conn.close()


def test_the_http_app_fails_and_delays_on_request() -> None:
    with running_app(Behaviour(pod="ratings-0", fail_status=503, fail_share=1.0)) as addr:
        conn = http.client.HTTPConnection(*addr, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 503 and json.loads(response.read())["pod"] == "ratings-0"
    with running_app(Behaviour(delay_ms=200, delay_share=1.0)) as addr:
        conn = http.client.HTTPConnection(*addr, timeout=5)
        start = time.monotonic()
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        assert time.monotonic() - start >= 0.19


def test_the_http_app_calls_on_and_passes_bookinfos_headers() -> None:
    with running_app(Behaviour(pod="ratings-0")) as ratings:
        calls = (f"ratings:{ratings[1]}/ratings/0", "nothing:1/x")
        with running_app(Behaviour(pod="reviews-0", calls=calls, call_timeout=2,
                                   hosts={"ratings": ratings[0], "nothing": "127.0.0.1"})) as reviews:
            conn = http.client.HTTPConnection(*reviews, timeout=5)
            conn.request("GET", "/reviews/0", headers={"End-User": "jason", "X-Request-Id": "r-1", "X-Other": "no"})
            doc = json.loads(conn.getresponse().read())
            ok, refused = doc["calls"]
            assert (ok["status"], ok["pod"]) == (200, "ratings-0")
            assert (refused["status"], refused["error"]) == (0, "Connection refused")
    # What ratings received, checked on a fresh pair: the forwarded headers, not the others.
    received: list[dict[str, str]] = []

    class Recording(HttpApp):
        def on_message_complete(self) -> None:
            received.append(dict(self.headers))
            super().on_message_complete()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: Recording(Behaviour(), None), "127.0.0.1", 0))
    addr = server.sockets[0].getsockname()[:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with running_app(Behaviour(calls=(f"ratings:{addr[1]}/r",), hosts={"ratings": addr[0]})) as reviews:
            conn = http.client.HTTPConnection(*reviews, timeout=5)
            conn.request("GET", "/", headers={"End-User": "jason", "X-Request-Id": "r-1", "X-Other": "no"})
            conn.getresponse().read()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.close()
    (headers,) = received
    assert (headers["end-user"], headers["x-request-id"], headers["host"]) == ("jason", "r-1", f"ratings:{addr[1]}")
    assert "x-other" not in headers
