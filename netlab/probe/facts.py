"""What the lab knows about its members, as plain data the verdicts use to explain a path (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlab.model.schema import App, Scenario
from netlab.plan import make_plan

PASSTHROUGH_SOURCE = "127.0.0.6"


@dataclass(frozen=True)
class AppFacts:
    kind: str
    host: str | None  # the listen address with eth0 resolved to the pod IP; None when a command app has no listen
    port: int | None
    eth0: bool = False  # the scenario said eth0

    def accepts(self, ip: str, port: int) -> bool:
        """Would a connection to ip:port reach this listener?"""
        if self.host is None or port != self.port:
            return False
        return self.host == "0.0.0.0" or self.host == ip

    def describe(self) -> str:
        if self.host is None:
            return f"a {self.kind} app (no declared listen address)"
        if self.host == "0.0.0.0":
            return f"0.0.0.0:{self.port} (every address of the pod)"
        where = " (eth0, the pod IP)" if self.eth0 else (" (loopback)" if self.host.startswith("127.") else "")
        return f"{self.host}:{self.port}{where} only"


@dataclass(frozen=True)
class SidecarFacts:
    istio: str
    mode: str  # REDIRECT or TPROXY
    inbound_passthrough: bool | None
    declared_ports: tuple[int, ...]
    rule_edits: tuple[str, ...] = ()  # "delete nat/ISTIO_OUTPUT#1", ...

    @property
    def label(self) -> str:
        return f"{self.istio} sidecar" + (" (TPROXY)" if self.mode == "TPROXY" else "")


@dataclass(frozen=True)
class MemberFacts:
    name: str
    kind: str  # pod / external
    ip: str
    app: AppFacts | None = None
    sidecar: SidecarFacts | None = None


@dataclass(frozen=True)
class ServiceFacts:
    name: str
    ip: str
    port: int
    pod: str
    target_port: int


@dataclass(frozen=True)
class Target:
    text: str  # as written in the check
    kind: str  # service / pod / external / ip
    ip: str
    port: int
    member: str | None  # the pod or external host the connection ends at (after the service DNAT)
    member_port: int | None

    def describe(self) -> str:
        if self.kind == "service" and self.member:
            return f"service {self.text} ({self.ip}:{self.port} → {self.member}:{self.member_port})"
        if self.kind in ("pod", "external"):
            return f"{self.kind} {self.text} ({self.ip}:{self.port})"
        return f"{self.ip}:{self.port}" + (f" ({self.member})" if self.member else "")


@dataclass(frozen=True)
class LabFacts:
    lab: str
    members: dict[str, MemberFacts]
    services: dict[str, ServiceFacts] = field(default_factory=dict)
    node_addresses: tuple[str, ...] = ()  # the node's TEST-NET addresses: what external hosts see (masquerade)

    def resolve(self, to: str) -> Target:
        host, _, port_text = to.rpartition(":")
        port = int(port_text)
        if host in self.services:
            s = self.services[host]
            return Target(to, "service", s.ip, port, s.pod, s.target_port if port == s.port else port)
        if host in self.members:
            m = self.members[host]
            return Target(to, m.kind, m.ip, port, host, port)
        for s in self.services.values():
            if s.ip == host:
                return Target(to, "ip", host, port, s.pod, s.target_port if port == s.port else port)
        member = self.member_at(host)
        return Target(to, "ip", host, port, member, port if member else None)

    def member_at(self, ip: str) -> str | None:
        return next((m.name for m in self.members.values() if m.ip == ip), None)

    def who(self, ip: str) -> str:
        """Name an address the way the explanations need it."""
        if ip == PASSTHROUGH_SOURCE:
            return "127.0.0.6 (the sidecar's upstream source address)"
        if ip == "127.0.0.1":
            return "127.0.0.1 (loopback: the sidecar connected to localhost)"
        if ip in self.node_addresses:
            return f"{ip} (the node's address: pods are masqueraded on the way out)"
        member = self.member_at(ip)
        if member:
            return f"{ip} ({member}'s {'pod IP' if self.members[member].kind == 'pod' else 'address'})"
        return ip


def app_facts(app: App | None, ip: str) -> AppFacts | None:
    if app is None:
        return None
    if app.listen is None:
        return AppFacts(app.kind, None, None)
    eth0 = app.listen.host == "eth0"
    return AppFacts(app.kind, ip if eth0 else app.listen.host, app.listen.port, eth0)


def lab_facts(scenario: Scenario, lab: str, members: dict[str, dict[str, Any]]) -> LabFacts:
    """From the scenario, its plan and the lab state's members (addresses as the kernel got them)."""
    plan = make_plan(scenario, lab)
    facts: dict[str, MemberFacts] = {}
    for name, pod in scenario.pods.items():
        ip = members.get(name, {}).get("ip") or str(plan.pods[name].ip)
        sidecar = None
        if pod.sidecar is not None:
            declared = tuple(sorted({s.target_port for s in plan.services.values() if s.pod == name}))
            edits = tuple(f"delete {e.delete}" if e.delete else f"insert {e.insert} {e.rule}"
                          for e in pod.sidecar.rule_edits)
            sidecar = SidecarFacts(pod.sidecar.istio, pod.sidecar.interception, pod.sidecar.inbound_passthrough,
                                   declared, edits)
        facts[name] = MemberFacts(name, "pod", ip, app_facts(pod.app, ip), sidecar)
    for name, ext in scenario.external.items():
        facts[name] = MemberFacts(name, "external", str(ext.address), app_facts(ext.app, str(ext.address)))
    services = {n: ServiceFacts(n, str(s.ip), s.port, s.pod, s.target_port) for n, s in plan.services.items()}
    node = tuple(str(i.ip) for i in plan.node_external_addresses)
    return LabFacts(lab, facts, services, node)
