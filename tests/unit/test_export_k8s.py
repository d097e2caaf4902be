"""netlab export k8s (pure): every shipped scenario that has a Kubernetes form becomes manifests that validate
offline against Kubernetes' OpenAPI schemas (kubernetes-validate) and Istio's CRD schemas (tests/unit/data, from
Istio's crd-all.gen.yaml), with the checks as an overlay and a kubectl script; the rest is refused by name."""

from __future__ import annotations

import base64
import json
import py_compile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from netlab.export.k8s import APP_MODULES, export_k8s
from netlab.export.kcheck import judge
from netlab.model.loader import SCENARIO_DIR, load_scenario
from netlab.model.manifests import import_manifests

SHIPPED = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
NOT_EXPORTABLE = {"outbound-15001": "external", "registry-only": "external", "missing-127-0-0-6-rule": "rule_edits",
                  "ingress-to-pod": "gateways", "ingress-https": "gateways", "egress-gateway": "external",
                  "nodeport-traffic-policy": "external"}
KUBERNETES = "1.30.0"
CRDS = json.loads((Path(__file__).parent / "data" / "istio_crd_schemas.json").read_text())


def strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it: fields it does not declare are errors (kubectl's strict field
    validation), unless the schema keeps unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate(doc: dict[str, Any]) -> None:
    api, kind = doc["apiVersion"], doc["kind"]
    if api.startswith(("networking.istio.io/", "security.istio.io/")):
        assert kind in CRDS["versions"][api], f"{api} does not serve {kind}"
        jsonschema.validate({k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")},
                            strict({**CRDS["schemas"][kind], "properties": {
                                k: v for k, v in CRDS["schemas"][kind]["properties"].items() if k == "spec"}}))
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_exported_file_validates_or_the_scenario_is_refused_by_name(name: str) -> None:
    model, _ = load_scenario(name)
    exported = export_k8s(model)
    if name in NOT_EXPORTABLE:
        assert any(p.path.startswith(NOT_EXPORTABLE[name]) or NOT_EXPORTABLE[name] in p.path
                   for p in exported.problems), exported.problems
        return
    assert exported.problems == []
    documents = [d for file, text in exported.files.items() if file.endswith(".yaml") and file != "netlab.yaml"
                 for d in yaml.safe_load_all(text) if d]
    assert documents
    for doc in documents:
        validate(doc)
    kinds = {d["kind"] for d in documents}
    assert "ConfigMap" in kinds and kinds & {"Pod", "Deployment"}
    overlay = yaml.safe_load(exported.files["netlab.yaml"])
    assert overlay["name"] == model.name and len(overlay["checks"]) == len(model.checks)
    script = exported.files["checks.sh"]
    assert script.startswith("#!/bin/sh")
    assert script.count("\nrun ") + script.count("verdict SKIP ") == len(model.checks)


def test_revisions_namespaces_and_apps_of_lo_vs_eth0() -> None:
    exported = export_k8s(load_scenario("lo-vs-eth0")[0])
    docs = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
            for d in yaml.safe_load_all(exported.files["cluster.yaml"]) if d}
    assert docs["Namespace", "", "rev-1-9"]["metadata"]["labels"] == {"istio.io/rev": "1-9"}
    # lo.rev-1-9 is the Service lo in namespace rev-1-9, and the pod it selects lives there
    assert ("Service", "rev-1-9", "lo") in docs and ("Pod", "rev-1-9", "lo-1-9") in docs
    client = docs["Pod", "default", "client"]
    assert client["metadata"]["labels"] == {"sidecar.istio.io/inject": "false"}
    eth0 = docs["Pod", "rev-1-10", "eth0-1-10"]
    container = eth0["spec"]["containers"][0]
    assert '--listen "$POD_IP:8080"' in container["command"][2]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    assert json.loads(eth0["metadata"]["annotations"]["netlab.io/app"]) == {"kind": "pong", "listen": "eth0:8080"}


def test_the_app_code_shipped_to_the_cluster_compiles(tmp_path: Path) -> None:
    exported = export_k8s(load_scenario("inbound-127-0-0-6")[0])
    maps = [d for d in yaml.safe_load_all(exported.files["netlab-apps.yaml"]) if d]
    data = maps[0]["data"]
    assert sorted(data) == sorted(m.replace("/", "__") for m in APP_MODULES)
    for key, text in data.items():
        path = tmp_path / key
        path.write_text(text)
        py_compile.compile(str(path), doraise=True)


def test_the_export_reads_back_as_the_same_lab() -> None:
    """Round trip without a kernel: the exported objects import to the same pods, sidecars, apps and services."""
    model, _ = load_scenario("lo-vs-eth0")
    exported = export_k8s(model)
    documents = [(f, d) for f, text in exported.files.items() if f.endswith(".yaml") and f != "netlab.yaml"
                 for d in yaml.safe_load_all(text) if d]
    imported = import_manifests(documents, yaml.safe_load(exported.files["netlab.yaml"]))
    assert imported.problems == []
    pods = imported.scenario["pods"]
    assert pods["rev-1-9/lo-1-9"]["sidecar"] == {"istio": "1.9"} and "sidecar" not in pods["client"]
    assert pods["rev-1-10/eth0-1-10"]["app"] == {"kind": "pong", "listen": "eth0:8080"}
    assert set(imported.scenario["services"]) == {"rev-1-9/lo", "rev-1-9/eth0", "rev-1-9/any", "rev-1-10/lo",
                                                  "rev-1-10/eth0", "rev-1-10/any"}


def test_the_schemas_catch_a_wrong_field() -> None:
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"},
          "spec": {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "x", "subnet": "v1"}}]}]}}
    with pytest.raises(jsonschema.ValidationError, match="subnet"):
        validate(vs)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"prot": 1}]}})


def test_refused_with_their_place() -> None:
    problems = [str(p) for p in export_k8s(load_scenario("missing-127-0-0-6-rule")[0]).problems]
    assert problems == ["pods.broken.sidecar.rule_edits: rule_edits has no Kubernetes form (istio-init takes no "
                        "such setting from a pod); export a scenario without it"]


@pytest.mark.parametrize(("outcome", "data", "expect", "ok"), [
    ("reply", b"pong\n", {"reply": "pong"}, True), ("reset", b"", "reset", True), ("reply", b"pong", "reset", False),
    ("reply", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", {"status": 200}, True),
    ("reply", b"HTTP/1.1 503 Service Unavailable\r\n\r\n", {"status": 200}, False),
    ("reply", b"HTTP/1.1 200 OK\r\n\r\n{\"pod\": \"reviews-v2\"}", {"body_contains": "reviews-v2"}, True),
])
def test_the_cluster_probe_judges_as_netlab_does(outcome: str, data: bytes, expect: Any, ok: bool) -> None:
    assert judge(outcome, data, expect)[0] is ok
    assert base64.b64encode(b"ping").decode() == "cGluZw=="
