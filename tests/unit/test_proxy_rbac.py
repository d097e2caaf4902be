"""AuthorizationPolicy evaluation (netlab.proxy.rbac, pure), from policies as users write them: Istio's order
(DENY, then ALLOW, default allow), value matching, fields that need mTLS, and TCP connections against HTTP fields."""

from __future__ import annotations

from typing import Any

import pytest

from netlab.mesh.authz import authorization
from netlab.model.loader import parse_resources
from netlab.proxy.rbac import Attributes, decide

PRODUCTPAGE = "cluster.local/ns/default/sa/bookinfo-productpage"
NONE = "rbac_access_denied_matched_policy[none]"


def policies(*specs: dict[str, Any]) -> tuple:
    docs = [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": f"p{i}", "namespace": "default"}, "spec": spec} for i, spec in enumerate(specs)]
    return authorization("default", {"app": "details"}, parse_resources(docs, documents=True))


def http(principal: str = PRODUCTPAGE, method: str = "GET", path: str = "/details/0", **kw: Any) -> Attributes:
    return Attributes(principal, "10.244.0.5", "10.244.0.9", 9080, method=method, path=path, host="details:9080",
                      **kw)


TCP = Attributes(PRODUCTPAGE, "10.244.0.5", "10.244.0.9", 9080)


@pytest.mark.parametrize(("specs", "request_", "denied"), [
    ([], http(), None),  # no policy: allowed
    ([{}], http(), NONE),  # allow-nothing
    ([{"rules": [{}]}], http(), None),  # allow-all
    ([{"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}], http(method="POST"), NONE),
    ([{"rules": [{"from": [{"source": {"principals": [PRODUCTPAGE]}}]}]}], http(), None),
    ([{"rules": [{"from": [{"source": {"principals": [PRODUCTPAGE]}}]}]}], http(principal=""), NONE),  # no mTLS
    ([{"rules": [{"from": [{"source": {"principals": ["*"]}}]}]}], http(principal=""), NONE),
    ([{"rules": [{"from": [{"source": {"notPrincipals": ["*/sa/sleep"]}}]}]}], http(), None),
    ([{"rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]}], http(), None),
    ([{"rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]}], http(principal=""), NONE),
    ([{"rules": [{"from": [{"source": {"ipBlocks": ["10.244.0.0/24"]}}]}]}], http(principal=""), None),
    ([{"rules": [{"to": [{"operation": {"paths": ["/details/*"], "ports": ["9080"]}}]}]}], http(), None),
    ([{"rules": [{"to": [{"operation": {"paths": ["*/0"]}}]}]}], http(path="/details/0?x=1"), None),
    ([{"rules": [{"to": [{"operation": {"hosts": ["DETAILS"]}}]}]}], http(), None),  # case, port ignored
    ([{"rules": [{"when": [{"key": "request.headers[end-user]", "values": ["jason"]}]}]}],
     http(headers={"end-user": "jason"}), None),
    ([{"rules": [{"when": [{"key": "source.principal", "notValues": [PRODUCTPAGE]}]}]}], http(), NONE),
    # A DENY rule wins over an ALLOW that matches; its details name it. AUDIT decides nothing.
    ([{"rules": [{}]}, {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}],
     http(method="POST"), "rbac_access_denied_matched_policy[ns[default]-policy[p1]-rule[0]]"),
    ([{"action": "AUDIT", "rules": [{}]}], http(), None),
    # TCP: an ALLOW rule with HTTP fields never matches; a DENY rule drops them and so denies more.
    ([{"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}], TCP, NONE),
    ([{"rules": [{"to": [{"operation": {"ports": ["9080"]}}]}]}], TCP, None),
    ([{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}], TCP,
     "rbac_access_denied_matched_policy[ns[default]-policy[p0]-rule[0]]"),
])
def test_decisions(specs: list[dict[str, Any]], request_: Attributes, denied: str | None) -> None:
    assert decide(policies(*specs), request_) == denied


def test_selector_and_root_namespace_scope() -> None:
    docs = [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": name, "namespace": ns}, "spec": spec} for name, ns, spec in (
        ("mesh", "istio-system", {}), ("mine", "default", {"selector": {"matchLabels": {"app": "details"}}}),
        ("theirs", "default", {"selector": {"matchLabels": {"app": "reviews"}}}), ("other-ns", "shop", {}))]
    found = authorization("default", {"app": "details"}, parse_resources(docs, documents=True))
    assert [p.name for p in found] == ["mesh", "mine"]


@pytest.mark.parametrize(("spec", "problem"), [
    ({"action": "CUSTOM", "provider": {"name": "x"}}, "CUSTOM"),
    ({"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]}, "not one netlab evaluates"),
    ({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}, "RequestAuthentication"),
    ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]}, "not an IP address"),
])
def test_what_netlab_cannot_evaluate_is_refused(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(Exception, match=problem):
        policies(spec)
