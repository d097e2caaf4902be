"""Trace building on recorded observations (tests/unit/trace_data: real labs, recorded by netlab.trace.collect),
rule walks, the SVG's structure, the counters diff of `rules show --watch` (all pure)."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from netlab.cli.trace import unescape
from netlab.kernel.iptables import ChainCounters, RuleCounter
from netlab.report import check_line
from netlab.trace.build import build_trace
from netlab.trace.ifaces import iface_deltas, parse_net_dev
from netlab.trace.model import Observations, RuleChange, Trace
from netlab.trace.svg import render_svg, reply_path
from netlab.trace.text import render_text
from netlab.trace.walk import walks
from netlab.trace.watch import changed, counter_map
from netlab.verdict import CheckResult, Verdict

DATA = Path(__file__).parent / "trace_data"
SVG = "{http://www.w3.org/2000/svg}"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def trace_of(doc: dict[str, Any]) -> Trace:
    return build_trace(Observations.from_json(doc))


def shape(trace: Trace) -> list[tuple[str, str, str | None]]:
    return [(s.kind, s.actor, s.target) for s in trace.steps]


# --- rule walks -----------------------------------------------------------------------------------------------


def rc(chain: str, pos: int, spec: str, packets: int = 1, table: str = "nat") -> RuleChange:
    return RuleChange(table, chain, pos, spec, packets)


def test_walk_follows_counted_jumps_to_the_deciding_rule() -> None:
    found = walks([rc("PREROUTING", 1, "-p tcp -j ISTIO_INBOUND"),
                   rc("ISTIO_INBOUND", 6, "-p tcp -j ISTIO_IN_REDIRECT"),
                   rc("ISTIO_IN_REDIRECT", 1, "-p tcp -j REDIRECT --to-ports 15006")])
    assert len(found) == 1
    assert [r.ref for r in found[0].rules] == ["nat/PREROUTING#1", "nat/ISTIO_INBOUND#6", "nat/ISTIO_IN_REDIRECT#1"]
    assert found[0].verdict == "REDIRECT" and found[0].redirect_port() == 15006 and found[0].root == "PREROUTING"


def test_walks_split_where_two_connections_took_different_rules() -> None:
    found = walks([rc("OUTPUT", 1, "-p tcp -j ISTIO_OUTPUT", 2),
                   rc("ISTIO_OUTPUT", 4, "-m owner --uid-owner 1337 -j RETURN"),
                   rc("ISTIO_OUTPUT", 9, "-j ISTIO_REDIRECT"),
                   rc("ISTIO_REDIRECT", 1, "-p tcp -j REDIRECT --to-ports 15001")])
    assert sorted(w.verdict for w in found) == ["REDIRECT", "RETURN"]


def test_a_jump_into_a_chain_where_nothing_matched_ends_at_the_policy() -> None:
    (walk,) = walks([rc("POSTROUTING", 1, "-j NETLAB-POSTROUTING")])
    assert walk.verdict == "NETLAB-POSTROUTING" and walk.redirect_port() is None and walk.dnat_to() is None


def test_dnat_target_is_read_from_the_rule() -> None:
    (walk,) = walks([rc("PREROUTING", 1, "-j NETLAB-SERVICES"),
                     rc("NETLAB-SERVICES", 1, "-d 10.96.0.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination "
                                              "10.244.0.11:8080")])
    assert walk.dnat_to() == "10.244.0.11:8080"


# --- hops from recorded observations --------------------------------------------------------------------------


def test_inbound_1_10_path_in_order() -> None:
    t = trace_of(recorded("inbound-1-10"))
    assert shape(t) == [
        ("send", "client app", "node"),
        ("nat", "node", None),
        ("deliver", "node", "web-1-10 sidecar"),
        ("proxy", "web-1-10 sidecar", None),
        ("local", "web-1-10 sidecar", "web-1-10 app"),
        ("accept", "web-1-10 app", None),
        ("outcome", "web-1-10 app", "client app"),
    ]
    assert all(s.observed for s in t.steps)
    _send, nat, deliver, proxy, local, accept, _outcome = t.steps
    assert "DNAT 10.96.0.10:8080 → 10.244.0.11:8080" in nat.summary
    assert any("NETLAB-SERVICES#1" in r for r in nat.rules)
    assert deliver.tuple.endswith("→ 10.244.0.11:8080") and "REDIRECT to :15006" in deliver.summary
    assert [r.split()[0] for r in deliver.rules] == ["nat/PREROUTING#1", "nat/ISTIO_INBOUND#6",
                                                     "nat/ISTIO_IN_REDIRECT#1"]
    assert any("reply 10.244.0.11:15006" in e for e in deliver.evidence)
    assert "inbound|8080||" in proxy.summary and "from 127.0.0.6:" in proxy.summary
    assert local.leg == 1 and local.tuple.startswith("127.0.0.6:") and local.interface == "lo"
    assert [r.split()[0] for r in local.rules] == ["nat/OUTPUT#1", "nat/ISTIO_OUTPUT#1"]
    assert any("uid 1337" in e for e in local.evidence)  # the sidecar's upstream socket, from ss
    assert "peer 127.0.0.6:" in accept.summary
    assert t.outcome == "reply" and t.participants == ["client app", "node", "web-1-10 sidecar", "web-1-10 app"]
    assert t.unattributed == []


def test_outbound_path_redirect_owner_rule_and_masquerade() -> None:
    t = trace_of(recorded("outbound"))
    assert [s.kind for s in t.steps] == ["redirect", "proxy", "send", "nat", "deliver", "accept", "outcome"]
    redirect, proxy, send, nat, deliver, accept, _ = t.steps
    assert "REDIRECT to :15001" in redirect.summary and redirect.target == "shop sidecar"
    assert any("reply 127.0.0.1:15001" in e for e in redirect.evidence)
    assert "PassthroughCluster" in proxy.summary
    assert send.leg == 1 and any("ISTIO_OUTPUT#4" in r for r in send.rules)
    assert not any("ISTIO_REDIRECT" in r for r in send.rules)  # the REDIRECT walk belongs to the app's connection
    assert "masquerade 10.244.0.10:" in nat.summary and "198.51.100.1:" in nat.summary
    assert deliver.target == "api (external)" and deliver.tuple.startswith("198.51.100.1:")
    assert "peer 198.51.100.1:" in accept.summary


def test_refused_upstream_is_an_observed_refusal_not_an_accept() -> None:
    t = trace_of(recorded("lo-1-10-reset"))
    kinds = [s.kind for s in t.steps]
    assert kinds == ["send", "nat", "deliver", "proxy", "local", "refused", "outcome"]
    assert "UF,URX delayed_connect_error:_111: ECONNREFUSED, Connection refused" in t.steps[5].summary
    assert t.outcome == "reset" and t.steps[-1].actor == "lo-1-10 sidecar"
    # The proxy logged no upstream local address and conntrack kept none: the port is shown as unknown.
    assert t.steps[4].tuple.startswith("? →")


def test_1_9_forwards_to_loopback_and_the_owner_rule_counts() -> None:
    t = trace_of(recorded("eth0-1-9-reset"))
    local = next(s for s in t.steps if s.kind == "local")
    assert local.tuple.endswith("→ 127.0.0.1:8080") and any("ISTIO_OUTPUT#4" in r for r in local.rules)


def test_a_missing_node_entry_is_shown_as_not_observed_never_guessed() -> None:
    doc = copy.deepcopy(recorded("inbound-1-10"))
    doc["conntrack"]["_node"] = []
    doc["conntrack"]["web-1-10"] = []
    t = trace_of(doc)
    node = t.steps[1]
    assert node.kind == "route" and not node.observed and "not observed" in node.summary
    assert "DNAT" not in node.summary
    # Without the node's DNAT entry the destination behind the service IP is unknown: said so, not invented.
    assert any(not s.observed and s.kind == "deliver" for s in t.steps)


def test_a_missing_access_log_line_is_shown_as_not_observed() -> None:
    doc = copy.deepcopy(recorded("inbound-1-10"))
    doc["log_lines"] = []
    t = trace_of(doc)
    proxy = next(s for s in t.steps if s.kind == "proxy")
    assert not proxy.observed and "no access-log line" in proxy.summary
    assert not any(s.leg == 1 for s in t.steps)  # no second connection is made up


def test_counters_no_connection_explains_are_reported() -> None:
    doc = copy.deepcopy(recorded("inbound-1-10"))
    doc["rules"]["web-1-10"].append({"table": "nat", "chain": "ISTIO_OUTPUT", "position": 9,
                                     "spec": "-j ISTIO_REDIRECT", "packets": 1})
    doc["rules"]["web-1-10"].append({"table": "nat", "chain": "ISTIO_REDIRECT", "position": 1,
                                     "spec": "-p tcp -j REDIRECT --to-ports 15001", "packets": 1})
    t = trace_of(doc)
    assert any("ISTIO_REDIRECT#1" in u for u in t.unattributed)


def test_trace_json_round_trip_and_hops_list() -> None:
    t = trace_of(recorded("outbound"))
    doc = json.loads(json.dumps(t.to_json()))
    assert isinstance(doc["hops"], list) and len(doc["hops"]) == len(t.steps)
    assert Trace.from_json(doc) == t


def test_text_names_namespaces_rules_and_the_counters_diff() -> None:
    text = render_text(trace_of(recorded("inbound-1-10")))
    assert "in web-1-10 [lo]" in text and "nat/ISTIO_OUTPUT#1 -s 127.0.0.6/32 -o lo -j RETURN (+1)" in text
    assert "counters that moved during the probe:" in text


# --- SVG ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["inbound-1-10", "outbound", "lo-1-10-reset"])
def test_svg_is_xml_with_one_lifeline_per_participant(name: str) -> None:
    t = trace_of(recorded(name))
    root = ET.fromstring(render_svg(t).split("\n", 1)[1])
    assert root.tag == f"{SVG}svg"
    lifelines = [g.get("data-participant") for g in root.iter(f"{SVG}g") if g.get("class") == "lifeline"]
    assert lifelines == t.participants
    steps = [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]
    assert len(steps) == len(t.steps)
    arrows = [g for g in steps if g.find(f"{SVG}line") is not None]
    assert len(arrows) == sum(1 for s in t.steps if s.target)
    labels = [el.text for g in steps for el in g.iter(f"{SVG}text")]
    assert all(any(s.tuple in (label or "") for label in labels) for s in t.steps)


def test_svg_marks_unobserved_steps() -> None:
    doc = copy.deepcopy(recorded("inbound-1-10"))
    doc["log_lines"] = []
    root = ET.fromstring(render_svg(trace_of(doc)).split("\n", 1)[1])
    flags = [g.get("data-observed") for g in root.iter(f"{SVG}g") if g.get("class") == "step"]
    assert "false" in flags


# --- counters, interfaces, CLI bits, report -------------------------------------------------------------------


def test_watch_highlights_only_counters_that_moved() -> None:
    def chains(n: int) -> list[ChainCounters]:
        rules = [RuleCounter(1, "-s 127.0.0.6/32 -o lo -j RETURN", n, 60 * n),
                 RuleCounter(4, "-m owner --uid-owner 1337 -j RETURN", 3, 180)]
        return [ChainCounters("ISTIO_OUTPUT", "-", 0, 0, rules)]
    first, second = counter_map(chains(1)), counter_map(chains(2))
    assert changed(None, first) == set()
    assert changed(first, second) == {("ISTIO_OUTPUT", 1)}


def test_net_dev_parsing_and_deltas() -> None:
    text = ("Inter-|   Receive                            |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop\n"
            "    lo:     600      10    0    0    0     0          0         0      600      10    0    0 0 0 0 0\n"
            "  eth0:    1000       6    0    0    0     0          0         0      800       4    0    0 0 0 0 0\n")
    before = parse_net_dev(text)
    assert before == {"lo": (10, 10), "eth0": (6, 4)}
    assert iface_deltas(before, {"lo": (10, 10), "eth0": (9, 8)}) == {"eth0": [3, 4]}


def test_send_escapes() -> None:
    assert unescape("GET / HTTP/1.1\\r\\n\\r\\n") == b"GET / HTTP/1.1\r\n\r\n"
    assert unescape("ping") == b"ping"


def test_run_report_prints_the_trace_under_a_traced_probe() -> None:
    trace = trace_of(recorded("inbound-1-10")).to_json()
    result = CheckResult(0, "probe", "client → web:8080: reply", {}, Verdict(True, "reply", "reply", "ok",
                                                                             {"trace": trace}), 1.0)
    console = Console(width=200, record=True)
    console.print(check_line(result))
    text = console.export_text()
    assert "leg 1  web-1-10 sidecar → web-1-10 app" in text and "ISTIO_IN_REDIRECT#1" in text


def test_multi_node_path_through_a_node_port_and_the_gateway() -> None:
    """Recorded on ingress-to-pod: testpc → node-2:30081 (externalTrafficPolicy Cluster): node-2 DNATs and
    masquerades, hops to node-1 where the gateway runs, the gateway goes to the nginx pod back on node-2."""
    t = trace_of(recorded("ingress-cluster-multinode"))
    gateway = "istio-system/istio-ingressgateway-0 gateway"
    assert [(s.kind, s.actor, s.target) for s in t.steps if s.target] == [
        ("send", "testpc (external)", "node-2"), ("route", "node-2", "node-1"), ("deliver", "node-1", gateway),
        ("send", gateway, "node-1"), ("route", "node-1", "node-2"), ("deliver", "node-2", "nginx sidecar"),
        ("local", "nginx sidecar", "nginx app"), ("outcome", "nginx app", "testpc (external)")]
    assert all(s.observed for s in t.steps)
    nat = next(s for s in t.steps if s.kind == "nat")
    assert "DNAT 192.168.10.11:30081 → 10.244.0.10:8080" in nat.summary and "masquerade 192.168.10.254:" in nat.summary
    assert "across the node LAN" in t.steps[2].summary and "not encapsulated" in t.steps[2].summary
    proxy = next(s for s in t.steps if s.kind == "proxy" and s.actor == gateway)
    assert "its listener 10.244.0.10:8080" in proxy.summary
    assert reply_path(t) == ["nginx app", "nginx sidecar", gateway, "testpc (external)"]


def test_svg_draws_the_reply_through_every_proxy_and_failures_in_red() -> None:
    t = trace_of(recorded("ingress-cluster-multinode"))
    root = ET.fromstring(render_svg(t).split("\n", 1)[1])
    outcome = next(g for g in root.iter(f"{SVG}g") if g.get("data-kind") == "outcome")
    assert len(outcome.findall(f"{SVG}line")) == 3  # app → sidecar → gateway → client
    reset = trace_of(recorded("lo-1-10-reset"))
    root = ET.fromstring(render_svg(reset).split("\n", 1)[1])
    outcome = next(g for g in root.iter(f"{SVG}g") if g.get("data-kind") == "outcome")
    assert all(line.get("stroke") == "#c0392b" for line in outcome.findall(f"{SVG}line"))
    assert any("RST" in (t.text or "") for t in outcome.iter(f"{SVG}text"))
    labels = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert ":15006" in labels and "…" not in labels  # ports kept, nothing cut


def test_svg_wraps_at_separators_not_inside_words() -> None:
    from netlab.trace.svg import _wrap

    lines = _wrap("flags UF upstream_connect_error to outbound|9080||reviews.default.svc.cluster.local", 24)
    assert "upstream_connect_error" in lines and all(len(line) <= 24 for line in lines)
    assert "".join(lines).replace(" ", "") == "flagsUFupstream_connect_errortooutbound|9080||reviews.default." \
        "svc.cluster.local"


def test_tproxy_inbound_is_captured_by_the_mangle_walk_and_taken_on_15006() -> None:
    """TPROXY rewrites no address, so conntrack shows no capture: the mangle PREROUTING → ISTIO_INBOUND →
    ISTIO_TPROXY walk does, and the proxy's line (the client's own address, kept) shows it accepted."""
    t = trace_of(recorded("tproxy"))
    deliver = next(s for s in t.steps if s.kind == "deliver")
    assert deliver.target == "tp sidecar" and deliver.observed
    assert "ISTIO_TPROXY" in deliver.summary and "captured, to :15006" in deliver.summary
    assert any("mangle/ISTIO_TPROXY#1" in r for r in deliver.rules)
    proxy = next(s for s in t.steps if s.kind == "proxy")
    assert proxy.observed and "on :15006" in proxy.summary
    accept = next(s for s in t.steps if s.kind == "accept")
    assert accept.observed and accept.actor == "tp app"
    assert not any("ISTIO_TPROXY" in u for u in t.unattributed)
