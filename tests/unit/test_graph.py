"""The service graph from sidecars' metric texts (netlab.graph, pure): each call counted once, whoever reported
it; plaintext TCP's unknown clients less what meshed clients reported; errors; SVG and text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from netlab.graph import build_graph, render_svg, render_text
from netlab.proxy.stats import HTTP_LABELS, TCP_LABELS, Stats


def peer(reporter: str, source: str, destination: str, service: str) -> dict[str, str]:
    return {"reporter": reporter, "source_workload": source, "source_workload_namespace": "default",
            "destination_workload": destination, "destination_workload_namespace": "default",
            "destination_service": f"{service}.default.svc.cluster.local", "destination_service_name": service,
            "destination_service_namespace": "default"}


def http(stats: Stats, labels: dict[str, str], code: str, times: int) -> None:
    values = {**labels, "request_protocol": "http", "response_code": code, "response_flags": "-"}
    for _ in range(times):
        stats.record_http(tuple(values.get(name, "unknown") for name in HTTP_LABELS), 3, 100, 200)


def tcp(stats: Stats, labels: dict[str, str], flags: str, times: int) -> None:
    values = {**labels, "request_protocol": "tcp", "response_flags": flags}
    for _ in range(times):
        stats.record_tcp(tuple(values.get(name, "unknown") for name in TCP_LABELS), 10, 10)


def test_each_call_once_unknown_callers_and_errors() -> None:
    client, web, db = Stats(capacity=8, series=8), Stats(capacity=8, series=8), Stats(capacity=8, series=8)
    http(client, peer("source", "client", "web", "web"), "200", 4)
    http(client, peer("source", "client", "web", "web"), "503", 1)
    http(web, peer("destination", "client", "web", "web"), "200", 4)  # the same requests, seen by the server
    http(web, peer("destination", "client", "web", "web"), "503", 1)
    http(web, peer("destination", "unknown", "web", "web"), "200", 2)  # from outside the mesh
    tcp(client, peer("source", "client", "db", "db"), "-", 3)
    tcp(db, peer("destination", "unknown", "db", "db"), "-", 5)  # plaintext TCP: every client unknown
    graph = build_graph(s.prometheus() for s in (client, web, db))
    edges = {(e.source, e.target, e.protocol): (e.requests, e.errors) for e in graph.edges.values()}
    web_svc, db_svc = "service:web.default.svc.cluster.local", "service:db.default.svc.cluster.local"
    assert edges == {
        ("workload:default/client", web_svc, "http"): (5, 1),
        (web_svc, "workload:default/web", "http"): (7, 1),
        ("unknown", web_svc, "http"): (2, 0),
        ("workload:default/client", db_svc, "tcp"): (3, 0),
        (db_svc, "workload:default/db", "tcp"): (5, 0),
        ("unknown", db_svc, "tcp"): (2, 0),
    }
    table = render_text(graph, "lab")
    assert "unknown (outside the mesh)  svc web" in table and "5 conn" in table and "1 (20%)" in table
    svg = ET.fromstring(render_svg(graph, "lab"))
    red = [line for line in svg.iter("{http://www.w3.org/2000/svg}line") if line.get("stroke") == "#c62828"]
    assert len(red) == 2  # the two edges carrying the 503


def test_no_traffic_says_so() -> None:
    assert "no traffic" in render_text(build_graph([Stats(capacity=4, series=4).prometheus()]), "lab")
