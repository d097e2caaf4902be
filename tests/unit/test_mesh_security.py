"""PeerAuthentication as istiod applies it: scopes and their precedence, UNSET inheriting, port-level modes."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.mesh.security import mtls_policy
from netlab.model.loader import parse_resources


def pa(name: str, namespace: str, mode: str | None = None, selector: dict[str, str] | None = None,
       ports: dict[int, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize(("policies", "mode", "port_9080", "decided_by"), [
    ([], "PERMISSIVE", "PERMISSIVE", ""),
    ([pa("mesh", "istio-system", "STRICT")], "STRICT", "STRICT", "PeerAuthentication istio-system/mesh"),
    ([pa("mesh", "istio-system", "STRICT"), pa("ns", "default", "DISABLE")], "DISABLE", "DISABLE",
     "PeerAuthentication default/ns"),
    ([pa("mesh", "istio-system", "STRICT"), pa("ns", "default", "UNSET")], "STRICT", "STRICT",
     "PeerAuthentication istio-system/mesh"),  # UNSET inherits
    ([pa("ns", "default", "STRICT"), pa("w", "default", None, {"app": "web"}, {9080: "DISABLE"})],
     "STRICT", "DISABLE", "PeerAuthentication default/ns"),
    ([pa("w", "default", "STRICT", {"app": "web"}, {9080: "UNSET"})], "STRICT", "STRICT",
     "PeerAuthentication default/w"),
    ([pa("other", "shop", "STRICT"), pa("x", "default", "STRICT", {"app": "db"})], "PERMISSIVE", "PERMISSIVE",
     ""),  # another namespace's, another workload's
    ([pa("first", "default", "STRICT"), pa("second", "default", "DISABLE")], "STRICT", "STRICT",
     "PeerAuthentication default/first"),  # the oldest of a scope
])
def test_precedence(policies: list[dict[str, Any]], mode: str, port_9080: str, decided_by: str) -> None:
    resources = parse_resources(policies, documents=True) if policies else []
    policy = mtls_policy("default", {"app": "web"}, resources)
    assert (policy.mode, policy.for_port(9080), policy.for_port(80), policy.decided_by) == (
        mode, port_9080, mode, decided_by)
