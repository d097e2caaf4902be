"""The model's Kubernetes side: namespaces, labels, service accounts, replicas, named service ports, label
selectors, names resolved as Kubernetes DNS resolves them, and Istio resources given as users apply them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netlab.errors import EXIT_USAGE
from netlab.model.loader import load_scenario, parse_scenario
from netlab.model.names import Names
from netlab.model.problems import ScenarioError
from netlab.plan import make_plan

APP = {"kind": "pong", "listen": "0.0.0.0:9080"}


def problems(data: dict) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert caught.value.exit_code == EXIT_USAGE
    return [str(p) for p in caught.value.problems]


def bookinfo(**extra: object) -> dict:
    return {
        "name": "t",
        "namespaces": {"shop": {"labels": {"istio-injection": "enabled"}}},
        "pods": {
            "productpage": {"labels": {"app": "productpage"}, "serviceAccount": "bookinfo-productpage"},
            "reviews-v1": {"labels": {"app": "reviews", "version": "v1"}, "replicas": 3, "app": APP},
            "reviews-v2": {"labels": {"app": "reviews", "version": "v2"}, "app": APP},
            "shop/reviews-v1": {"labels": {"app": "reviews"}, "app": APP},
        },
        "services": {
            "reviews": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
            "shop/reviews": {"selector": {"app": "reviews"}, "ports": [{"name": "tcp-db", "port": 80,
                                                                        "targetPort": 9080}]},
        },
        **extra,
    }


def test_replicas_namespaces_and_label_selectors() -> None:
    plan = make_plan(parse_scenario(bookinfo()))
    assert list(plan.pods) == ["productpage", "reviews-v1-0", "reviews-v1-1", "reviews-v1-2", "reviews-v2",
                               "shop/reviews-v1"]
    pod = plan.pods["shop/reviews-v1"]
    assert (pod.name, pod.namespace, pod.workload, pod.netns) == ("reviews-v1", "shop", "reviews-v1",
                                                                 "netlab.t.reviews-v1.shop")
    assert plan.pods["reviews-v1-1"].labels == {"app": "reviews", "version": "v1"}
    assert plan.pods["productpage"].service_account == "bookinfo-productpage"
    assert plan.services["reviews"].endpoints == ("reviews-v1-0", "reviews-v1-1", "reviews-v1-2", "reviews-v2")
    shop = plan.services["shop/reviews"]
    assert shop.endpoints == ("shop/reviews-v1",) and shop.fqdn == "reviews.shop.svc.cluster.local"
    assert [(p.name, p.port, p.target_port) for p in shop.ports] == [("tcp-db", 80, 9080)]
    assert plan.namespaces == {"default": {}, "shop": {"istio-injection": "enabled"}}


def test_names_resolve_as_kubernetes_dns_does_from_each_namespace() -> None:
    names = Names.of_scenario(parse_scenario(bookinfo(external={"web": {"address": "198.51.100.10"}})))
    assert names.host("reviews", "default") == ("service", "reviews")
    assert names.host("reviews", "shop") == ("service", "shop/reviews")
    for fqdn in ("reviews.shop", "reviews.shop.svc", "reviews.shop.svc.cluster.local"):
        assert names.host(fqdn, "default") == ("service", "shop/reviews")
    assert names.host("reviews-v2", "default") == ("pod", "reviews-v2")
    assert names.host("reviews-v2", "shop") is None  # pods resolve only within their own namespace
    assert names.host("shop/reviews-v1", "default") == ("pod", "shop/reviews-v1")
    assert names.host("web", "shop") == ("external", "web")
    assert names.pod("productpage") == "productpage"
    assert names.pod("reviews-v1", "shop") == "shop/reviews-v1" == names.pod("shop/reviews-v1")


def test_an_ambiguous_pod_name_lists_the_candidates() -> None:
    names = Names.of_scenario(parse_scenario(bookinfo(pods={
        "client": {}, "shop/client": {}, "reviews-v1": {"labels": {"app": "reviews"}, "app": APP},
        "shop/reviews-v1": {"labels": {"app": "reviews"}, "app": APP}})))
    with pytest.raises(LookupError, match="'client' is ambiguous: it is client, shop/client"):
        names.pod("client")


def test_each_namespace_has_its_own_hosts_file() -> None:
    plan = make_plan(parse_scenario(bookinfo()))

    def hosts(namespace: str) -> dict[str, str]:
        return {n: ip for ip, names in (line.split("\t") for line in plan.hosts_file(namespace).splitlines())
                for n in names.split()}

    default, shop = hosts("default"), hosts("shop")
    assert default["reviews"] == str(plan.services["reviews"].ip) == shop["reviews.default"]
    assert shop["reviews"] == str(plan.services["shop/reviews"].ip) == default["reviews.shop.svc.cluster.local"]
    assert "reviews-v2" in default and "reviews-v2" not in shop


def test_model_problems_name_their_paths() -> None:
    found = problems({
        "name": "t",
        "pods": {"a": {"namespace": "nowhere", "replicas": 0, "labels": {"version": 1}},
                 "b": {"serviceAccount": "Bad_Name"}, "x/c": {"namespace": "y"},
                 "dup": {"replicas": 2}, "dup-0": {}},
        "services": {"s": {"selector": {"app": "a"}, "port": 80, "ports": [{"port": 81}]},
                     "m": {"selector": ["a", "b"], "ports": [{"port": 80}, {"port": 81}]},
                     "t": {"selector": "a", "ports": [{"name": "udp-dns", "port": 53, "protocol": "UDP"}]}},
    })
    text = "\n".join(found)
    assert "pods.a.replicas: Input should be greater than or equal to 1" in text
    assert 'pods.a.labels.version: 1 is an integer in YAML, not text; quote it: "1"' in text
    assert "pods.b.serviceAccount: 'Bad_Name' is not a service account name" in text
    assert "services.s: give either 'port: N' (one unnamed port) or 'ports:" in text
    assert "services.m.selector: a selector is a label map (e.g. {app: reviews}) or the name of a pod" in text
    assert "services.t.ports.0.protocol:" in text and "'TCP'" in text
    found = problems({"name": "t", "pods": {"a": {"namespace": "nowhere"}, "x/c": {"namespace": "y"},
                                            "dup": {"replicas": 2}, "dup-0": {}}})
    assert found == [
        "pods.a: namespace 'nowhere' is not declared; add it under namespaces: (nowhere: {}), as `kubectl create "
        "namespace` would be needed on a cluster",
        "pods.x/c.namespace: 'y' contradicts the key 'x/c'; give the namespace once",
        "pods.x/c: namespace 'y' is not declared; add it under namespaces: (y: {}), as `kubectl create namespace` "
        "would be needed on a cluster",
        "pods.dup-0: pod 'dup-0' exists twice in namespace 'default' (also from pods.dup; replicas are named "
        "NAME-0, NAME-1, ...); rename one",
    ]


def test_trailing_newlines_and_booleans_are_not_names_or_ports() -> None:
    found = problems({"name": "rel-nl\n", "pods": {"web\n": {}},
                      "services": {"s": {"selector": "web", "port": True}}})
    assert any(p.startswith("name: 'rel-nl\n' is not a lab name") for p in found)
    assert any(p.startswith("pods: pod name 'web\\n'") for p in found)
    assert any(p.startswith("services.s.port: Input should be a valid integer") for p in found)


SERVICE_ENTRY = {
    "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
    "metadata": {"name": "ext-web", "namespace": "default"},
    "spec": {"hosts": ["web.example"], "addresses": ["198.51.100.10"], "location": "MESH_EXTERNAL",
             "resolution": "STATIC", "ports": [{"number": 80, "name": "tcp-web", "protocol": "TCP"}],
             "endpoints": [{"address": "198.51.100.10"}]},
}


def test_istio_resources_inline_and_as_further_documents(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        meshConfig: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
        pods: {client: {sidecar: {istio: "1.22"}}}
        istio:
          - apiVersion: networking.istio.io/v1beta1
            kind: Sidecar
            metadata: {name: default, namespace: istio-system}
            spec: {egress: [{hosts: ["./*", "istio-system/*"]}]}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext-web}
        spec: {hosts: [web.example], ports: [{number: 80, name: tcp-web}], resolution: DNS}
        """))
    scenario, _ = load_scenario(str(path))
    assert [r.kind for r in scenario.istio] == ["Sidecar", "ServiceEntry"]
    assert scenario.mesh_config.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    assert scenario.istio[1].metadata.namespace == "default"


def test_istio_resource_problems_name_their_paths(tmp_path: Path) -> None:
    bad_entry = {**SERVICE_ENTRY, "spec": {**SERVICE_ENTRY["spec"], "resolution": "NONE", "hostz": []}}
    found = problems({"name": "t", "pods": {"c": {}}, "istio": [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualServise", "metadata": {"name": "x"}, "spec": {}},
        {"apiVersion": "networking.istio.io/v2", "kind": "Sidecar", "metadata": {"name": "s"}, "spec": {}},
        bad_entry, SERVICE_ENTRY, {"metadata": {"name": "x"}},
        {**SERVICE_ENTRY, "metadata": {"name": "other", "namespace": "nowhere"}},
    ]})
    assert found[0] == ("istio.0: kind 'VirtualServise' is not modelled by netlab; Istio resources it knows: "
                        "ServiceEntry, Sidecar, VirtualService, DestinationRule, Gateway, PeerAuthentication, "
                        "AuthorizationPolicy")
    assert found[1].startswith("istio.1.apiVersion: Input should be 'networking.istio.io/v1'")
    assert found[2] == "istio.2.spec.hostz: unknown key 'hostz' (unknown keys are errors); did you mean 'hosts'?"
    assert found[3].startswith("istio.4: missing 'kind'")
    found = problems({"name": "t", "pods": {"c": {}}, "istio": [SERVICE_ENTRY, SERVICE_ENTRY,
                                                                {**SERVICE_ENTRY, "metadata": {"name": "o",
                                                                                              "namespace": "nope"}}]})
    assert found == [
        "istio.1.metadata.name: ServiceEntry default/ext-web is also istio.0; names are unique per kind and "
        "namespace",
        "istio.2.metadata.namespace: namespace 'nope' is not declared; add it under namespaces: (nope: {}), as "
        "`kubectl create namespace` would be needed on a cluster",
    ]
    path = tmp_path / "s.yaml"
    path.write_text("name: t\npods: {c: {}}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                    "metadata: {name: s}\nspec: {egress: [{hosts: [nohost]}]}\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    assert str(caught.value.problems[0]).startswith("document 2.spec.egress.0.hosts: 'nohost' is not NAMESPACE/HOST")


def test_service_entry_rules_istio_validation_enforces() -> None:
    static_without_endpoints = {**SERVICE_ENTRY, "spec": {**SERVICE_ENTRY["spec"], "endpoints": []}}
    [problem] = problems({"name": "t", "pods": {"c": {}}, "istio": [static_without_endpoints]})
    assert problem == "istio.0.spec: resolution STATIC needs endpoints (or a workloadSelector)"
