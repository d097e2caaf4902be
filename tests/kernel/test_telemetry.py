"""Istio's metrics and the service graph on a real lab: the shipped Bookinfo scenario's pods and sidecars, requests
from the client pod through productpage to reviews, details and ratings; every sidecar scraped on 15090 as
Prometheus would, and `netlab graph` drawn from them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import lab_up, netlab, write_scenario
from prometheus_client.parser import text_string_to_metric_families

from netlab.engine.members import member_netns_path
from netlab.engine.mesh import stats_text
from netlab.engine.state import LabState
from netlab.probe.connect import probe

SCENARIO = Path(__file__).parents[2] / "scenarios" / "bookinfo-routing.yaml"
REQUESTS = 6


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    text = SCENARIO.read_text().replace("name: bookinfo-routing", f"name: graph-{secrets.token_hex(3)}", 1)
    text = text[:text.index("\nchecks:")] + "\n"  # the pods, services and DestinationRule, no checks
    with lab_up(write_scenario(tmp_path_factory.mktemp("graph"), text)) as state:
        ip = state.info["services"]["productpage"]["ip"]
        for _ in range(REQUESTS):
            result = probe(member_netns_path(state, "client"), (ip, 9080),
                           b"GET /productpage HTTP/1.1\r\nhost: productpage:9080\r\nconnection: close\r\n\r\n",
                           5.0, own_ip="", half_close=False)
            assert result.data.startswith(b"HTTP/1.1 200"), result
        yield state


def requests(state: LabState, member: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(stats_text(state, member))
            for s in family.samples if s.name == "istio_requests_total"]


def test_the_server_sidecar_knows_its_meshed_client(lab: LabState) -> None:
    (labels, value), = [r for r in requests(lab, "productpage-v1") if r[0]["reporter"] == "destination"]
    assert value == REQUESTS
    assert (labels["source_workload"], labels["destination_workload"], labels["destination_service"],
            labels["destination_version"], labels["connection_security_policy"], labels["source_principal"]) == (
        "client", "productpage-v1", "productpage.default.svc.cluster.local", "v1", "mutual_tls",
        "spiffe://cluster.local/ns/default/sa/default")  # auto mTLS between the two sidecars


def test_the_client_sidecar_reports_where_each_request_went(lab: LabState) -> None:
    to_reviews = {labels["destination_workload"]: value for labels, value in requests(lab, "productpage-v1")
                  if labels["reporter"] == "source" and labels["destination_service_name"] == "reviews"}
    assert set(to_reviews) <= {"reviews-v1", "reviews-v2", "reviews-v3"} and sum(to_reviews.values()) == REQUESTS


def test_graph_draws_the_bookinfo_calls(lab: LabState, tmp_path: Path) -> None:
    svg = tmp_path / "graph.svg"
    result = netlab("graph", lab.lab, "--json", "--svg", str(svg), check=True)
    graph = json.loads(result.stdout)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert edges[("workload:default/client", "service:productpage.default.svc.cluster.local")]["requests"] == REQUESTS
    assert edges[("service:productpage.default.svc.cluster.local", "workload:default/productpage-v1")][
        "requests"] == REQUESTS
    assert edges[("workload:default/productpage-v1", "service:details.default.svc.cluster.local")]["requests"] == \
        REQUESTS
    answered = sum(e["requests"] for (source, target), e in edges.items()
                   if source == "service:reviews.default.svc.cluster.local")
    assert answered == REQUESTS and not any(e["errors"] for e in graph["edges"])
    assert "unknown" not in {n["id"] for n in graph["nodes"]}  # every caller is in the mesh
    assert "productpage-v1 v1" in svg.read_text()
    table = netlab("graph", lab.lab, check=True).stdout
    assert "svc reviews" in table and "client" in table


def test_trace_shows_the_mtls_hop(tmp_path_factory: pytest.TempPathFactory) -> None:
    shipped = Path(__file__).parents[2] / "scenarios" / "mtls-strict.yaml"
    text = shipped.read_text().replace("name: mtls-strict", f"name: tls-{secrets.token_hex(3)}", 1)
    text = text[:text.index("\nchecks:")] + "\n"
    with lab_up(write_scenario(tmp_path_factory.mktemp("tls"), text)) as state:
        result = netlab("trace", state.lab, "--from", "productpage-v1", "--to", "ratings:9080", "--http",
                        "/ratings/0", check=True)
    assert "mTLS terminated (SNI outbound_.9080_._.ratings.default.svc.cluster.local" in result.stdout
