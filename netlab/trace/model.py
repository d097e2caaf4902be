"""The trace as plain data: what was recorded around one probe (Observations) and the steps built from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuleChange:
    """A rule whose packet counter moved during the probe (nat counts the first packet of each connection)."""

    table: str
    chain: str
    position: int
    spec: str
    packets: int

    @property
    def ref(self) -> str:
        return f"{self.table}/{self.chain}#{self.position}"

    def describe(self) -> str:
        return f"{self.ref} {self.spec} (+{self.packets})"


@dataclass(frozen=True)
class MemberInfo:
    name: str
    kind: str  # pod / node / external
    ip: str | None
    sidecar: str | None = None  # the Istio version when the pod has a sidecar
    node_iface: str | None = None  # the node's end of this member's veth (or the external bridge)
    node: str | None = None  # the member holding node_iface: a pod's node, the external bridge's namespace
    router: bool = False  # its proxy is a gateway's (listens on its own ports, captures nothing)


@dataclass
class Observations:
    """Everything recorded around one probe; JSON round-trips so hop building is testable on recordings."""

    lab: str
    source: str  # the pod the probe ran in
    to: str  # as asked: NAME:PORT
    target: dict[str, Any]  # facts.Target fields: kind, ip, port, member, member_port
    result: dict[str, Any]  # ProbeResult.to_json()
    members: dict[str, MemberInfo]
    rules: dict[str, list[RuleChange]] = field(default_factory=dict)  # member -> counters that moved
    rules_read: list[str] = field(default_factory=list)  # members whose counters were read (no rules ≠ unread)
    conntrack: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # member -> entries new since the probe
    sockets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # member -> ss rows while connected
    ifaces: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # member -> iface -> [rx, tx] packets
    log_lines: list[dict[str, str]] = field(default_factory=list)  # linked access-log lines {pod, raw}, path order
    peers: dict[str, list[str]] = field(default_factory=dict)  # member -> "IP PORT" lines the app appended
    # What was there before the probe, for connections a proxy kept open and reused (HTTP connection pools):
    conntrack_earlier: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    peers_earlier: dict[str, list[str]] = field(default_factory=dict)  # the last lines of each peers file
    captures: list[str] = field(default_factory=list)  # pcap files written during the probe

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Observations:
        doc = dict(doc)
        doc["members"] = {k: MemberInfo(**v) for k, v in doc["members"].items()}
        doc["rules"] = {k: [RuleChange(**r) for r in v] for k, v in doc.get("rules", {}).items()}
        return cls(**doc)


@dataclass
class Step:
    """One hop of the path: where (namespace, interface, chain/rule), which 4-tuple, and what showed it."""

    kind: str  # connect / nat / rules / accept / proxy / route / outcome
    member: str  # the namespace it happened in
    actor: str  # the lifeline the step starts on
    target: str | None  # the lifeline an arrow goes to (None: a note on actor's lifeline)
    leg: int  # which TCP connection of the path (0: the probe's own)
    tuple: str  # "src:port → dst:port" as seen at this step
    summary: str
    observed: bool = True  # False: nothing was recorded for this step, it is shown so the gap is visible
    interface: str | None = None
    rules: list[str] = field(default_factory=list)  # "nat/ISTIO_OUTPUT#1 -o lo -s 127.0.0.6/32 -j RETURN (+1)"
    evidence: list[str] = field(default_factory=list)  # conntrack / socket / access-log / peers lines


@dataclass
class Trace:
    lab: str
    source: str
    to: str
    outcome: str
    reply: str | None
    participants: list[str]  # lifelines in order of first appearance
    steps: list[Step]
    counters: dict[str, list[str]] = field(default_factory=dict)  # member -> every rule counter that moved
    interfaces: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # member -> iface -> [rx, tx]
    unattributed: list[str] = field(default_factory=list)  # counter changes no connection of the probe explains
    captures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["hops"] = doc.pop("steps")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Trace:
        doc = dict(doc)
        doc["steps"] = [Step(**s) for s in doc.pop("hops")]
        return cls(**doc)
