"""Admin endpoints (15021, 15090) and the access-log formats."""

from __future__ import annotations

import json
import re
import time

from proxy_support import ProxyUnderTest, app, exchange, http_get, make_config, unanswered

from netlab.probe.observed import parse_log_line
from netlab.proxy.accesslog import Entry, format_json, format_text

# A refused inbound connect, as Istio's sample of a 1.10 app on 127.0.0.1 logs it (shared/seeds, MESH-FACTS.md).
ENTRY = Entry(1700000000.25, "inbound|8080||", ("10.44.0.2", 8080), ("10.44.0.1", 53210),
              upstream_host=("10.44.0.2", 8080), flags="UF,URX", transport_failure="delayed_connect_error:_111",
              bytes_received=4, duration_ms=3)


def test_text_line_format() -> None:
    """Istio's EnvoyTextLogFormat: a TCP connection prints "- - -" and 0 for the HTTP fields."""
    assert format_text(ENTRY) == (
        '[2023-11-14T22:13:20.250Z] "- - -" 0 UF,URX - - "delayed_connect_error:_111" 4 0 3 - "-" "-" "-" "-" '
        '"10.44.0.2:8080" inbound|8080|| - 10.44.0.2:8080 10.44.0.1:53210 - -'
    )


def test_text_line_parses_back() -> None:
    fields = parse_log_line("p", format_text(ENTRY))
    assert fields is not None
    assert (fields.get("direction"), fields.get("cluster"), fields.get("flags")) == ("inbound", "inbound|8080||",
                                                                                      "UF,URX")
    assert fields.get("details") == "delayed_connect_error:_111"
    assert fields.addr("downstream_remote") == ("10.44.0.1", 53210)


def test_json_line_format() -> None:
    """EnvoyJSONLogFormatIstio's keys, unset values null, numbers as numbers."""
    obj = json.loads(format_json(ENTRY))
    assert obj == {
        "authority": None, "bytes_received": 4, "bytes_sent": 0, "connection_termination_details": None,
        "downstream_local_address": "10.44.0.2:8080", "downstream_remote_address": "10.44.0.1:53210",
        "duration": 3, "method": None, "path": None, "protocol": None, "request_id": None,
        "requested_server_name": None, "response_code": 0, "response_code_details": None,
        "response_flags": "UF,URX", "route_name": None, "start_time": "2023-11-14T22:13:20.250Z",
        "upstream_cluster": "inbound|8080||", "upstream_host": "10.44.0.2:8080", "upstream_local_address": None,
        "upstream_service_time": None, "upstream_transport_failure_reason": "delayed_connect_error:_111",
        "user_agent": None, "x_forwarded_for": None,
    }


def test_live_log_line_fields() -> None:
    with app("127.0.0.1") as a:
        port = a.addr[1]
        with ProxyUnderTest(make_config("1.10", {port})) as p:
            p.dst = ("127.0.0.1", port)
            assert exchange(p.inbound, b"ping")[0] == "reply"
            deadline = time.monotonic() + 5
            while not p.log_lines() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert LINE.match(p.log_lines()[0]), p.log_lines()
            (e,) = p.log_entries()
            assert (e["direction"], e["cluster"], e["flags"], e["details"]) == ("inbound", f"inbound|{port}||",
                                                                               "-", "-")
            assert (e["method"], e["response_code"]) == ("-", "0")
            assert (e["bytes_received"], e["bytes_sent"]) == ("4", str(len("pong from 127.0.0.6")))
            assert e["upstream_host"] == f"127.0.0.1:{port}" and e["downstream_local"] == f"127.0.0.1:{port}"
            assert e["upstream_local"].startswith("127.0.0.6:") and e["upstream_local"] != "127.0.0.6:0"


# Independent of netlab's parser: the shape of Istio's TEXT line for a TCP connection.
LINE = re.compile(
    r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "- - -" 0 \S+ - \S+ "[^"]*" \d+ \d+ \d+ - "-" "-" "-" "-" '
    r'"[\d.:]+" \S+ [\d.:]+ [\d.:]+ [\d.:]+ - -$'
)


def test_json_log_option() -> None:
    with app("127.0.0.1") as a, ProxyUnderTest(make_config(access_log_json=True)) as p:
        p.dst = a.addr
        exchange(p.outbound)
        deadline = time.monotonic() + 5
        while not p.log_lines() and time.monotonic() < deadline:
            time.sleep(0.02)
        obj = json.loads(p.log_lines()[0])
        assert obj["upstream_cluster"] == "PassthroughCluster" and obj["response_code"] == 0
        assert obj["bytes_sent"] == len("pong from 127.0.0.1")


def test_health_and_prometheus() -> None:
    # The failing connection's upstream never answers (rather than refusing at once), so that its client byte
    # surely reaches the proxy before the failure: the byte counts below are then exact, not a race.
    with app("127.0.0.1") as a, unanswered() as silent, \
            ProxyUnderTest(make_config(declared_ports={8080}, connect_timeout=0.3)) as p:
        assert http_get(p.health, "/healthz/ready") == (200, "")
        assert http_get(p.health, "/nope")[0] == 404
        assert http_get(p.stats_addr, "/healthz/ready")[0] == 404
        p.dst = a.addr
        exchange(p.inbound, b"12345")
        p.dst = silent
        exchange(p.inbound, b"x")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, body = http_get(p.stats_addr, "/stats/prometheus")
            if 'envoy_cluster_upstream_cx_total{cluster_name="InboundPassthroughClusterIpv4"} 2' in body:
                break
            time.sleep(0.05)
        assert status == 200
        metrics = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
        key = 'envoy_cluster_{}{{cluster_name="InboundPassthroughClusterIpv4"}}'
        assert metrics[key.format("upstream_cx_total")] == "2"
        assert metrics[key.format("upstream_cx_connect_fail")] == "1"
        assert metrics[key.format("upstream_cx_active")] == "0"
        assert metrics[key.format("upstream_cx_tx_bytes_total")] == "6"
        assert metrics[key.format("upstream_cx_rx_bytes_total")] == str(len("pong from 127.0.0.6"))
        assert metrics['envoy_cluster_upstream_cx_total{cluster_name="inbound|8080||"}'] == "0"


def test_link_follows_a_sidecar_line_that_shows_the_forwarded_client() -> None:
    """Behind a gateway, the sidecar's DOWNSTREAM_REMOTE_ADDRESS is x-forwarded-for's client with port 0 (as in
    the study notes: `... 172.16.184.6:9080 192.168.10.254:0 ...`): the request id links it to the gateway's line."""
    from netlab.probe.observed import link, parse_addr, parse_log_line

    gateway = parse_log_line("gw", '[2026-12-02T07:43:35.124Z] "GET / HTTP/1.1" 200 - via_upstream - "-" 0 351 6 6 '
                             '"192.168.10.254" "curl/7.88.1" "bbdb764d" "www.example" "10.244.1.10:80" '
                             'outbound|80||svc-nginx.default.svc.cluster.local 10.244.0.10:46322 10.244.0.10:8080 '
                             '192.168.10.254:33230 - -')
    sidecar = parse_log_line("nginx", '[2026-12-02T07:43:35.129Z] "GET / HTTP/1.1" 200 - via_upstream - "-" 0 351 1 1 '
                             '"192.168.10.254" "curl/7.88.1" "bbdb764d" "www.example" "10.244.1.10:80" inbound|80|| '
                             '127.0.0.6:47962 10.244.1.10:80 192.168.10.254:0 - default')
    assert gateway is not None and sidecar is not None and parse_addr("192.168.10.254:0") == ("192.168.10.254", 0)
    assert link(("192.168.10.254", 33230), [sidecar, gateway]) == [gateway, sidecar]
    assert link(("192.168.10.254", 1), [sidecar, gateway]) == []
