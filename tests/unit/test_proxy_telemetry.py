"""Istio's standard metrics on 15090 over loopback: a client sidecar → a server sidecar → an app, the peer metadata
exchange between them, a non-mesh client, a TCP connection; the exposition read back with prometheus_client's
parser (the text format Prometheus scrapes)."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from http_support import FQDN, VIP, http_app
from prometheus_client.parser import text_string_to_metric_families
from proxy_support import App, ProxyUnderTest, exchange, make_config
from test_proxy_http import get

from netlab.mesh.build import ProxySpec, build_snapshot
from netlab.mesh.registry import HTTP, MeshEndpoint, MeshPort, MeshService
from netlab.mesh.workload import endpoint_metadata
from netlab.proxy.config import ProxyConfig
from netlab.proxy.stats import HTTP_LABELS, TCP_LABELS
from netlab.proxy.telemetry import NOBODY, decode_peer

Sample = dict[str, str]


def scrape(p: ProxyUnderTest) -> dict[str, list[tuple[str, Sample, float]]]:
    """metric family -> its samples (name, labels, value), as Prometheus would read them."""
    text = urllib.request.urlopen(f"http://{p.stats_addr[0]}:{p.stats_addr[1]}/stats/prometheus", timeout=5).read()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text.decode())}


def web_service(port: int, endpoint: tuple[str, int], metadata: str = "") -> MeshService:
    return MeshService(FQDN, "default", (VIP,), (MeshPort("http", port, HTTP, endpoint[1]),),
                       (MeshEndpoint(endpoint[0], {port: endpoint[1]}, {"app": "web", "version": "v1"}, "web-0",
                                     workload=metadata),))


def client_config(service: MeshService) -> ProxyConfig:
    spec = ProxySpec("client", "client", "default", "10.244.0.10", "1.23", labels={"app": "client"},
                     workload="client")
    return ProxyConfig(snapshot=build_snapshot(spec, [service], {}))


@contextmanager
def mesh(app_port: int) -> Iterator[tuple[ProxyUnderTest, ProxyUnderTest]]:
    """A server sidecar for web-0 (Deployment web, app: web, version: v1) in front of the app, and a client sidecar
    whose service web has web-0 (the server sidecar's inbound listener) as its endpoint."""
    server_spec = ProxySpec("web-0", "web-0", "default", "127.0.0.1", "1.23", labels={"app": "web", "version": "v1"},
                            workload="web")
    with ProxyUnderTest(ProxyConfig(snapshot=build_snapshot(
            server_spec, [web_service(80, ("127.0.0.1", app_port))], {app_port: HTTP}))) as server:
        server.dst = ("127.0.0.1", app_port)
        with ProxyUnderTest(client_config(web_service(80, server.inbound))) as client:
            client.dst = (VIP, 80)
            yield client, server


def requests_total(p: ProxyUnderTest) -> list[Sample]:
    return [labels for name, labels, _ in scrape(p)["istio_requests"] if name == "istio_requests_total"]


def test_both_sidecars_report_the_request_with_each_others_metadata() -> None:
    with http_app() as app, mesh(app.addr[1]) as (client, server):
        response, data = get(client.outbound, "/reviews/0", headers={"Host": "web"})
        seen = json.loads(data)["headers"]
        assert response.status == 200
        # The exchange's headers never reach an app: the server sidecar strips the client's, the client's its reply.
        assert not [h for h in seen if h.startswith("x-envoy-peer-metadata")]
        assert response.getheader("x-envoy-peer-metadata") is None
        (source,) = requests_total(client)
        (destination,) = requests_total(server)
    assert list(source) == list(HTTP_LABELS)  # Istio's label order, as its stats filter adds them
    assert source == {**source, "reporter": "source", "source_workload": "client", "source_app": "client",
                           "source_canonical_service": "client", "source_canonical_revision": "latest",
                           "source_principal": "unknown", "source_cluster": "Kubernetes",
                           "destination_workload": "web", "destination_app": "web", "destination_version": "v1",
                           "destination_canonical_revision": "v1", "destination_service": FQDN,
                           "destination_service_name": "web", "destination_service_namespace": "default",
                           "request_protocol": "http", "response_code": "200", "response_flags": "-",
                           "grpc_response_status": "", "connection_security_policy": "unknown"}
    assert destination == {**destination, "reporter": "destination", "source_workload": "client",
                           "source_app": "client", "source_version": "unknown", "destination_workload": "web",
                           "destination_service": FQDN, "destination_principal": "unknown",
                           "connection_security_policy": "none"}


def test_histograms_count_duration_and_sizes() -> None:
    with http_app() as app, mesh(app.addr[1]) as (client, _server):
        for _ in range(3):
            get(client.outbound, "/slow/30", headers={"Host": "web"})
        families = scrape(client)
    duration = families["istio_request_duration_milliseconds"]
    buckets = {labels["le"]: value for name, labels, value in duration if name.endswith("_bucket")}
    assert buckets["+Inf"] == 3 and buckets["25"] == 0 and buckets["1.8e+06"] == 3  # Envoy's bounds, %g
    (count,) = [value for name, _, value in duration if name.endswith("_count")]
    (total,) = [value for name, _, value in duration if name.endswith("_sum")]
    assert count == 3 and total >= 90
    request_sizes = [v for n, _, v in families["istio_request_bytes"] if n.endswith("_sum")]
    response_sizes = [v for n, _, v in families["istio_response_bytes"] if n.endswith("_sum")]
    assert request_sizes[0] > 3 * len("GET /slow/30 HTTP/1.1\r\n") and response_sizes[0] > request_sizes[0]


def test_a_non_mesh_client_is_unknown_and_gets_no_metadata() -> None:
    with http_app() as app, mesh(app.addr[1]) as (_client, server):
        response, _ = get(server.inbound, "/", headers={"Host": "web"})
        assert response.getheader("x-envoy-peer-metadata") is None  # answered only to a meshed client
        get(server.inbound, "/", headers={"Host": "web", "x-envoy-peer-metadata": "not base64 %%%",
                                          "x-envoy-peer-metadata-id": "sidecar~x"})
        found = requests_total(server)
    assert {(s["source_workload"], s["source_canonical_revision"], s["response_code"]) for s in found} == {
        ("unknown", "latest", "200")}


def test_client_falls_back_to_the_endpoint_metadata() -> None:
    """No sidecar answers (a plain app): the destination comes from istiod's endpoint metadata, without app/version."""
    with http_app() as app:
        metadata = endpoint_metadata("web", "default", {"app": "web", "version": "v1"})
        with ProxyUnderTest(client_config(web_service(80, app.addr, metadata))) as client:
            client.dst = (VIP, 80)
            get(client.outbound, "/", headers={"Host": "web"})
            (sample,) = requests_total(client)
    assert (sample["destination_workload"], sample["destination_canonical_service"],
            sample["destination_canonical_revision"], sample["destination_app"]) == ("web", "web", "v1", "unknown")


def test_a_tcp_connection_is_reported_when_it_closes() -> None:
    app = App("127.0.0.1", kind="echo")
    try:
        with ProxyUnderTest(make_config()) as p:
            p.dst = app.addr
            assert exchange(p.outbound, b"x" * 1000) == ("reply", b"x" * 1000)
            p.dst = ("127.0.0.1", 1)  # nothing listens there: UF
            assert exchange(p.outbound)[0] in ("reset", "closed")
            families = scrape(p)
    finally:
        app.close()
    opened = {s[1]["response_flags"]: s for s in families["istio_tcp_connections_opened"]}
    sent = {s[1]["response_flags"]: s[2] for s in families["istio_tcp_sent_bytes"]}
    received = {s[1]["response_flags"]: s[2] for s in families["istio_tcp_received_bytes"]}
    assert list(opened["-"][1]) == list(TCP_LABELS)
    assert opened["-"][1]["destination_service_name"] == "PassthroughCluster"
    assert opened["-"][1]["request_protocol"] == "tcp" and opened["-"][2] == 1
    assert sent["-"] == received["-"] == 1000
    assert "UF,URX" in opened


@pytest.mark.parametrize("value", [b"", b"%%%", base64.b64encode(b"[1]"), base64.b64encode(b'{"LABELS": 3}'),
                                   base64.b64encode(b"\xff\xfe"), base64.b64encode(b"[" * 5000)])
def test_garbage_peer_metadata_is_nobody(value: bytes) -> None:
    assert decode_peer(value) is NOBODY
