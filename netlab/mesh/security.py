"""PeerAuthentication as istiod applies it to a workload (pilot/pkg/model/authentication.go,
pilot/pkg/security/authn/policy_applier.go; MESH-FACTS §6).

Three scopes, each the oldest policy of its kind (here: the first given): mesh-wide (the root namespace, no
selector), namespace-wide (the workload's namespace, no selector), and workload (its namespace, a selector
matching its labels). A narrower scope's mode replaces a wider one's unless it is UNSET; with nothing set the mode
is PERMISSIVE. portLevelMtls (workload policies only) sets a mode per workload port; UNSET there inherits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netlab.mesh.types import ROOT_NAMESPACE

PERMISSIVE, STRICT, DISABLE = "PERMISSIVE", "STRICT", "DISABLE"


@dataclass(frozen=True)
class MtlsPolicy:
    mode: str = PERMISSIVE  # the workload's mode (ports without a port-level mode, the passthrough chains)
    ports: dict[int, str] = field(default_factory=dict)  # workload port -> its own mode
    decided_by: str = ""  # "PeerAuthentication NS/NAME" that set the workload's mode, "" for the default
    port_decided_by: str = ""  # the workload policy that sets the port-level modes

    def for_port(self, port: int) -> str:
        return self.ports.get(port, self.mode)

    def source(self, port: int | None = None) -> str:
        """Which PeerAuthentication decided (for explanations)."""
        if port is not None and port in self.ports:
            return f"{self.port_decided_by} (portLevelMtls {port})"
        return self.decided_by or "no PeerAuthentication (PERMISSIVE by default)"


def mtls_policy(namespace: str, labels: dict[str, str], resources: Sequence[Any]) -> MtlsPolicy:
    policies = [r for r in resources if r.kind == "PeerAuthentication"]

    def first(where: str, selected: bool) -> Any:
        for p in policies:
            selector = p.spec.selector
            if p.metadata.namespace != where or (selector is not None and bool(selector.match_labels)) != selected:
                continue
            if not selected or all(labels.get(k) == v for k, v in selector.match_labels.items()):
                return p
        return None

    workload = first(namespace, True)
    mode, decided_by = PERMISSIVE, ""
    for policy in (first(ROOT_NAMESPACE, False), first(namespace, False), workload):
        if policy is not None and policy.spec.mtls is not None and policy.spec.mtls.mode != "UNSET":
            mode, decided_by = policy.spec.mtls.mode, f"PeerAuthentication {policy.metadata.namespace}/" \
                                                      f"{policy.metadata.name}"
    ports: dict[int, str] = {}
    port_decided_by = ""
    if workload is not None:
        port_decided_by = f"PeerAuthentication {workload.metadata.namespace}/{workload.metadata.name}"
        ports = {port: (mode if m.mode == "UNSET" else m.mode) for port, m in workload.spec.port_level_mtls.items()}
    return MtlsPolicy(mode, ports, decided_by, port_decided_by)
