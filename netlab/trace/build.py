"""Build a probe's path from recorded observations (pure).

The path is a chain of TCP connections ("legs"): the probe's own, then one per proxy that forwarded it. Legs come
from the probe socket and the linked access-log lines (each line's upstream local address opens the next leg);
conntrack entries say where each leg was rewritten (a node's DNAT and masquerade, a pod's REDIRECT), which nodes it
crossed (each node's entry continues from the previous one's rewritten tuple) and where it ended; rule walks
rebuilt from counter deltas are attributed to the leg whose conntrack shows their effect; socket tables and the
app's peers file say who accepted. Whatever is missing is reported as not observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlab.probe.observed import Addr, LogLine, fmt_addr, parse_addr, parse_log_line
from netlab.trace.model import Observations, Step, Trace
from netlab.trace.walk import TARGETS, Walk, walks

NODE = "_node"
INGRESS = ("PREROUTING", "INPUT")


@dataclass
class Leg:
    index: int
    origin: str  # member the connection was opened in
    actor: str  # lifeline that opened it
    src: Addr | None
    dst: Addr | None
    line: LogLine | None = None  # the access-log line of the proxy that opened it (legs after the first)
    dest: str | None = None  # member it ended in
    dest_addr: Addr | None = None  # its destination after any DNAT
    seen_src: Addr | None = None  # its source as the destination saw it (after masquerade)
    hops: list[str] = field(default_factory=list)  # the nodes it crossed, in order
    src_from_conntrack: bool = False  # the access log had no upstream local address
    local_redirect: int | None = None  # REDIRECT port in the origin (OUTPUT capture)
    dest_redirect: int | None = None  # REDIRECT port in the destination (inbound capture)
    ct: dict[str, dict[str, str]] = field(default_factory=dict)  # member -> conntrack entry of this leg
    walks: dict[str, list[Walk]] = field(default_factory=dict)  # "member/phase" -> walks attributed here


def _fa(addr: Addr | None) -> str:
    return fmt_addr(addr) if addr else "?"


def app_actor(member: str, obs: Observations) -> str:
    return f"{member} app" if obs.members[member].kind != "external" else f"{member} (external)"


def sidecar_actor(member: str, obs: Observations | None = None) -> str:
    """A proxy's lifeline: a pod's sidecar, or a gateway's router."""
    router = obs is not None and member in obs.members and obs.members[member].router
    return f"{member} {'gateway' if router else 'sidecar'}"


def is_proxy(actor: str) -> bool:
    return actor.endswith((" sidecar", " gateway"))


def node_actor(member: str = NODE) -> str:
    """A node's lifeline: "node" in a one-node lab, the node's name otherwise."""
    return "node" if member == NODE else member


def is_node(obs: Observations, member: str) -> bool:
    return member in obs.members and obs.members[member].kind == "node"


def node_of(obs: Observations, member: str) -> str | None:
    """The member holding the node end of `member`'s link (recordings without it: the one node)."""
    info = obs.members.get(member)
    return (info.node if info else None) or (NODE if NODE in obs.members else None)


def _ct_addr(entry: dict[str, str], side: str, end: str) -> Addr:
    port = "sport" if end == "src" else "dport"
    return entry[f"{side}_{end}"], int(entry[f"{side}_{port}"])


def find_ct(obs: Observations, member: str, src: Addr | None, dst_ip: str | None = None) -> dict[str, str] | None:
    """The member's conntrack entry whose original source is src (and original destination dst_ip, if given)."""
    if src is None:
        return None
    # New entries first; then those from before the probe (a pooled upstream connection the proxy reused).
    for entry in (*obs.conntrack.get(member, []), *obs.conntrack_earlier.get(member, [])):
        if _ct_addr(entry, "orig", "src") == src and (dst_ip is None or entry["orig_dst"] == dst_ip):
            return entry
    return None


def ct_text(member: str, e: dict[str, str]) -> str:
    return (f"conntrack in {member}: {e['orig_src']}:{e['orig_sport']} → {e['orig_dst']}:{e['orig_dport']}, reply "
            f"{e['reply_src']}:{e['reply_sport']} → {e['reply_dst']}:{e['reply_dport']}"
            + (f" ({e['state']})" if e.get("state") else ""))


def member_at(obs: Observations, ip: str) -> str | None:
    return next((m.name for m in obs.members.values() if m.ip == ip and m.kind != "node"), None)


def is_local(obs: Observations, member: str, ip: str) -> bool:
    return ip.startswith("127.") or obs.members[member].ip == ip


# --- legs -----------------------------------------------------------------------------------------------------


def make_legs(obs: Observations, lines: list[LogLine]) -> list[Leg]:
    legs = [Leg(0, obs.source, app_actor(obs.source, obs), parse_addr(obs.result.get("local") or "-"),
                parse_addr(obs.result["remote"]))]
    for line in lines:
        legs.append(Leg(len(legs), line.pod, sidecar_actor(line.pod, obs), line.addr("upstream_local"),
                        line.addr("upstream_host"), line=line))
    taken = {leg.src for leg in legs if leg.src}
    for leg in legs:
        guess_src_from_conntrack(obs, leg, taken)
        locate(obs, leg)
    return legs


def guess_src_from_conntrack(obs: Observations, leg: Leg, taken: set[Addr]) -> None:
    """A proxy that failed its upstream may log no local address; the new conntrack entry toward the upstream
    (entries that existed before the probe are not recorded) still names it, when there is exactly one."""
    if leg.src is not None or leg.dst is None:
        return
    found = [_ct_addr(e, "orig", "src") for e in obs.conntrack.get(leg.origin, [])
             if _ct_addr(e, "orig", "dst") == leg.dst and _ct_addr(e, "orig", "src") not in taken]
    if len(found) == 1:
        leg.src = found[0]
        leg.src_from_conntrack = True


def locate(obs: Observations, leg: Leg) -> None:
    """Where the leg went: conntrack in its origin, then the node, then its destination."""
    if leg.dst is None:
        return
    here = find_ct(obs, leg.origin, leg.src)
    if here:
        leg.ct[leg.origin] = here
        reply_src = _ct_addr(here, "reply", "src")
        if reply_src != leg.dst and is_local(obs, leg.origin, reply_src[0]):
            leg.local_redirect = reply_src[1]  # OUTPUT → REDIRECT: the local proxy answers
            leg.dest, leg.dest_addr, leg.seen_src = leg.origin, reply_src, leg.src
            return
    if is_local(obs, leg.origin, leg.dst[0]):
        leg.dest, leg.dest_addr, leg.seen_src = leg.origin, leg.dst, leg.src
        return
    # Node after node: each one's entry starts from the tuple the previous one rewrote it to.
    src, dst = leg.src, leg.dst
    nodes = [n for n in obs.members if is_node(obs, n)]
    while True:
        hop = next(((n, e) for n in nodes if n not in leg.hops and (e := find_ct(obs, n, src, dst[0]))), None)
        if hop is None:
            break
        leg.hops.append(hop[0])
        leg.ct[hop[0]] = hop[1]
        src, dst = _ct_addr(hop[1], "reply", "dst"), _ct_addr(hop[1], "reply", "src")
    leg.dest_addr, leg.seen_src = dst, src
    leg.dest = member_at(obs, leg.dest_addr[0])
    if leg.dest and leg.dest != leg.origin:
        first = node_of(obs, leg.origin)
        if not leg.hops and first is not None:
            leg.hops.append(first)  # pods and external hosts reach each other only through a node
        there = find_ct(obs, leg.dest, leg.seen_src, leg.dest_addr[0])
        if there:
            leg.ct[leg.dest] = there
            reply_src = _ct_addr(there, "reply", "src")
            if reply_src[1] != leg.dest_addr[1]:
                leg.dest_redirect = reply_src[1]


# --- rule walks → legs ----------------------------------------------------------------------------------------


def _rewritten(leg: Leg, member: str) -> bool:
    e = leg.ct.get(member)
    return bool(e) and (_ct_addr(e, "reply", "src") != _ct_addr(e, "orig", "dst")
                        or _ct_addr(e, "reply", "dst") != _ct_addr(e, "orig", "src"))


def _matches(walk: Walk, leg: Leg, member: str, node: bool) -> bool:
    """Does the leg's conntrack entry in member show what the walk's last rule did?"""
    e = leg.ct.get(member)
    port = walk.redirect_port()
    if port is not None:
        if walk.verdict == "TPROXY":  # TPROXY does not NAT: conntrack shows no rewrite to match on
            return True
        return bool(e) and int(e["reply_sport"]) == port
    if walk.dnat_to() is not None:
        return bool(e) and f"{e['reply_src']}:{e['reply_sport']}" == walk.dnat_to()
    if walk.verdict in ("MASQUERADE", "SNAT"):
        return bool(e) and _ct_addr(e, "reply", "dst") != _ct_addr(e, "orig", "src")
    return not _rewritten(leg, member) or node


def attribute(obs: Observations, legs: list[Leg]) -> list[str]:
    """Give each walk to the one leg it can belong to; return the walks that fit none or several."""
    left: list[str] = []
    for member, changes in obs.rules.items():
        for walk in walks(changes):
            node = is_node(obs, member)
            phase = "node" if node else ("in" if walk.root in INGRESS else "out")
            if node:
                candidates = [leg for leg in legs if member in leg.hops]
            elif phase == "out":
                candidates = [leg for leg in legs if leg.origin == member]
            else:
                candidates = [leg for leg in legs if leg.dest == member and
                              (leg.origin != member or walk.table != "nat")]
                if walk.verdict == "TPROXY":  # only what arrives through eth0 is diverted to the proxy
                    candidates = [leg for leg in candidates if leg.origin != member]
            fits = [leg for leg in candidates if _matches(walk, leg, member, node)]
            # One leg whose conntrack shows the walk's effect; or the only candidate when conntrack has nothing
            # to say about it either way. A walk whose effect no leg shows stays unattributed.
            lone = len(candidates) == 1 and member not in candidates[0].ct
            chosen = fits if len(fits) == 1 else candidates if lone else []
            if chosen:
                chosen[0].walks.setdefault(f"{member}/{phase}", []).append(walk)
            else:
                legs_text = ", ".join(str(leg.index) for leg in (fits or candidates)) or "none"
                left.append(f"{member}: {' → '.join(walk.describe())} (connections that fit: {legs_text})")
    return left


def walk_rules(walk_list: list[Walk]) -> list[str]:
    out: list[str] = []
    for walk in walk_list:
        out += walk.describe()
        last = walk.verdict
        if last not in TARGETS and last != "-":
            out.append(f"(nothing in {last} matched: back to {walk.root}, on to its policy)")
    return out


def walk_summary(walk_list: list[Walk]) -> str:
    parts = []
    for walk in walk_list:
        chains = " → ".join(dict.fromkeys(r.chain for r in walk.rules))
        what = walk.verdict
        if walk.redirect_port() is not None:
            what = f"{walk.verdict} to :{walk.redirect_port()}"
        elif walk.dnat_to():
            what = f"DNAT to {walk.dnat_to()}"
        if walk.verdict not in TARGETS and walk.verdict != "-":
            parts.append(f"{walk.table} {walk.root} → {what}: no rule matched")
        else:
            parts.append(f"{walk.table} {chains} #{walk.last.position} {what}")
    return "; ".join(parts)


# --- sockets, peers, interfaces -------------------------------------------------------------------------------


def socket_text(row: dict[str, Any]) -> str:
    procs = ", ".join(f"{name}[{pid}]" for name, pid in row.get("processes") or [])
    uid = row.get("uid")
    return (f"socket in ss: {row['state']} {row['local']} → {row['peer']}"
            + (f" uid {uid}" if uid is not None else "") + (f" {procs}" if procs else ""))


def find_socket(obs: Observations, member: str, local: Addr | None = None,
                peer: Addr | None = None) -> dict[str, Any] | None:
    for row in obs.sockets.get(member, []):
        if row["state"] == "LISTEN":
            continue
        if (local is None or row["local"] == fmt_addr(local)) and (peer is None or row["peer"] == fmt_addr(peer)):
            return row
    return None


def iface_delta(obs: Observations, member: str, iface: str | None) -> tuple[int, int] | None:
    if iface is None:
        return None
    rx_tx = obs.ifaces.get(member, {}).get(iface)
    return (rx_tx[0], rx_tx[1]) if rx_tx else None


def iface_text(member: str, iface: str, delta: tuple[int, int] | None) -> str:
    if delta is None:
        return f"{member} {iface}: counters not read"
    return f"{member} {iface}: rx +{delta[0]} tx +{delta[1]} packets during the probe"


# --- steps ----------------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, obs: Observations) -> None:
        self.obs = obs
        self.lines = [ln for d in obs.log_lines if (ln := parse_log_line(d["pod"], d["raw"])) is not None]
        self.legs = make_legs(obs, self.lines)
        self.unattributed = attribute(obs, self.legs)
        for leg in self.legs:  # TPROXY rewrites no address: its mangle walk says the proxy took the connection
            tproxy = [w for w in leg.walks.get(f"{leg.dest}/in", []) if w.verdict == "TPROXY"]
            if leg.dest_redirect is None and tproxy:
                leg.dest_redirect = tproxy[0].redirect_port()
        self.steps: list[Step] = []
        self.last_actor = app_actor(obs.source, obs)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def build(self) -> Trace:
        for leg in self.legs:
            self.leg_steps(leg)
        self.outcome()
        participants: list[str] = []
        for s in self.steps:
            for a in (s.actor, s.target):
                if a and a not in participants:
                    participants.append(a)
        counters = {m: [c.describe() for c in changes] for m, changes in self.obs.rules.items() if changes}
        r = self.obs.result
        return Trace(self.obs.lab, self.obs.source, self.obs.to, r["outcome"], r.get("reply"), participants,
                     self.steps, counters, self.obs.ifaces, self.unattributed, self.obs.captures)

    def rules_of(self, leg: Leg, member: str, phase: str) -> list[str]:
        return walk_rules(leg.walks.get(f"{member}/{phase}", []))

    def rules_note(self, member: str) -> str:
        if member not in self.obs.rules_read:
            if self.obs.members[member].router:
                return f"{member} is a gateway: no istio-init rules (it captures nothing), nothing counted there"
            return f"{member} has no iptables rules netlab installed (no sidecar): nothing counted there"
        return f"no rule counter in {member} moved for this connection"

    def leg_steps(self, leg: Leg) -> None:
        obs = self.obs
        tup = f"{_fa(leg.src)} → {_fa(leg.dst)}"
        opened = find_socket(obs, leg.origin, local=leg.src) if leg.src else None
        if opened:
            first_ev = [socket_text(opened)]
        elif leg.src:
            first_ev = [f"no socket of {fmt_addr(leg.src)} in {leg.origin}'s socket table while the probe was "
                        "connected (already closed)"]
        else:
            first_ev = [f"source port not observed: the access log has no upstream local address and {leg.origin}'s"
                        " conntrack kept no new entry toward the upstream"]
        if leg.src_from_conntrack:
            first_ev.insert(0, f"source {fmt_addr(leg.src)} from {leg.origin}'s new conntrack entry (the access "
                               "log has no upstream local address)")
        if leg.index == 0:
            first_ev.insert(0, f"probe socket {tup}")
        elif leg.line:
            first_ev.insert(0, f"access log of {leg.origin}: upstream_local {leg.line.get('upstream_local')}, "
                               f"upstream_host {leg.line.get('upstream_host')}")
        if leg.dst is None:
            self.add(Step("connect", leg.origin, leg.actor, None, leg.index, tup, "no upstream connection",
                          observed=False, evidence=first_ev))
            return
        out_rules = self.rules_of(leg, leg.origin, "out")
        out_walks = leg.walks.get(f"{leg.origin}/out", [])
        if leg.local_redirect is not None:
            ct = leg.ct[leg.origin]
            self.add(Step("redirect", leg.origin, leg.actor, sidecar_actor(leg.origin), leg.index, tup,
                          f"captured in {leg.origin}: {walk_summary(out_walks) or 'REDIRECT'} "
                          f"(the kernel hands it to {fmt_addr(leg.dest_addr)})",
                          interface="lo", rules=out_rules, evidence=[*first_ev, ct_text(leg.origin, ct)]))
            self.accept(leg, sidecar_actor(leg.origin))
            return
        if leg.dest == leg.origin:
            target = self.local_target(leg)
            ev = [*first_ev] + ([ct_text(leg.origin, leg.ct[leg.origin])] if leg.origin in leg.ct else [])
            delta = iface_delta(obs, leg.origin, "lo")
            ev.append(iface_text(leg.origin, "lo", delta))
            self.add(Step("local", leg.origin, leg.actor, target, leg.index, tup,
                          f"over lo inside {leg.origin}: " + (walk_summary(out_walks) or self.rules_note(leg.origin)),
                          interface="lo", rules=out_rules, evidence=ev))
            self.accept(leg, target)
            return
        # Leaves the pod through eth0 toward the node.
        delta = iface_delta(obs, leg.origin, "eth0")
        ev = [*first_ev] + ([ct_text(leg.origin, leg.ct[leg.origin])] if leg.origin in leg.ct else [])
        ev.append(iface_text(leg.origin, "eth0", delta))
        hops = leg.hops or [node_of(obs, leg.origin) or NODE]
        seen = any(leg.ct.get(n) for n in hops) or bool(delta and delta[1])
        self.add(Step("send", leg.origin, leg.actor, node_actor(hops[0]), leg.index, tup,
                      f"leaves {leg.origin} through eth0: "
                      + (walk_summary(out_walks) or self.rules_note(leg.origin)),
                      observed=seen, interface="eth0", rules=out_rules, evidence=ev))
        for i, hop in enumerate(hops):
            if i:
                self.lan_step(leg, hops[i - 1], hop)
            self.node_step(leg, hop, first=i == 0)
        last = hops[-1]
        if leg.dest is None:
            self.add(Step("deliver", last, node_actor(last), None, leg.index, f"→ {fmt_addr(leg.dest_addr)}",
                          f"not observed: no lab member has {leg.dest_addr[0] if leg.dest_addr else '?'}",
                          observed=False))
            return
        captured = leg.dest_redirect is not None or obs.members[leg.dest].router  # a gateway's own listener
        target = sidecar_actor(leg.dest, obs) if captured else app_actor(leg.dest, obs)
        in_walks = leg.walks.get(f"{leg.dest}/in", [])
        ev = [ct_text(leg.dest, leg.ct[leg.dest])] if leg.dest in leg.ct else [
            f"no conntrack entry in {leg.dest} for this connection"]
        node_if, holder = obs.members[leg.dest].node_iface, node_of(obs, leg.dest) or last
        ev += [iface_text(holder, node_if, iface_delta(obs, holder, node_if))] if node_if else []
        ev.append(iface_text(leg.dest, "eth0", iface_delta(obs, leg.dest, "eth0")))
        summary = f"arrives in {leg.dest} through eth0"
        if leg.dest_redirect is not None:
            how = "TPROXY (the destination is kept)" if any(w.verdict == "TPROXY" for w in in_walks) else "REDIRECT"
            summary += f": {walk_summary(in_walks) or how} — captured, to :{leg.dest_redirect}"
        elif obs.members[leg.dest].router:
            summary += f": straight to the gateway's own listener on :{leg.dest_addr[1]} (no capture, no istio-init)"
        else:
            summary += ": " + (walk_summary(in_walks) or self.rules_note(leg.dest))
        tup2 = f"{fmt_addr(leg.seen_src)} → {fmt_addr(leg.dest_addr)}"
        self.add(Step("deliver", leg.dest, node_actor(last), target, leg.index, tup2, summary,
                      observed=bool(leg.ct.get(last) or leg.ct.get(leg.dest)),
                      interface=f"{node_if} → eth0" if node_if else "eth0",
                      rules=self.rules_of(leg, leg.dest, "in"), evidence=ev))
        self.accept(leg, target)

    def local_target(self, leg: Leg) -> str:
        """A connection inside one pod ends at its app unless a proxy logged accepting it."""
        if any(ln.pod == leg.origin and ln.addr("downstream_remote") == leg.src for ln in self.lines):
            return sidecar_actor(leg.origin)
        return app_actor(leg.origin, self.obs)

    def node_step(self, leg: Leg, node: str, first: bool) -> None:
        """What one node did with the leg: its conntrack entry says whether it rewrote the tuple."""
        ct = leg.ct.get(node)
        node_walks = leg.walks.get(f"{node}/node", [])
        src_if = self.obs.members[leg.origin].node_iface if first and node_of(self.obs, leg.origin) == node \
            else "eth0"
        if ct is None:
            self.add(Step("route", node, node_actor(node), None, leg.index,
                          f"{fmt_addr(leg.src)} → {fmt_addr(leg.dst)}",
                          "not observed: no conntrack entry at the node for this connection", observed=False,
                          rules=walk_rules(node_walks)))
            return
        orig_src, orig_dst = _ct_addr(ct, "orig", "src"), _ct_addr(ct, "orig", "dst")
        new_src, new_dst = _ct_addr(ct, "reply", "dst"), _ct_addr(ct, "reply", "src")
        rewrites = []
        if new_dst != orig_dst:
            rewrites.append(f"DNAT {fmt_addr(orig_dst)} → {fmt_addr(new_dst)}")
        if new_src != orig_src:
            rewrites.append(f"masquerade {fmt_addr(orig_src)} → {fmt_addr(new_src)}")
        ev = [ct_text(node, ct)]
        if src_if:
            ev.append(iface_text(node, src_if, iface_delta(self.obs, node, src_if)))
        who = "the node" if node == NODE else node
        summary = f"routed by {who}" + (": " + ", ".join(rewrites) if rewrites else ", no address rewritten")
        if node_walks:
            summary += f" ({walk_summary(node_walks)})"
        self.add(Step("nat" if rewrites else "route", node, node_actor(node), None, leg.index,
                      f"{fmt_addr(orig_src)} → {fmt_addr(orig_dst)}", summary,
                      interface=src_if, rules=walk_rules(node_walks), evidence=ev))

    def lan_step(self, leg: Leg, before: str, node: str) -> None:
        """Node to node over the LAN: a host-gw route, the packet as it is (no tunnel)."""
        ct = leg.ct.get(node)
        tup = f"{fmt_addr(_ct_addr(ct, 'orig', 'src'))} → {fmt_addr(_ct_addr(ct, 'orig', 'dst'))}" if ct else "?"
        self.add(Step("route", node, node_actor(before), node_actor(node), leg.index, tup,
                      f"{before} → {node} across the node LAN (eth0 to eth0): routed by the destination's pod CIDR, "
                      "not encapsulated", interface="eth0",
                      evidence=[iface_text(before, "eth0", iface_delta(self.obs, before, "eth0")),
                                iface_text(node, "eth0", iface_delta(self.obs, node, "eth0"))]))

    def accept(self, leg: Leg, actor: str) -> None:
        obs = self.obs
        member = leg.dest or leg.origin
        tup = f"{_fa(leg.seen_src)} → {_fa(leg.dest_addr)}"
        if is_proxy(actor):
            line = next((ln for ln in self.lines if ln.pod == member and ln.addr("downstream_remote") == leg.seen_src),
                        None) or next((ln for ln in self.lines if ln.pod == member and leg.line is not None
                                       and ln.get("request_id") == leg.line.get("request_id") != "-"), None)
            row = find_socket(obs, member, peer=leg.seen_src)
            ev = [socket_text(row)] if row else []
            if line is None:
                self.add(Step("proxy", member, actor, None, leg.index, tup,
                              "not observed: no access-log line of this connection", observed=False, evidence=ev))
                return
            self.last_actor = actor
            flags = line.get("flags")
            where = "its listener" if obs.members[member].router else "original destination"
            if leg.dest_redirect is not None:
                where = f"on :{leg.dest_redirect}, {where}"
            summary = (f"proxy accepted ({where} {line.get('downstream_local')}), {line.get('direction')}"
                       f" cluster {line.get('cluster')} → upstream {line.get('upstream_host')}"
                       + (f" from {line.get('upstream_local')}" if line.get("upstream_local") != "-" else ""))
            sni = line.get("requested_server_name")
            if line.get("response_code_details") == "filter_chain_not_found":
                summary = (f"proxy accepted ({where} {line.get('downstream_local')}); no filter chain takes the "
                           "connection" + (f" (its ClientHello's SNI: {sni})" if sni != "-" else ""))
            elif sni != "-" and obs.members[member].router:  # a Gateway HTTPS server: TLS with its credential
                summary += (f"; TLS terminated (SNI {sni} picked the HTTPS server's filter chain and its "
                            "credential; no client certificate)")
            elif sni != "-":  # Istio's mTLS, terminated here: the hop before it carried TLS records, not the payload
                summary += (f"; mTLS terminated (SNI {sni}; the client sidecar's certificate verified against the "
                            "mesh's root)")
            if flags != "-":
                summary += f"; flags {flags} {line.reason()}"
            self.add(Step("proxy", member, actor, None, leg.index, tup, summary,
                          evidence=[*ev, f"access log of {member}: {line.raw}"]))
            return
        peers = obs.peers.get(member, [])
        want = f"{leg.seen_src[0]} {leg.seen_src[1]}" if leg.seen_src else None
        row = find_socket(obs, member, peer=leg.seen_src) if leg.seen_src else None
        ev = [socket_text(row)] if row else []
        if want and want in peers:
            self.last_actor = actor
            self.add(Step("accept", member, actor, None, leg.index, tup,
                          f"the app accepted, peer {fmt_addr(leg.seen_src)}",
                          evidence=[*ev, f"{member}'s app logged peer {want}"]))
            return
        if want and want in obs.peers_earlier.get(member, []):
            self.last_actor = actor
            self.add(Step("accept", member, actor, None, leg.index, tup,
                          f"the app's connection from {fmt_addr(leg.seen_src)}, accepted before this probe: the proxy "
                          "reused a pooled upstream connection (HTTP keep-alive)",
                          evidence=[*ev, f"{member}'s app logged peer {want} before the probe"]))
            return
        failed = next((ln for ln in self.lines if ln.addr("upstream_local") == leg.src and ln.get("flags") != "-"),
                      None) if leg.src else leg.line if leg.line and leg.line.get("flags") != "-" else None
        if failed is not None:
            self.add(Step("refused", member, actor, None, leg.index, tup,
                          f"no app accepted: the proxy logged {failed.get('flags')} {failed.reason()}",
                          evidence=[*ev, f"access log of {failed.pod}: {failed.raw}"]))
            return
        self.add(Step("accept", member, actor, None, leg.index, tup,
                      "not observed: the app did not log this peer", observed=False, evidence=ev))

    def outcome(self) -> None:
        r = self.obs.result
        source = app_actor(self.obs.source, self.obs)
        words = {"reply": f"reply {r.get('reply')!r}", "reset": "connection reset (RST)", "closed": "closed, no data",
                 "refused": "connection refused", "timeout": "timeout", "unreachable": "unreachable",
                 "tls_error": "TLS handshake failed"}
        text = words.get(r["outcome"], r["outcome"])
        if r["outcome"] == "reply":
            text = f"reply {(r.get('reply') or '').splitlines()[0][:80]!r}"
        arrow = self.last_actor if r["outcome"] not in ("timeout",) and self.last_actor != source else None
        self.add(Step("outcome", self.obs.source, arrow or source, source if arrow else None, 0,
                      f"{r['remote']} → {r.get('local')}", f"the client saw: {text}"
                      + (f" [{r['error']}]" if r.get("error") else ""),
                      evidence=[f"probe result: {r['outcome']} after {r.get('elapsed_ms')} ms"]))


def build_trace(obs: Observations) -> Trace:
    return _Builder(obs).build()

