"""What probes and pods observed, as plain data, with the pure parsers that build it (no kernel access here)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.hostport import split_host_port

Addr = tuple[str, int]


def fmt_addr(addr: Addr | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "-"


@dataclass(frozen=True)
class ProbeResult:
    """One connection attempt from inside a pod."""

    outcome: str  # reply / reset / refused / timeout / closed / unreachable
    data: bytes
    local: Addr | None  # the probe socket's own address: what conntrack and access logs show as the client
    remote: Addr
    elapsed_ms: float
    error: str = ""  # errno name or exception text when the outcome is not reply/closed

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace").strip()

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reply": self.text if self.data else None, "local": fmt_addr(self.local),
                "remote": fmt_addr(self.remote), "elapsed_ms": round(self.elapsed_ms, 3), "error": self.error}


# --- sidecar access log -------------------------------------------------------------------------------------

# Istio's TEXT access-log format (netlab/proxy/accesslog.py). Groups take the JSON encoding's key names, but for the
# short names scenarios have used: cluster, flags, upstream_local, downstream_local, downstream_remote.
_LOG_LINE = re.compile(
    r'^\[(?P<start_time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<response_code>\d+) '
    r'(?P<flags>\S+) (?P<response_code_details>\S+) (?P<connection_termination_details>\S+) '
    r'"(?P<upstream_transport_failure_reason>[^"]*)" (?P<bytes_received>\d+) (?P<bytes_sent>\d+) '
    r'(?P<duration>\d+) (?P<upstream_service_time>\S+) "(?P<x_forwarded_for>[^"]*)" "(?P<user_agent>[^"]*)" '
    r'"(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" (?P<cluster>\S+) '
    r"(?P<upstream_local>\S+) (?P<downstream_local>\S+) (?P<downstream_remote>\S+) "
    r"(?P<requested_server_name>\S+) (?P<route_name>\S+)$"
)
# The same fields under the JSON encoding's names, for scenarios that use those.
LOG_ALIASES = {"upstream_cluster": "cluster", "response_flags": "flags", "upstream_local_address": "upstream_local",
               "downstream_local_address": "downstream_local", "downstream_remote_address": "downstream_remote"}
INBOUND_CLUSTERS = ("inbound|", "InboundPassthroughCluster")


@dataclass(frozen=True)
class LogLine:
    pod: str
    raw: str
    fields: dict[str, str]

    def get(self, key: str) -> str:
        return self.fields.get(key, "-")

    def addr(self, key: str) -> Addr | None:
        return parse_addr(self.get(key))

    def reason(self) -> str:
        """`details` in words: Envoy's "delayed_connect_error:_111" names the connect's errno."""
        details = self.get("details")
        found = re.fullmatch(r"delayed_connect_error:_(\d+)", details)
        if found is None:
            return details
        number = int(found[1])
        return f"{details}: {errno.errorcode.get(number, '?')}, {os.strerror(number)}"


def parse_addr(text: str) -> Addr | None:
    """IP:PORT of a log or conntrack field; port 0 too (a client taken from x-forwarded-for); None for "-"."""
    host, _, port = text.rpartition(":")
    if port == "0" and host:
        return host, 0
    try:
        return split_host_port(text)
    except ValueError:  # "-" in a log field
        return None


def parse_log_line(pod: str, line: str) -> LogLine | None:
    """One text access-log line (netlab/proxy/accesslog.py); None for anything else. Two fields are derived:
    `direction` (the sidecar's inbound or outbound side, from the cluster) and `details` (the first of the three
    details fields that is set)."""
    m = _LOG_LINE.match(line.strip())
    if m is None:
        return None
    fields = m.groupdict()
    inbound = fields["cluster"].startswith(INBOUND_CLUSTERS) or "captured_again" in fields[
        "connection_termination_details"] or fields["response_code_details"] == "filter_chain_not_found"
    fields["direction"] = "inbound" if inbound else "outbound"
    fields["details"] = next((fields[k] for k in ("response_code_details", "connection_termination_details",
                                                  "upstream_transport_failure_reason") if fields[k] != "-"), "-")
    fields.update({alias: fields[name] for alias, name in LOG_ALIASES.items()})
    return LogLine(pod, line.strip(), fields)


def parse_log(pod: str, text: str) -> list[LogLine]:
    return [entry for line in text.splitlines() if (entry := parse_log_line(pod, line)) is not None]


def link(local: Addr | None, lines: list[LogLine], aliases: tuple[Addr, ...] = ()) -> list[LogLine]:
    """The lines that belong to a probe from `local`, in path order (first hop first). `aliases`: `local` as a node
    masqueraded it (a node port with externalTrafficPolicy Cluster), which is what the first proxy saw."""
    if local is None:
        return []
    known = {local, *aliases}
    requests: set[str] = set()
    chain: list[LogLine] = []
    changed = True
    while changed:
        changed = False
        for line in lines:
            if line in chain:
                continue
            remote = line.addr("downstream_remote")
            # A sidecar behind a gateway logs x-forwarded-for's client as IP:0: its request id links it.
            if remote in known or (remote is not None and remote[1] == 0 and line.get("request_id") in requests):
                chain.append(line)
                upstream = line.addr("upstream_local")
                if upstream is not None:
                    known.add(upstream)
                if line.get("request_id") != "-":
                    requests.add(line.get("request_id"))
                changed = True
    return chain


# --- conntrack ----------------------------------------------------------------------------------------------

_KV = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class ConntrackEntry:
    raw: str
    fields: dict[str, str]

    @property
    def orig_source(self) -> Addr:
        return self.fields.get("orig_src", ""), int(self.fields.get("orig_sport", 0))

    def describe(self) -> str:
        f = self.fields
        return (f"{f.get('orig_src')}:{f.get('orig_sport')} → {f.get('orig_dst')}:{f.get('orig_dport')}, "
                f"reply {f.get('reply_src')}:{f.get('reply_sport')} → {f.get('reply_dst')}:{f.get('reply_dport')}"
                + (f" ({f['state']})" if f.get("state") else ""))


def parse_conntrack_line(line: str) -> ConntrackEntry | None:
    """`tcp 6 118 TIME_WAIT src=.. dst=.. sport=.. dport=.. src=.. dst=.. sport=.. dport=.. [ASSURED] mark=0 ...`.

    The first src/dst/sport/dport are the original tuple, the second the reply tuple.
    """
    words = line.split()
    if len(words) < 4 or words[0] != "tcp":
        return None
    fields: dict[str, str] = {}
    if not words[3].count("="):
        fields["state"] = words[3]
    seen: dict[str, int] = {}
    for key, value in _KV.findall(line):
        if key in ("src", "dst", "sport", "dport"):
            n = seen.get(key, 0)
            seen[key] = n + 1
            if n < 2:
                fields[f"{'orig' if n == 0 else 'reply'}_{key}"] = value
        elif key == "mark":
            fields["mark"] = value
    if "orig_src" not in fields or "reply_src" not in fields:
        return None
    return ConntrackEntry(line.strip(), fields)


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    return [e for line in text.splitlines() if (e := parse_conntrack_line(line)) is not None]


# --- rule counters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleDelta:
    """How many packets one rule counted during a probe (None: the rule does not exist)."""

    ref: str  # TABLE/CHAIN#N
    spec: str | None
    packets: int | None
    chain_length: int = 0  # how many rules the chain has (to explain a missing position)


def rule_deltas(refs: list[str], before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]],
                lengths: dict[str, int]) -> dict[str, RuleDelta]:
    """before/after map TABLE/CHAIN#N to (spec, packets); lengths map TABLE/CHAIN to its number of rules."""
    out: dict[str, RuleDelta] = {}
    for ref in refs:
        chain = ref.split("#")[0]
        if ref not in after:
            out[ref] = RuleDelta(ref, None, None, lengths.get(chain, 0))
            continue
        spec, packets = after[ref]
        prior = before.get(ref, (spec, 0))[1]
        out[ref] = RuleDelta(ref, spec, packets - prior, lengths.get(chain, 0))
    return out


# --- what a check saw ---------------------------------------------------------------------------------------


@dataclass
class ProbeObservation:
    result: ProbeResult
    lines: list[LogLine] = field(default_factory=list)  # sidecar access-log lines of this probe, in path order
    connections: list[tuple[str, ConntrackEntry]] = field(default_factory=list)  # (member, entry) when traced
    samples_ms: list[float] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)  # with samples: connections each member's app accepted

    @property
    def hops(self) -> int | None:
        """TCP connections the request crossed, counted from conntrack: distinct original sources."""
        if not self.connections:
            return None
        return len({e.orig_source for _m, e in self.connections})

    def unique_connections(self) -> list[tuple[str, ConntrackEntry]]:
        """One entry per connection (the first seen: the runner lists pods before the node)."""
        seen: set[Addr] = set()
        out: list[tuple[str, ConntrackEntry]] = []
        for member, entry in self.connections:
            if entry.orig_source not in seen:
                seen.add(entry.orig_source)
                out.append((member, entry))
        return out


@dataclass
class PodObservation:
    pod: str
    probe_index: int | None  # which check (0-based) was the probe this observation belongs to
    peers: list[str] = field(default_factory=list)  # "IP PORT" lines the app appended since the probe started
    last_peer: str | None = None  # the file's last line, when no probe preceded the check
    rules: dict[str, RuleDelta] = field(default_factory=dict)
    conntrack: list[ConntrackEntry] = field(default_factory=list)  # entries of the probe's connections
    lines: list[LogLine] = field(default_factory=list)  # this pod's access-log lines for the probe
    app_lines: list[str] = field(default_factory=list)  # the app's own access-log lines during the probe


# nginx's "combined" log format with "$http_x_forwarded_for" appended (the study notes' nginx; the http app's).
NGINX_LINE = re.compile(r'(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] '
                        r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<body_bytes_sent>\d+) '
                        r'"(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"'
                        r'(?: "(?P<http_x_forwarded_for>[^"]*)")?')


def parse_app_log_line(line: str) -> dict[str, str] | None:
    """The fields of an nginx-style access-log line (nginx's variable names, also without http_), or None."""
    found = NGINX_LINE.match(line.strip())
    if found is None:
        return None
    fields = {k: v for k, v in found.groupdict().items() if v is not None}
    fields.update({k.removeprefix("http_"): v for k, v in fields.items() if k.startswith("http_")})
    return fields
