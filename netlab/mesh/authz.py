"""AuthorizationPolicy as istiod hands it to a workload's sidecar (pilot/pkg/security/authz/builder): the policies of
the workload's namespace whose selector matches it (or that have none), and the root namespace's without a
selector; each turned into the matcher lists the sidecar's RBAC filters evaluate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netlab.mesh.types import ROOT_NAMESPACE, AuthzPolicy, AuthzRule, Matchers

_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                  "remoteIpBlocks", "notRemoteIpBlocks")
_OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")


def _matchers(model: Any, fields: Sequence[str]) -> Matchers:
    values = model.model_dump(by_alias=True)
    return tuple((name, tuple(values[name])) for name in fields if values.get(name))


def applies(policy: Any, namespace: str, labels: dict[str, str]) -> bool:
    selector = policy.spec.selector
    if selector is None or not selector.match_labels:
        return policy.metadata.namespace in (namespace, ROOT_NAMESPACE)
    return policy.metadata.namespace == namespace and all(labels.get(k) == v
                                                          for k, v in selector.match_labels.items())


def authorization(namespace: str, labels: dict[str, str], resources: Sequence[Any]) -> tuple[AuthzPolicy, ...]:
    found = []
    for policy in resources:
        if policy.kind != "AuthorizationPolicy" or not applies(policy, namespace, labels):
            continue
        rules = tuple(AuthzRule(tuple(_matchers(f.source, _SOURCE_FIELDS) for f in rule.from_),
                                tuple(_matchers(t.operation, _OPERATION_FIELDS) for t in rule.to),
                                tuple((c.key, tuple(c.values), tuple(c.not_values)) for c in rule.when))
                      for rule in policy.spec.rules)
        found.append(AuthzPolicy(policy.metadata.name, policy.metadata.namespace, policy.spec.action, rules))
    return tuple(found)
