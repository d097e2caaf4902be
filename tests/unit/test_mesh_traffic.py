"""VirtualService and DestinationRule through the control plane (pure): which resources bind, the routes and
clusters istiod would build from them, and the validation errors users get."""

from __future__ import annotations

import pytest
import yaml

from netlab.mesh.build import ProxySpec, build_snapshot
from netlab.mesh.registry import HTTP, MeshEndpoint, MeshPort, MeshService
from netlab.mesh.traffic import retry_policy
from netlab.mesh.types import Snapshot
from netlab.model.loader import parse_resources
from netlab.model.problems import ScenarioError

FQDN = "reviews.default.svc.cluster.local"
REVIEWS = MeshService(FQDN, "default", ("10.96.0.20",), (MeshPort("http", 9080, HTTP, 9080),), tuple(
    MeshEndpoint(f"10.244.0.{20 + i}", {9080: 9080}, {"app": "reviews", "version": v}, f"reviews-{v}")
    for i, v in enumerate(("v1", "v2", "v3"))))

RESOURCES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}, sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 50}
    retries: {attempts: 3, retryOn: "gateway-error,503"}
    timeout: 2s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}}
  - {name: v3, labels: {version: v3}}
"""


def snapshot(labels: dict[str, str], resources: str = RESOURCES, istio: str = "1.22") -> Snapshot:
    spec = ProxySpec("client", "client", "default", "10.244.0.10", istio, labels=labels)
    return build_snapshot(spec, [REVIEWS], {}, resources=parse_resources(list(yaml.safe_load_all(resources)),
                                                                         documents=True))


def test_subsets_become_clusters_with_their_endpoints_and_policies() -> None:
    s = snapshot({"app": "productpage"})
    clusters = {c.name: c for c in s.clusters}
    v2 = clusters[f"outbound|9080|v2|{FQDN}"]
    assert [e.address for e in v2.endpoints] == ["10.244.0.21"] and v2.destination_rule == "reviews.default"
    assert v2.max_connections == 1 and v2.lb_policy == "RANDOM"  # the subset's pool, the rule's balancer
    assert clusters[f"outbound|9080||{FQDN}"].lb_policy == "RANDOM"
    assert len(clusters[f"outbound|9080||{FQDN}"].endpoints) == 3


def test_virtual_service_routes_replace_the_default_route() -> None:
    (route_config,) = [r for r in snapshot({"app": "productpage"}).routes if r.name == "9080"]
    vhost = route_config.virtual_hosts[0]
    jason, rest = vhost.routes
    assert (jason.name, jason.cluster, jason.virtual_service) == ("jason", f"outbound|9080|v2|{FQDN}",
                                                                  "reviews.default")
    assert [(h.name, h.match.kind, h.match.value) for h in jason.match.headers] == [("end-user", "exact", "jason")]
    assert [(w.name, w.weight) for w in rest.weighted] == [(f"outbound|9080|v1|{FQDN}", 50),
                                                          (f"outbound|9080|v3|{FQDN}", 50)]
    assert rest.timeout == 2.0 and rest.retry is not None
    assert (rest.retry.retry_on, rest.retry.retriable_status_codes) == ("gateway-error,retriable-status-codes", (503,))


def test_source_labels_decide_per_sidecar() -> None:
    (route_config,) = [r for r in snapshot({"app": "ratings"}).routes if r.name == "9080"]
    assert [r.name for r in route_config.virtual_hosts[0].routes] == [""]  # the jason route is not for it


def test_a_gateway_only_virtual_service_leaves_sidecars_alone() -> None:
    gateway_only = RESOURCES.replace("  hosts: [reviews]\n", "  hosts: [reviews]\n  gateways: [bookinfo-gateway]\n")
    (route_config,) = [r for r in snapshot({}, gateway_only).routes if r.name == "9080"]
    assert [r.name for r in route_config.virtual_hosts[0].routes] == ["default"]


def test_retry_policies_as_istio_converts_them() -> None:
    assert retry_policy(None, retry_503=True).retriable_status_codes == (503,)  # type: ignore[union-attr]
    assert retry_policy(None, retry_503=False).retriable_status_codes == ()  # type: ignore[union-attr]

    class Retries:
        attempts, per_try_timeout, retry_on = 0, None, None

    assert retry_policy(Retries(), True) is None  # attempts 0: no retries


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: []}]}", "needs `route`"),
    ("kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a]}", "needs http or tcp"),
    ("kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{timeout: 3, route: [{destination: "
     "{host: a}}]}]}", "quote it"),
    ("kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{timeout: 3x, route: [{destination: "
     "{host: a}}]}]}", "not a duration"),
    ("kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{match: [{uri: {prefix: /, exact: /}}], "
     "route: [{destination: {host: a}}]}]}", "exactly one of exact, prefix, regex"),
    ("kind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, subsets: [{name: v1}, {name: v1}]}",
     "subset names repeat"),
    ("kind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, trafficPolicy: {loadBalancer: {}}}",
     "`simple` or `consistentHash`"),
])
def test_bad_resources_are_named(yaml_text: str, message: str) -> None:
    doc = yaml.safe_load("apiVersion: networking.istio.io/v1\n" + yaml_text)
    with pytest.raises(ScenarioError, match=message):
        parse_resources([doc], documents=True)


def test_a_tcp_route_picks_the_tcp_chains_cluster() -> None:
    tcp_service = MeshService("db.default.svc.cluster.local", "default", ("10.96.0.30",),
                              (MeshPort("tcp", 5432, "TCP", 5432),), REVIEWS.endpoints)
    resources = parse_resources([yaml.safe_load("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec: {hosts: [db], tcp: [{match: [{port: 5432}], route: [{destination: {host: db, subset: v2}}]}]}
""")], documents=True)
    spec = ProxySpec("client", "client", "default", "10.244.0.10", "1.22")
    s = build_snapshot(spec, [tcp_service], {}, resources=resources)
    (listener,) = [x for x in s.listeners if x.name == "10.96.0.30_5432"]
    assert listener.filter_chains[0].cluster == "outbound|5432|v2|db.default.svc.cluster.local"
