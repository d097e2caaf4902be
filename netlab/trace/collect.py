"""Record everything around one probe (kernel edge): counters, conntrack, sockets, logs, peers, interfaces.

Before the probe: where each access log and peers file ends, the rule counters of every namespace with rules
(sidecar pods through their backend, the node through the system iptables) and every interface counter. While
the probe's connection is open: the socket tables of the pods on the path. After it: the same counters again,
conntrack everywhere, the access-log lines linked to the probe, the peers the apps appended.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from typing import Any

from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState
from netlab.kernel.iptables import system_backend
from netlab.kernel.sockets import list_sockets
from netlab.plan import NODE, ROUTER
from netlab.probe.connect import TlsClient, probe
from netlab.probe.facts import LabFacts
from netlab.probe.observed import Addr, ProbeResult
from netlab.probe.readers import (
    file_size,
    linked_lines,
    masqueraded,
    read_conntrack,
    read_counters,
    read_from,
)
from netlab.trace.capture import captures
from netlab.trace.ifaces import iface_deltas, read_ifaces
from netlab.trace.model import MemberInfo, Observations, RuleChange

EARLIER_PEERS_BYTES = 4096  # the tail of a peers file kept for connections accepted before the probe
SOCKET_SETTLE = 0.03  # after connect, the proxies' upstream connections need a moment to be established


def _counted(state: LabState, member: str) -> tuple[str, set[str], str] | None:
    """(netns, tables, backend) for the members whose rules are read; None for those without rules."""
    info = state.members[member]
    if info["kind"] == "node":
        return member_netns_path(state, member), {"nat"}, system_backend()
    sidecar = info.get("sidecar")
    if not sidecar or not sidecar.get("backend"):  # no sidecar, or a gateway's proxy without rules
        return None
    tables = {"nat", "mangle"} if sidecar.get("mode") == "TPROXY" else {"nat"}
    return member_netns_path(state, member), tables, sidecar["backend"]


def _counters(state: LabState) -> dict[str, dict[str, tuple[str, int]]]:
    out = {}
    for member in state.members:
        how = _counted(state, member)
        if how:
            out[member] = read_counters(*how)[0]
    return out


def _changes(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> list[RuleChange]:
    changes = []
    for ref, (spec, packets) in after.items():
        delta = packets - before.get(ref, (spec, 0))[1]
        if delta:
            table, _, rest = ref.partition("/")
            chain, _, pos = rest.rpartition("#")
            changes.append(RuleChange(table, chain, int(pos), spec, delta))
    return changes


def member_infos(state: LabState) -> dict[str, MemberInfo]:
    plan = state.lab_plan()
    infos = {}
    external_holder = ROUTER if plan.multi_node else NODE
    for name, m in state.members.items():
        node_iface = node = None
        if name in plan.pods:
            node_iface, node = plan.pods[name].node_veth, plan.pods[name].node
        elif name in plan.externals:
            node_iface, node = plan.external_bridge, external_holder
        sidecar = m.get("sidecar") or {}
        infos[name] = MemberInfo(name, m["kind"], m.get("ip"), sidecar.get("istio"), node_iface, node,
                                 sidecar.get("type") == "router")
    return infos


def trace_probe(state: LabState, facts: LabFacts, source: str, to: str, send: bytes,
                timeout: float = 3.0, capture_dir: str | None = None,
                capture_prefix: str = "trace", half_close: bool = True,
                tls: TlsClient | None = None) -> tuple[ProbeResult, Observations]:
    """Run one probe from `source` to `to` (NAME:PORT) and record what every namespace saw."""
    target = facts.resolve(to, source)
    members = member_infos(state)
    logs = {m: info["sidecar"]["access_log"] for m, info in state.members.items() if info.get("sidecar")}
    peers_files = {m: state.peers_file(m) for m in state.members}
    log_marks = {m: file_size(p) for m, p in logs.items()}
    peer_marks = {m: file_size(p) for m, p in peers_files.items()}
    pids = {m: info["pid"] for m, info in state.members.items()}
    involved = [m for m in dict.fromkeys([source, target.member]) if m]
    counters_before = _counters(state)
    ct_earlier = {m: [e.fields for e in read_conntrack(member_netns_path(state, m))] for m in state.members}
    ct_before = {m: {_ct_key(fields) for fields in entries} for m, entries in ct_earlier.items()}
    ifaces_before = {m: read_ifaces(pid) for m, pid in pids.items()}
    sockets: dict[str, list[dict[str, Any]]] = {}

    def sample(_local: Addr | None = None) -> None:
        time.sleep(SOCKET_SETTLE)
        for m in involved:
            rows = [dataclasses.asdict(r) for r in list_sockets(member_netns_path(state, m))]
            sockets[m] = [*sockets.get(m, []), *(r for r in rows if r not in sockets.get(m, []))]

    with ExitStack() as stack:
        pcaps: list[str] = []
        if capture_dir:
            pods = [(m, member_netns_path(state, m)) for m in involved if state.members[m]["kind"] == "pod"]
            pcaps = stack.enter_context(captures(pods, capture_dir, capture_prefix))
        netns = member_netns_path(state, source)
        result = probe(netns, (target.ip, target.port), send, timeout, facts.members[source].ip,
                       on_connected=sample, half_close=half_close, on_sent=None if half_close else sample, tls=tls)
    relevant = [m for m in involved if m in logs]
    nodes = [member_netns_path(state, m) for m, info in state.members.items() if info["kind"] == "node"]
    aliases = masqueraded(result.local, nodes) if target.kind == "nodeport" else ()
    lines = linked_lines(result.local, logs, log_marks, relevant, aliases)
    counters_after = _counters(state)
    obs = Observations(
        lab=state.lab, source=source, to=to,
        target={"kind": target.kind, "ip": target.ip, "port": target.port, "member": target.member,
                "member_port": target.member_port, "text": target.describe()},
        result=result.to_json(), members=members,
        rules={m: _changes(counters_before[m], after) for m, after in counters_after.items()},
        rules_read=sorted(counters_after),
        conntrack={m: [e.fields for e in read_conntrack(member_netns_path(state, m))
                       if _ct_key(e.fields) not in ct_before[m]] for m in state.members},
        sockets=sockets,
        ifaces={m: d for m, pid in pids.items() if (d := iface_deltas(ifaces_before[m], read_ifaces(pid)))},
        log_lines=[{"pod": ln.pod, "raw": ln.raw} for ln in lines],
        peers={m: lines_ for m, p in peers_files.items()
               if (lines_ := read_from(p, peer_marks[m]).splitlines())},
        conntrack_earlier={m: entries for m, entries in ct_earlier.items() if entries},
        peers_earlier={m: lines_ for m, p in peers_files.items() if (lines_ := _tail(p, peer_marks[m]))},
        captures=pcaps,
    )
    return result, obs


def _tail(path: str, end: int) -> list[str]:
    """The whole lines of the last EARLIER_PEERS_BYTES before `end`."""
    start = max(0, end - EARLIER_PEERS_BYTES)
    lines = read_from(path, start)[:end - start].splitlines()
    return lines[1:] if start else lines


def _ct_key(fields: dict[str, str]) -> tuple[str, ...]:
    """A connection's identity in one namespace: its original tuple."""
    return tuple(fields.get(k, "") for k in ("orig_src", "orig_sport", "orig_dst", "orig_dport"))
