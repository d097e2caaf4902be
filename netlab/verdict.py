"""Expected vs observed → PASS/FAIL, explained in words tied to the real path (pure: no kernel access).

The explanation is built from what was observed (the probe's outcome, the sidecars' access-log lines, conntrack
entries, rule counters) and what the lab knows (Istio version of each sidecar, where each app listens, rule edits).
Nothing here guesses an outcome: it narrates observations and names the facts that account for them.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from netlab.http_reply import HttpReply, parse_response
from netlab.model.schema import PodCheck, ProbeCheck, ProbeExpectReply
from netlab.probe.facts import PASSTHROUGH_SOURCE, LabFacts, MemberFacts, SidecarFacts, Target
from netlab.probe.observed import (
    LogLine,
    PodObservation,
    ProbeObservation,
    fmt_addr,
    parse_addr,
    parse_app_log_line,
)
from netlab.proxy.config import HEALTH_PORT, INBOUND_PORT, OUTBOUND_PORT, STATS_PORT

LOOP_RULE = "nat/ISTIO_OUTPUT#1 '-o lo -s 127.0.0.6/32 -j RETURN'"
OUTCOME_WORDS = {
    "reply": "got a reply",
    "reset": "was reset (connection reset by peer)",
    "refused": "was refused (RST to the SYN: nothing listens there)",
    "timeout": "timed out (no answer)",
    "closed": "was closed without data (EOF)",
    "unreachable": "was unreachable (no route or ICMP unreachable)",
    "tls_error": "failed its TLS handshake",
}


@dataclass
class Verdict:
    passed: bool
    expected: str
    observed: str
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)  # the observation, for JSON

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class CheckResult:
    index: int  # 0-based position in the scenario's checks
    kind: str  # probe / pod
    title: str
    spec: dict[str, Any]
    verdict: Verdict
    duration_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict.passed


# --- probes -------------------------------------------------------------------------------------------------


def expect_text(expect: str | ProbeExpectReply) -> str:
    if not isinstance(expect, ProbeExpectReply):
        return expect
    text = "reply" if expect.reply is None else f"reply {expect.reply!r}"
    if expect.status is not None:
        text = f"HTTP {expect.status}" if expect.reply is None else f"{text}, HTTP {expect.status}"
    if expect.body_contains is not None:
        text += f" with {expect.body_contains!r} in the body"
    for name, value in (expect.headers or {}).items():
        text += f", {name} {value}" if value in ("present", "absent") else f", {name}: {value}"
    if expect.spread is not None:
        text += " spread " + ", ".join(f"{k} {v:.0%}" for k, v in expect.spread.items()) + f" ±{expect.tolerance:.0%}"
    return text


def outcome_matches(expect: str | ProbeExpectReply, obs: ProbeObservation, reply: HttpReply | None) -> bool:
    """The probe's outcome against the expectation; `reply`: an HTTP probe's parsed response."""
    r = obs.result
    if not isinstance(expect, ProbeExpectReply):
        return r.outcome == expect
    if r.outcome != "reply":
        return False
    if reply is None:
        return not expect.wants_http and (expect.reply is None or r.text == expect.reply.strip())
    if expect.reply is not None and reply.text != expect.reply.strip():
        return False
    if expect.status is not None and reply.status != expect.status:
        return False
    if expect.body_contains is not None and expect.body_contains not in reply.body.decode(errors="replace"):
        return False
    return all(header_matches(value, reply.headers.get(name.lower()))
               for name, value in (expect.headers or {}).items())


def header_matches(wanted: str, actual: str | None) -> bool:
    if wanted == "present":
        return actual is not None
    if wanted == "absent":
        return actual is None
    return actual == wanted


def observed_reply(obs: ProbeObservation, reply: HttpReply | None, expect: str | ProbeExpectReply) -> str:
    if obs.result.outcome != "reply":
        return obs.result.outcome
    if reply is None:
        return f"reply {short(obs.result.text)}"
    text = f"HTTP {reply.status} {short(reply.text)}" + ("" if reply.complete else " (cut off)")
    wanted = expect.headers if isinstance(expect, ProbeExpectReply) else None
    for name in wanted or {}:
        text += f", {name}: {reply.headers.get(name.lower(), '(absent)')}"
    return text


def spread_of(expect: ProbeExpectReply, obs: ProbeObservation, facts: LabFacts) -> tuple[bool, str]:
    """(every share within the tolerance, the counts): who answered the samples, by pod or Deployment."""
    assert expect.spread is not None
    total = sum(obs.answered.values()) or 1
    counts = {key: sum(n for member, n in obs.answered.items() if facts.owns(key, member)) for key in expect.spread}
    ok = all(abs(counts[key] / total - share) <= expect.tolerance for key, share in expect.spread.items())
    others = {m: n for m, n in obs.answered.items() if not any(facts.owns(k, m) for k in expect.spread)}
    text = ", ".join(f"{k} {n} ({n / total:.0%})" for k, n in {**counts, **others}.items())
    return ok and not others, f"answered by {text}"


def short(text: str, limit: int = 60) -> str:
    """A reply as the report shows it: quoted, cut at limit characters (JSON keeps it whole)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


def judge_probe(check: ProbeCheck, obs: ProbeObservation, facts: LabFacts) -> Verdict:
    target = facts.resolve(check.to, check.from_)
    reply = parse_response(obs.result.data) if check.http is not None and obs.result.data else None
    ok = outcome_matches(check.expect, obs, reply)
    expected = expect_text(check.expect)
    observed = observed_reply(obs, reply, check.expect)
    hops = obs.hops
    spread = isinstance(check.expect, ProbeExpectReply) and check.expect.spread is not None
    if spread:
        assert isinstance(check.expect, ProbeExpectReply)
        spread_ok, answered = spread_of(check.expect, obs, facts)
        ok = ok and spread_ok
        observed += f" ×{len(obs.samples_ms)}, {answered}"
    if check.hops is not None:
        expected += f", {check.hops} TCP connection(s)"
        observed += f", {hops if hops is not None else '?'} TCP connection(s)"
        ok = ok and hops == check.hops
    story = [f"{check.from_} ({fmt_addr(obs.result.local)}) → {target.describe()}"]
    story += explain_path(obs.lines, target, facts, check.from_)
    if not obs.lines:
        story.append(no_proxy_line(check, target, facts))
    answer = reply.describe() if reply is not None else short(obs.result.text)
    story.append(f"the client {OUTCOME_WORDS.get(obs.result.outcome, obs.result.outcome)}"
                 + (f" {answer}" if obs.result.outcome == "reply" else "")
                 + (f" [{obs.result.error}]" if obs.result.error else ""))
    unique = obs.unique_connections()
    if unique:
        story.append(f"{hops} TCP connection(s) on the path (conntrack): "
                     + "; ".join(f"{m}: {e.describe()}" for m, e in unique))
    if obs.samples_ms:
        story.append(latency_text(obs.samples_ms))
    story.append("as expected" if ok else f"but the check expected {expected}")
    details: dict[str, Any] = {"probe": obs.result.to_json(), "access_log": [line.raw for line in obs.lines]}
    if obs.connections:
        details["connections"] = [{"member": m, "entry": e.raw} for m, e in unique]
        details["hops"] = hops
    if obs.samples_ms:
        details["latency_ms"] = latency_stats(obs.samples_ms)
    return Verdict(ok, expected, observed, " → ".join(story), details)


def explain_path(lines: list[LogLine], target: Target, facts: LabFacts, source: str) -> list[str]:
    """Each proxy hop in path order, the node's service DNAT where it happens, then failures unwinding back."""
    dnat = target.nat
    if target.kind == "service" and target.member:
        node = facts.members[source].node if source in facts.members else None
        dnat = (f"{f'{node} (its node)' if node else 'the node'} DNATs {target.ip}:{target.port} to "
                f"{facts.members[target.member].ip}:{target.member_port}")
    steps: list[str] = []
    failures: list[str] = []
    outbound_first = bool(lines) and lines[0].get("direction") == "outbound" and lines[0].pod == source
    if outbound_first and lines[0].get("cluster").startswith("outbound|"):
        dnat = ""  # the sidecar chose the endpoint itself and connected to the pod IP
    if dnat and not outbound_first:
        steps.append(dnat)
    for i, line in enumerate(lines):
        head, failure = explain_line(line, facts)
        steps.append(head)
        if failure:
            failures.append(failure)
        if i == 0 and outbound_first and dnat:
            steps.append(dnat)
    return steps + failures[::-1]


def explain_line(line: LogLine, facts: LabFacts) -> tuple[str, str]:
    """(what the sidecar did, why it failed or "")."""
    member = facts.members.get(line.pod)
    sidecar = member.sidecar if member else None
    label = f"{sidecar.label} in {line.pod}" if sidecar else f"sidecar in {line.pod}"
    cluster, flags, details = line.get("cluster"), line.get("flags"), line.get("details")
    upstream = line.get("upstream_host")
    if sidecar is not None and sidecar.router and line.get("response_code_details") == "filter_chain_not_found":
        head = (f"the {sidecar.istio} gateway {line.pod} got a connection on its listener "
                f"{line.get('downstream_local')} (from {line.get('downstream_remote')}; no capture: the gateway's own "
                "port)")
    elif sidecar is not None and sidecar.router:
        xff = line.get("x_forwarded_for")
        head = (f"the {sidecar.istio} gateway {line.pod} took it on its listener {line.get('downstream_local')} "
                f"(from {line.get('downstream_remote')}; no capture: the gateway's own port), appended the peer "
                f"address to x-forwarded-for ({xff}) and routed it by its Gateway and VirtualService to {cluster}")
        if upstream != "-":
            head += f": the endpoint {upstream} itself (the node's service DNAT is not used)"
    elif line.get("direction") == "outbound":
        how = f"captured the app's connection to {line.get('downstream_local')} on {OUTBOUND_PORT} " \
              "(OUTPUT → ISTIO_OUTPUT → ISTIO_REDIRECT)"
        head = f"{label} {how} and forwarded it to {upstream} ({cluster})"
        host = line.addr("upstream_host")
        if cluster.startswith("outbound|") and host is not None:
            member = facts.members.get(facts.member_at(host[0]) or "")
            whose = "" if member is None else f" ({member.name}'s {'pod IP' if member.kind == 'pod' else 'address'})"
            head = (f"{label} {how}; its listener for {line.get('downstream_local')} took cluster {cluster}, and "
                    f"the proxy picked the endpoint {upstream}{whose} itself: the node's service DNAT is not used")
        elif flags == "UH" and cluster == "BlackHoleCluster":
            head = (f"{label} {how}; no listener knows {line.get('downstream_local')}, and the catch-all chain "
                    "sent it to BlackHoleCluster (outboundTrafficPolicy REGISTRY_ONLY: only known hosts)")
    else:
        remote = line.addr("downstream_remote")
        if remote and remote[0].startswith("127."):  # made in this pod: captured on its way out, through lo
            how = "OUTPUT → ISTIO_OUTPUT → ISTIO_IN_REDIRECT"
        elif sidecar and sidecar.mode == "TPROXY":
            how = "TPROXY in mangle PREROUTING"
        else:
            how = "PREROUTING → ISTIO_INBOUND → ISTIO_IN_REDIRECT"
        if upstream == "-":
            head = (f"{label} got a connection from {line.get('downstream_remote')} for "
                    f"{line.get('downstream_local')} on {INBOUND_PORT} ({how})")
        else:
            head = (f"{label} took it on {INBOUND_PORT} ({how}) and forwarded {line.get('downstream_local')} → "
                    f"{upstream} from {upstream_source(line, sidecar.mode if sidecar else 'REDIRECT')} ({cluster})")
    if details.startswith("rbac_access_denied"):
        return head, f"{line.pod}: {rbac_text(details, sidecar)}"
    if line.get("method") != "-":  # an HTTP request: the connection manager's view of it
        head += (f"; {line.get('method')} {line.get('path')} → {line.get('response_code')} "
                 f"({line.get('response_code_details')}), x-request-id {line.get('request_id')}")
        if flags == "-":
            return head, ""
    if flags == "-":
        return f"{head}; {line.get('bytes_received')} bytes in, {line.get('bytes_sent')} bytes out", ""
    return head, f"{line.pod}: {failure_text(line, flags, details, facts, member)}"


def rbac_text(details: str, sidecar: SidecarFacts | None) -> str:
    """Which AuthorizationPolicy denied: a DENY rule that matched, or no ALLOW rule that did."""
    policies = sidecar.authz if sidecar is not None else ()
    found = re.fullmatch(r"rbac_access_denied_matched_policy\[ns\[(.+)\]-policy\[(.+)\]-rule\[(\d+)\]\]", details)
    if found is not None:
        return (f"denied by rule {found[3]} of the DENY AuthorizationPolicy {found[1]}/{found[2]} "
                f"(RBAC: access denied, {details})")
    allow = [f"{p.namespace}/{p.name}" + (" (no rules: allow-nothing)" if not p.rules else "")
             for p in policies if p.action == "ALLOW"]
    return (f"no rule of its ALLOW AuthorizationPolicies ({', '.join(allow) or 'none known'}) matched this request, "
            f"so the sidecar denied it (RBAC: access denied, {details}); principals and namespaces match only "
            "over mTLS")


def upstream_source(line: LogLine, mode: str) -> str:
    local = line.addr("upstream_local")
    if local is not None:
        return local[0]
    # The connection failed before it had a local address: name the source the route binds to.
    host = line.addr("upstream_host")
    if mode == "TPROXY":
        return "the client's own address (TPROXY)"
    if host and host[0] == "127.0.0.1":
        return "127.0.0.1"
    return PASSTHROUGH_SOURCE if line.get("direction") == "inbound" else "the pod IP"


def failure_text(line: LogLine, flags: str, details: str, facts: LabFacts, member: MemberFacts | None) -> str:
    upstream = line.addr("upstream_host")
    if flags == "NR" and "127.0.0.6_captured_again" in details:
        edits = member.sidecar.rule_edits if member and member.sidecar else ()
        text = (f"the loop guard refused it ({details}): a connection from 127.0.0.6 came back to "
                f"{INBOUND_PORT}, because {LOOP_RULE} did not let the proxy's own upstream connection out")
        if edits:
            text += f" — this pod's rule_edits: {', '.join(edits)}"
        return text + "; without the guard it would loop until file descriptors run out"
    if flags == "NR" and line.get("response_code_details") == "filter_chain_not_found" and member is not None \
            and member.sidecar is not None and member.sidecar.router:
        sni = line.get("requested_server_name")
        sent = f"its ClientHello asked for {sni} (SNI)" if sni != "-" else "it sent no SNI a chain names, or plaintext"
        return (f"no filter chain of the listener {line.get('downstream_local')} takes this connection: the chains "
                "are the Gateway servers on that port (an HTTPS server's is chosen by the SNI of its hosts), and "
                f"{sent}; the gateway reset the connection (NR filter_chain_not_found)")
    if flags == "NR" and line.get("response_code_details") == "filter_chain_not_found":
        local = line.addr("downstream_local")
        port = local[1] if local else 0
        policy = member.sidecar.mtls if member and member.sidecar else None
        source = policy.source(port) if policy is not None else "a PeerAuthentication"
        remote = line.addr("downstream_remote")
        client = facts.members.get(facts.member_at(remote[0]) or "") if remote else None
        why = ("its sidecar sent plaintext: a DestinationRule with tls.mode DISABLE for this host turns its mTLS off"
               if client is not None and client.sidecar is not None else "it has no sidecar")
        return (f"mTLS is STRICT on port {port} ({source}): the inbound listener has no filter chain for "
                "plaintext, so the proxy reset the connection (NR filter_chain_not_found); only mTLS from a client "
                f"sidecar gets in, and this client sent plaintext ({why})")
    if flags == "NR":
        return f"refused ({details})"
    if flags.startswith("UF"):
        why = line.reason()
        app = member.app if member else None
        if upstream and app and not app.accepts(*upstream):
            why += f"; the app listens on {app.describe()}"
        elif upstream and app is None and member is not None:
            why += f"; {member.name} runs no app"
        return f"the upstream connection failed ({why}) → the proxy reset the client"
    if flags == "UC":
        return f"the upstream reset the connection ({details}) → the proxy reset the client"
    if flags == "UH" and line.get("cluster") == "BlackHoleCluster":
        return "BlackHoleCluster has no endpoint (UH): the proxy closed the connection at once"
    if flags == "UH":
        return f"{line.get('cluster')} has no healthy endpoint (UH): the proxy closed the connection"
    if flags == "DC":
        return f"the client went away ({details})"
    return f"flags {flags} ({details})"


def no_proxy_line(check: ProbeCheck, target: Target, facts: LabFacts) -> str:
    parts: list[str] = []
    source = facts.members.get(check.from_)
    if source and source.sidecar:
        parts.append(f"no outbound access-log line in {check.from_}: its sidecar did not handle the connection")
    dest = facts.members.get(target.member or "")
    if dest is None or dest.kind == "node":
        return "; ".join(parts) or "no sidecar on the path: the connection went straight to its destination"
    if dest.sidecar is None:
        parts.append(f"{dest.name} has no sidecar: the connection went straight to its app")
        return "; ".join(parts)
    port = target.member_port or target.port
    text = f"no inbound access-log line in {dest.name}: the connection to port {port} bypassed its sidecar"
    if port in (HEALTH_PORT, STATS_PORT):
        what = "health (/healthz/ready)" if port == HEALTH_PORT else "stats (/stats/prometheus)"
        text += (f" (port {port} is excluded from capture by ISTIO_INBOUND, and the proxy itself listens on "
                 f"0.0.0.0:{port} for {what}: it answered directly)")
    elif dest.app and dest.app.accepts(dest.ip, port):
        text += f" (an excluded inbound port: ISTIO_INBOUND returns it before capture; the app on {port} answered)"
    parts.append(text)
    return "; ".join(parts)


def latency_stats(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"samples": len(ordered), "min": round(ordered[0], 3), "p50": round(statistics.median(ordered), 3),
            "p90": round(p90, 3), "max": round(ordered[-1], 3)}


def latency_text(samples: list[float]) -> str:
    s = latency_stats(samples)
    return (f"latency over {s['samples']} sample(s): min {s['min']} ms, p50 {s['p50']} ms, p90 {s['p90']} ms "
            f"(connect, send, reply, close)")


# --- what a pod saw -----------------------------------------------------------------------------------------


def value_matches(expected: str | int, actual: str | None) -> bool:
    """Equal as text; an address given without its port matches any port (source ports are random)."""
    if actual is None:
        return False
    wanted = str(expected)
    if wanted == actual:
        return True
    addr = parse_addr(actual)
    return addr is not None and ":" not in wanted and addr[0] == wanted


def judge_pod(check: PodCheck, obs: PodObservation, facts: LabFacts) -> Verdict:
    exp = check.expect
    parts: list[tuple[bool, str, str, str]] = []  # (ok, expected, observed, why)
    if exp.app_peer is not None:
        parts.append(judge_peer(str(exp.app_peer), obs, facts))
    if exp.rules_hit or exp.rules_not_hit:
        edits = facts.members[obs.pod].sidecar.rule_edits if obs.pod in facts.members and facts.members[
            obs.pod].sidecar else ()
        parts.append(judge_rules(exp.rules_hit or [], exp.rules_not_hit or [], obs, edits))
    if exp.conntrack is not None:
        parts.append(judge_fields("conntrack", exp.conntrack, [(e.fields, e.describe()) for e in obs.conntrack],
                                  obs.pod, conntrack_meaning))
    if exp.proxy_log is not None:
        parts.append(judge_fields("proxy_log", exp.proxy_log, [(ln.fields, ln.raw) for ln in obs.lines],
                                  obs.pod, lambda _f: ""))
    if exp.app_log is not None:
        lines = [(fields, line) for line in obs.app_lines if (fields := parse_app_log_line(line)) is not None]
        parts.append(judge_fields("app_log", exp.app_log, lines, obs.pod, app_log_meaning))
    ok = all(p[0] for p in parts)
    details: dict[str, Any] = {
        "app_log": obs.app_lines,
        "peers": obs.peers if obs.probe_index is not None else ([obs.last_peer] if obs.last_peer else []),
        "rules": {r.ref: r.packets for r in obs.rules.values()},
        "conntrack": [e.raw for e in obs.conntrack],
        "access_log": [ln.raw for ln in obs.lines],
    }
    return Verdict(ok, "; ".join(p[1] for p in parts), "; ".join(p[2] for p in parts),
                   " | ".join(("" if p[0] else "MISMATCH: ") + p[3] for p in parts), details)


def judge_peer(expected: str, obs: PodObservation, facts: LabFacts) -> tuple[bool, str, str, str]:
    member = facts.members.get(obs.pod)
    if obs.probe_index is not None:
        seen = obs.peers
        scope = f"during probe #{obs.probe_index + 1}"
    else:
        seen = [obs.last_peer] if obs.last_peer else []
        scope = "so far"
    if not seen:
        return (False, f"app_peer {expected}", "app_peer (none)",
                f"the app in {obs.pod} accepted no connection {scope}")
    peer_ip = seen[-1].split()[0]
    why = f"the app in {obs.pod} accepted {len(seen)} connection(s) {scope}; the last came from {facts.who(peer_ip)}"
    sidecar = member.sidecar if member else None
    if peer_ip == PASSTHROUGH_SOURCE and sidecar:
        why += (f": the {sidecar.istio} sidecar forwards inbound connections to the pod IP from 127.0.0.6 "
                "(1.10+ for declared ports, the passthrough cluster for undeclared ports in every version)")
    elif peer_ip == "127.0.0.1" and sidecar:
        why += f": the {sidecar.istio} sidecar forwarded to 127.0.0.1:port, so the kernel chose 127.0.0.1 as source"
    elif sidecar and sidecar.mode == "TPROXY" and facts.member_at(peer_ip):
        why += ": with TPROXY the sidecar connects with the client's own address (IP_TRANSPARENT), so the app " \
               "sees the real client"
    elif peer_ip in facts.node_addresses and member is not None and member.kind == "pod":
        why += (": a node port with externalTrafficPolicy Cluster masquerades the client to the node's address "
                "(Local keeps the client's own)")
    elif peer_ip in facts.node_addresses:
        why += ": the node masquerades pod traffic leaving for external hosts"
    elif sidecar is None and facts.member_at(peer_ip):
        why += ": no sidecar in between, the client connected directly"
    return peer_ip == expected, f"app_peer {expected}", f"app_peer {peer_ip}", why


def judge_rules(hit: list[str], not_hit: list[str], obs: PodObservation,
                edits: tuple[str, ...] = ()) -> tuple[bool, str, str, str]:
    ok = True
    words: list[str] = []
    for ref, want_hit in [(r, True) for r in hit] + [(r, False) for r in not_hit]:
        delta = obs.rules.get(ref)
        if delta is None or delta.packets is None:
            length = delta.chain_length if delta else 0
            words.append(f"{ref} does not exist in {obs.pod} (the chain has {length} rule(s))")
            ok = False
            continue
        counted = delta.packets > 0
        ok = ok and counted == want_hit
        words.append(f"{ref} ({delta.spec}) counted {delta.packets} packet(s)"
                     + ("" if counted == want_hit else f", expected {'some' if want_hit else 'none'}"))
    expected = ", ".join([f"hit {r}" for r in hit] + [f"not hit {r}" for r in not_hit])
    observed = ", ".join(f"{ref}={obs.rules[ref].packets}" for ref in [*hit, *not_hit] if ref in obs.rules)
    why = f"rules in {obs.pod} during the probe: " + "; ".join(words)
    if edits:
        why += f" (this pod's rules were edited before the sidecar started: {', '.join(edits)}; positions move)"
    return ok, expected, observed, why


def judge_fields(kind: str, wanted: dict[str, str | int], candidates: list[tuple[dict[str, str], str]],
                 pod: str, meaning: Any) -> tuple[bool, str, str, str]:
    expected = f"{kind} " + " ".join(f"{k}={v}" for k, v in wanted.items())
    if not candidates:
        what = {"conntrack": "conntrack entry", "app_log": "app access-log line"}.get(kind, "access-log line")
        return False, expected, f"{kind} (none)", f"no {what} of the probe's connection in {pod}"
    for fields, text in candidates:
        if all(value_matches(v, fields.get(k)) for k, v in wanted.items()):
            observed = f"{kind} " + " ".join(f"{k}={fields.get(k)}" for k in wanted)
            return True, expected, observed, f"{pod}: {text}{meaning(wanted)}"
    first = candidates[0][0]
    observed = f"{kind} " + " ".join(f"{k}={first.get(k, '-')}" for k in wanted)
    listing = "; ".join(text for _f, text in candidates)
    return False, expected, observed, f"{pod} has no {kind} record with {expected.split(' ', 1)[1]}: {listing}"


def app_log_meaning(wanted: dict[str, str | int]) -> str:
    notes: list[str] = []
    if str(wanted.get("remote_addr")) == PASSTHROUGH_SOURCE:
        notes.append("the app sees its sidecar's upstream source 127.0.0.6, not the client")
    if any(k in wanted for k in ("x_forwarded_for", "http_x_forwarded_for")):
        notes.append("x-forwarded-for is what the gateway appended (use_remote_address): the client's address, or "
                     "the node's when a node port masqueraded it (externalTrafficPolicy Cluster)")
    return (" — " + "; ".join(notes)) if notes else ""


def conntrack_meaning(wanted: dict[str, str | int]) -> str:
    notes: list[str] = []
    if str(wanted.get("reply_sport")) == str(INBOUND_PORT):
        notes.append(f"the reply comes from {INBOUND_PORT}: REDIRECT rewrote the destination to the proxy's "
                     "inbound listener, and conntrack un-does it for the client")
    if str(wanted.get("reply_sport")) == str(OUTBOUND_PORT):
        notes.append(f"the reply comes from {OUTBOUND_PORT}: the app's connection was redirected to the proxy's "
                     "outbound listener")
    if str(wanted.get("reply_src")) == "127.0.0.1":
        notes.append("REDIRECT of a locally generated packet (OUTPUT) sends it to 127.0.0.1")
    return (" — " + "; ".join(notes)) if notes else ""
