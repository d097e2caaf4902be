"""Kubernetes + Istio manifests → a netlab scenario (pure): namespaces' revisions, the injector's choices, apps from
what containers run, services, and the problems for what netlab does not model."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.model.loader import parse_scenario
from netlab.model.manifests import container_app, import_manifests, parse_check, rev_version
from netlab.model.problems import ScenarioError


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(name: str, ns: str = "default", labels: dict | None = None, annotations: dict | None = None,
        **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "main", "image": "ubuntu:22.04", **container}]}}


def netcat(address: str) -> dict[str, Any]:
    return {"command": ["/bin/bash", "-c"],
            "args": [f"while true; do echo 'pong' | nc -l {address} 8080; done"], "ports": [{"containerPort": 8080}]}


def service(name: str, ns: str, selector: dict, **port: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": 8080, **port}]}}


def run(*docs: dict[str, Any], **kwargs: Any) -> Any:
    return import_manifests([(f"doc {i + 1}", d) for i, d in enumerate(docs)], **kwargs)


def test_two_revisions_of_netcat_servers_as_the_study_note_deploys_them() -> None:
    imported = run(
        namespace("rev-1-9", **{"istio.io/rev": "1-9"}), namespace("rev-1-10", **{"istio.io/rev": "1-10"}),
        pod("client", command=["sleep", "infinity"]),
        pod("netcat-lo", "rev-1-9", {"app": "lo"}, **netcat("127.0.0.1")),
        pod("netcat-eth0", "rev-1-10", {"app": "eth0"}, **netcat("$(ifconfig eth0 | grep 'inet ' | awk '{print $2}')")),
        service("lo", "rev-1-9", {"app": "lo"}), service("eth0", "rev-1-10", {"app": "eth0"}),
        checks=["client lo.rev-1-9:8080 pong", "client eth0.rev-1-10:8080 reset"], name="note")
    assert imported.problems == []
    pods = imported.scenario["pods"]
    assert pods["rev-1-9/netcat-lo"]["sidecar"] == {"istio": "1.9"}
    assert pods["rev-1-9/netcat-lo"]["app"] == {"kind": "pong", "listen": "127.0.0.1:8080", "reply": "pong"}
    assert container_app({"command": ["nc", "-l", "127.0.0.1", "8080"]}) == {  # sends nothing: the client sees EOF
        "kind": "pong", "listen": "127.0.0.1:8080", "reply": ""}
    assert pods["rev-1-10/netcat-eth0"]["app"]["listen"] == "eth0:8080"
    assert "sidecar" not in pods["client"] and "app" not in pods["client"]
    assert any("client" in n and "a client" in n for n in imported.notes)
    scenario = parse_scenario(imported.scenario)  # a valid scenario
    assert scenario.name == "note" and len(scenario.checks) == 2


def test_the_injectors_choice() -> None:
    imported = run(
        namespace("on", **{"istio-injection": "enabled"}), namespace("off", **{"istio-injection": "disabled",
                                                                               "istio.io/rev": "1-10"}),
        pod("a", "on"), pod("b", "off"), pod("c", labels={"istio.io/rev": "1-12"}),
        pod("d", "on", annotations={"sidecar.istio.io/inject": "false"}),
        pod("e", labels={"istio.io/rev": "canary"}), pod("g", "pinned", labels={"istio.io/rev": "1-12"}),
        namespace("pinned", **{"istio.io/rev": "1-10"}),
        pod("f", labels={"istio.io/rev": "1-10"}, annotations={
            "sidecar.istio.io/interceptionMode": "TPROXY", "traffic.sidecar.istio.io/excludeInboundPorts": "9090"}),
        istio="1.22")
    pods = imported.scenario["pods"]
    assert pods["on/a"]["sidecar"] == {"istio": "1.22"} and "sidecar" not in pods["off/b"]
    assert pods["c"]["sidecar"] == {"istio": "1.12"} and "sidecar" not in pods["on/d"]
    assert pods["pinned/g"]["sidecar"] == {"istio": "1.10"}  # the namespace's revision: its webhook matches first
    assert [str(p) for p in imported.problems] == ["Pod default/e: istio.io/rev 'canary' does not name an Istio "
                                                   "version; netlab reads revisions named like istioctl's "
                                                   "--revision 1-10 (Istio 1.10)"]
    flags = pods["f"]["sidecar"]["iptables_flags"]
    assert pods["f"]["sidecar"]["interception"] == "TPROXY" and flags[flags.index("-m") + 1] == "TPROXY"
    assert flags[flags.index("-d") + 1] == "15090,15021,15020,9090"


def test_apps_services_and_what_is_not_modelled() -> None:
    imported = run(
        pod("web", labels={"app": "web"}, image="nginx:1.25", ports=[{"containerPort": 80, "name": "http-web"}]),
        pod("api", labels={"app": "api"}, annotations={"netlab.io/app": '{kind: echo, listen: "0.0.0.0:9000"}'},
            image="example.com/api:1", ports=[{"containerPort": 9000}]),
        pod("shop", image="example.com/shop:1", ports=[{"containerPort": 8080}]),
        service("web", "default", {"app": "web"}) | {
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"port": 80, "name": "http", "targetPort": "http-web", "nodePort": 30080}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "x"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "netlab-apps", "labels": {
            "app.kubernetes.io/managed-by": "netlab"}}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
         "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}})
    pods, services = imported.scenario["pods"], imported.scenario["services"]
    assert pods["web"]["app"] == {"kind": "http", "listen": "0.0.0.0:80"}
    assert pods["api"]["app"] == {"kind": "echo", "listen": "0.0.0.0:9000"}
    assert services["web"] == {"selector": {"app": "web"}, "type": "NodePort",
                               "ports": [{"port": 80, "name": "http", "nodePort": 30080, "targetPort": 80}]}
    assert [i["kind"] for i in imported.scenario["istio"]] == ["VirtualService"]
    problems = [str(p) for p in imported.problems]
    assert any(p.startswith("Pod default/shop: spec.containers.0: netlab cannot tell") and "netlab.io/app" in p
               for p in problems)
    assert any("kind Ingress (networking.k8s.io/v1) is not modelled" in p for p in problems)
    assert not any("ConfigMap" in p for p in problems)  # netlab's own export
    assert len(problems) == 2


@pytest.mark.parametrize(("script", "listen"), [
    ("nc -l 127.0.0.1 8080", "127.0.0.1:8080"), ("nc -lk 9000", "0.0.0.0:9000"), ("ncat -l -p 7000", "0.0.0.0:7000"),
    ("nc -l $(hostname -i) 8080", "eth0:8080"),
])
def test_netcat_forms(script: str, listen: str) -> None:
    assert container_app({"command": ["sh", "-c", script]})["listen"] == listen  # type: ignore[index]


def test_checks_and_revisions() -> None:
    assert parse_check("a b:80 reset") == {"from": "a", "to": "b:80", "send": "ping", "expect": "reset"}
    assert parse_check("a b:80 hello there")["expect"] == {"reply": "hello there"}
    assert parse_check("a b:80 reply=reset")["expect"] == {"reply": "reset"}
    with pytest.raises(ValueError, match="did you mean 'reply'"):
        parse_check("a b:80 replied")
    with pytest.raises(ValueError, match="FROM TO EXPECT"):
        parse_check("a b:80")
    assert rev_version("1-10") == "1.10" and rev_version("1-22-3") == "1.22" and rev_version("stable") is None


def test_misspelt_keys_and_kinds_are_errors_with_a_suggestion() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replica": 2, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "containers": [{"name": "web", "image": "nginx", "port": [{"containerPort": 80}]}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"typ": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodeport": 30080}]}}
    typo = {"apiVersion": "v1", "kind": "Pods", "metadata": {"name": "p"}}
    problems = [str(p) for p in run(deployment, svc, typo).problems]
    assert "doc 1: Deployment default/web: spec.replica: unknown field (Kubernetes has no such key here); did you " \
           "mean 'replicas'?" in problems
    assert any("spec.template: spec.containers.0.port:" in p and "did you mean 'ports'?" in p for p in problems)
    assert any("spec.typ:" in p and "'type'" in p for p in problems)
    assert any("spec.ports.0.nodeport:" in p and "'nodePort'" in p for p in problems)
    assert "doc 3: Pods default/p: kind Pods: did you mean Pod?" in problems


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_KEYS = st.sampled_from(["name", "namespace", "labels", "annotations", "containers", "ports", "port", "containerPort",
                         "targetPort", "selector", "replicas", "template", "metadata", "spec", "image", "command",
                         "args", "type", "nodePort", "istio.io/rev", "netlab.io/app"])
_TREE = st.recursive(_LEAF, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(_KEYS, c, max_size=4)),
                     max_leaves=12)
_DOC = st.fixed_dictionaries({"apiVersion": st.sampled_from(["v1", "apps/v1"]), "metadata": _TREE, "spec": _TREE,
                              "kind": st.sampled_from(["Pod", "Deployment", "Service", "Namespace", "ReplicaSet"])})


@settings(max_examples=400, deadline=None)
@given(st.lists(_DOC, max_size=3))
def test_malformed_manifests_give_problems_not_crashes(docs: list[dict[str, Any]]) -> None:
    """Any shape of manifest ends as a scenario or as problems with their places, never as a Python error."""
    imported = import_manifests([(f"doc {i}", d) for i, d in enumerate(docs)])
    if not imported.problems:
        with contextlib.suppress(ScenarioError):  # a clear error is fine; a Python error is not
            parse_scenario(imported.scenario)
