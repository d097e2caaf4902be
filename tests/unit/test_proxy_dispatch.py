"""The sidecar's routing from a snapshot (pure): listener and cluster by original destination, endpoint picking by
the load balancer of the Istio version, stats that follow reloads, and istioctl's proxy-config tables."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from test_mesh_build import FQDN, lab, snap

from netlab.mesh.proxyconfig import TABLES
from netlab.model.loader import parse_scenario
from netlab.plan import make_plan
from netlab.proxy.admin import config_dump
from netlab.proxy.dispatch import Dispatch
from netlab.proxy.lb import Host, LoadBalancer
from netlab.proxy.stats import CX_TOTAL, Stats


def vip(service: str = "reviews") -> str:
    return str(make_plan(parse_scenario(lab())).services[service].ip)


def test_outbound_destinations_take_the_service_cluster_or_the_catch_all() -> None:
    d = Dispatch(snap(lab()))
    route = d.outbound((vip(), 9080))
    assert (route.cluster, route.upstream, route.refused) == (f"outbound|9080||{FQDN}", None, None)
    picked = {route.pick()[0] for _ in range(20)}
    assert picked <= {("10.244.0.11", 9080), ("10.244.0.12", 9080)} and len(picked) == 2
    # An http port: sniffed; HTTP requests are routed by their Host header, other bytes follow the catch-all.
    http = d.outbound((vip(), 80))
    assert http.sniff and http.http is not None and (http.cluster, http.upstream) == ("PassthroughCluster",
                                                                                      (vip(), 80))
    for authority in (f"{vip()}:80", "reviews", "reviews.default.svc.cluster.local:80") * 2:  # looked up, then kept
        match = http.http.match(authority, "/any")
        assert match is not None and match.route.cluster == f"outbound|80||{FQDN}", authority
    assert http.http.match("ratings:80", "/").route.cluster == "outbound|80||ratings.default.svc.cluster.local"
    assert http.http.match("198.51.100.10", "/").route.cluster == "PassthroughCluster"  # allow_any
    assert http.http.resolve(f"outbound|80||{FQDN}", (vip(), 80)).lb is not None
    assert d.outbound(("198.51.100.10", 5000)).cluster == "PassthroughCluster"
    blocked = Dispatch(snap(lab(mode="REGISTRY_ONLY")))
    for orig in (("198.51.100.10", 5000), ("198.51.100.10", 80)):
        route = blocked.outbound(orig)
        assert (route.cluster, route.refused, route.flags) == ("BlackHoleCluster", "no_healthy_upstream", "UH")
    block_all = blocked.outbound(("198.51.100.10", 80)).http
    assert block_all is not None and block_all.match("198.51.100.10", "/").route.direct_response == 502


def test_inbound_ports_take_their_cluster() -> None:
    d = Dispatch(snap(lab(), "reviews-0"))
    assert (d.inbound(("10.244.0.11", 9080)).cluster, d.inbound(("10.244.0.11", 9080)).bind_ip) == (
        "inbound|9080||", "127.0.0.6")
    assert d.inbound(("10.244.0.11", 7777)).cluster == "InboundPassthroughClusterIpv4"
    # Routes are made once per destination and kept: an original-destination cluster's keep their own.
    passthrough = [d.inbound(("10.244.0.11", port)) for port in (7777, 7778, 7777)]
    assert [r.upstream for r in passthrough] == [("10.244.0.11", 7777), ("10.244.0.11", 7778), ("10.244.0.11", 7777)]


def test_round_robin_takes_each_host_in_turn() -> None:
    lb = LoadBalancer("ROUND_ROBIN", [Host(("a", 1)), Host(("b", 1)), Host(("c", 1))])
    picks = [lb.pick().addr[0] for _ in range(30)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}
    assert len(set(itertools.pairwise(picks))) == 3  # a fixed rotation


def test_least_request_prefers_the_less_busy_of_two_random_hosts() -> None:
    random.seed(7)
    busy, idle = Host(("busy", 1)), Host(("idle", 1))
    busy.active = 5
    lb = LoadBalancer("LEAST_REQUEST", [busy, idle])
    picks = Counter(lb.pick().addr[0] for _ in range(1000))  # type: ignore[union-attr]
    # Only a draw of busy twice (1 in 4) picks busy.
    assert 180 < picks["busy"] < 320 and picks["idle"] > 680


def test_unhealthy_hosts_are_skipped_until_panic() -> None:
    hosts = [Host(("a", 1)), Host(("b", 1), healthy=False), Host(("c", 1))]
    lb = LoadBalancer("RANDOM", hosts)
    assert {lb.pick().addr[0] for _ in range(200)} == {"a", "c"}  # type: ignore[union-attr]
    hosts[0].healthy = False
    lb.refresh()  # 1 of 3 healthy: under the 50% panic threshold, every host is used
    assert {lb.pick().addr[0] for _ in range(200)} == {"a", "b", "c"}  # type: ignore[union-attr]
    assert LoadBalancer("ROUND_ROBIN", []).pick() is None


def test_stats_follow_reloads_and_sum_workers_by_name() -> None:
    stats = Stats(workers=2, capacity=8)
    stats.register(["a", "b"])
    stats.row[stats.base("b") + CX_TOTAL] += 3
    stats.use_row(1)  # as a forked worker would, which then learns another cluster first
    stats.clusters.index = {}
    stats.register(["c", "b"])
    stats.row[stats.base("b") + CX_TOTAL] += 2
    assert stats.total("b", CX_TOTAL) == 5 and stats.total("c", CX_TOTAL) == 0
    assert 'envoy_cluster_upstream_cx_total{cluster_name="b"} 5' in stats.prometheus()


@pytest.mark.parametrize(("istio", "address", "route_header"), [
    ("1.10", "ADDRESS", ["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]),
    ("1.22", "ADDRESSES", ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]),
])
def test_proxy_config_tables_as_istioctl_prints_them(istio: str, address: str, route_header: list[str]) -> None:
    dump = config_dump(Dispatch(snap(lab(istio))))
    header, rows = TABLES["listeners"](dump)
    assert header == [address, "PORT", "MATCH", "DESTINATION"]
    assert [vip(), "9080", "ALL", f"Cluster: outbound|9080||{FQDN}"] in rows
    assert ["0.0.0.0", "15001", "Addr: *:15001", "Non-HTTP/Non-TCP"] in rows
    assert ["0.0.0.0", "80", "Trans: raw_buffer; App: http/1.1,h2c", "Route: 80"] in rows
    header, rows = TABLES["clusters"](dump)
    assert header == ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    assert [FQDN, "9080", "-", "outbound", "EDS", ""] in rows and ["BlackHoleCluster", "-", "-", "-", "STATIC",
                                                                   ""] in rows
    header, rows = TABLES["routes"](dump)
    assert header == route_header
    reviews = next(r for r in rows if r[0] == "80" and "reviews" in r[-3])
    assert reviews[-3].startswith("reviews, reviews.default") and reviews[-2] == "/*"
    header, rows = TABLES["endpoints"](dump)
    assert ["10.244.0.11:9080", "HEALTHY", "OK", f"outbound|9080||{FQDN}"] in rows
