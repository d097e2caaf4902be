"""The RBAC filters of a server sidecar's inbound chains: AuthorizationPolicy evaluated as Istio's builder and Envoy's
RBAC filter do (pilot/pkg/security/authz/builder; envoy source/extensions/filters/common/rbac; MESH-FACTS §7).

Order: a matching DENY rule denies; with no ALLOW policy the request is allowed; otherwise an ALLOW rule must match
(`spec: {}` is an ALLOW policy without rules: it denies everything). AUDIT never decides. In a rule, any source, any
operation and every condition must match; in a source or an operation every field; in a field any value. Values
match exactly, by prefix ("abc*"), by suffix ("*abc") or anything ("*"). Principals and namespaces come from the
client's certificate: without mTLS they never match. A TCP connection has no method, path, host or header: an
ALLOW rule asking for one never matches it, a DENY rule is applied without those fields (so it denies more).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from netlab.mesh.types import AuthzPolicy, AuthzRule, Matchers
from netlab.mesh.workload import namespace_of

_HTTP_FIELDS = frozenset(("methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"))
DENIED_BODY = "RBAC: access denied"


@dataclass(frozen=True, slots=True)
class Attributes:
    """What the filter knows of a request (or, with method None, a TCP connection)."""

    principal: str  # the client's SPIFFE id without spiffe:// ("" in plaintext)
    source_ip: str
    destination_ip: str
    destination_port: int
    sni: str = ""
    method: str | None = None
    path: str = ""
    host: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return namespace_of(self.principal)


def principal_of(spiffe: str) -> str:
    return spiffe.removeprefix("spiffe://")


def _match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return bool(value)
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _in_blocks(ip: str, blocks: Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(b, strict=False) for b in blocks)


def _host_match(pattern: str, host: str) -> bool:
    """Hosts compare case-insensitively, with or without the port of the Host header."""
    host, pattern = host.lower(), pattern.lower()
    return _match(pattern, host) or _match(pattern, host.rsplit(":", 1)[0] if ":" in host else host)


def _field(name: str, values: Sequence[str], a: Attributes) -> bool:
    negated = name.startswith("not")
    base = name[3].lower() + name[4:] if negated else name
    if base == "principals":
        found = bool(a.principal) and any(_match(v, a.principal) for v in values)
    elif base == "namespaces":
        found = bool(a.namespace) and any(_match(v, a.namespace) for v in values)
    elif base in ("ipBlocks", "remoteIpBlocks"):
        found = _in_blocks(a.source_ip, values)
    elif base == "ports":
        found = str(a.destination_port) in values
    elif base == "methods":
        found = a.method in values
    elif base == "paths":
        found = any(_match(v, a.path.split("?", 1)[0]) for v in values)
    else:  # hosts
        found = any(_host_match(v, a.host) for v in values)
    return found != negated


def _condition_value(key: str, a: Attributes) -> str | None:
    if key.startswith("request.headers["):
        return a.headers.get(key[len("request.headers["):-1].lower())
    return {"source.ip": a.source_ip, "remote.ip": a.source_ip, "source.namespace": a.namespace,
            "source.principal": a.principal, "destination.ip": a.destination_ip,
            "destination.port": str(a.destination_port), "connection.sni": a.sni}[key]


def _all(matchers: Matchers, a: Attributes, tcp_deny: bool) -> bool:
    return all(_field(name, values, a) for name, values in matchers if not (tcp_deny and name in _HTTP_FIELDS))


def _http_only(rule: AuthzRule) -> bool:
    return any(name in _HTTP_FIELDS for group in (*rule.sources, *rule.operations) for name, _ in group) or any(
        key.startswith("request.headers[") for key, _, _ in rule.conditions)


def rule_matches(rule: AuthzRule, a: Attributes, deny: bool) -> bool:
    tcp = a.method is None
    if tcp and not deny and _http_only(rule):
        return False
    tcp_deny = tcp and deny
    if rule.sources and not any(_all(s, a, tcp_deny) for s in rule.sources):
        return False
    if rule.operations and not any(_all(o, a, tcp_deny) for o in rule.operations):
        return False
    for key, values, not_values in rule.conditions:
        if tcp_deny and key.startswith("request.headers["):
            continue
        value = _condition_value(key, a)
        if value is None or (values and not any(_match(v, value) for v in values)) or any(
                _match(v, value) for v in not_values):
            return False
    return True


def decide(policies: Sequence[AuthzPolicy], a: Attributes) -> str | None:
    """None when allowed; else Envoy's details: rbac_access_denied_matched_policy[ns[NS]-policy[NAME]-rule[N]]
    for a DENY rule that matched, [none] when no ALLOW rule did."""
    for policy in policies:
        if policy.action == "DENY":
            for i, rule in enumerate(policy.rules):
                if rule_matches(rule, a, deny=True):
                    return f"rbac_access_denied_matched_policy[ns[{policy.namespace}]-policy[{policy.name}]-rule[{i}]]"
    allow = [p for p in policies if p.action == "ALLOW"]
    if not allow or any(rule_matches(r, a, deny=False) for p in allow for r in p.rules):
        return None
    return "rbac_access_denied_matched_policy[none]"
