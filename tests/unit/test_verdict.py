"""Verdicts: expected vs observed, and explanations that name the real path (pure: built observations)."""

from __future__ import annotations

import pytest

from netlab.model.names import Named, Names
from netlab.model.schema import PodCheck, ProbeCheck
from netlab.probe.facts import AppFacts, LabFacts, MemberFacts, ServiceFacts, SidecarFacts
from netlab.probe.observed import (
    ConntrackEntry,
    PodObservation,
    ProbeObservation,
    ProbeResult,
    RuleDelta,
    parse_conntrack_line,
    parse_log_line,
)
from netlab.proxy.accesslog import Entry, format_text
from netlab.verdict import judge_pod, judge_probe, value_matches

CLIENT, POD = "10.244.0.10", "10.244.0.13"


def facts(app_host: str = "127.0.0.1", istio: str = "1.10", edits: tuple[str, ...] = ()) -> LabFacts:
    side = SidecarFacts(istio, "REDIRECT", None, (8080,), edits)
    return LabFacts(
        "t",
        {
            "client": MemberFacts("client", "pod", CLIENT),
            "lo-1-10": MemberFacts("lo-1-10", "pod", POD, AppFacts("pong", app_host, 8080), side),
        },
        {"lo": ServiceFacts("lo", "10.96.0.12", {8080: 8080}, ("lo-1-10",))},
        ("198.51.100.1",),
        Names([Named(p, p, "default") for p in ("client", "lo-1-10")], [Named("lo", "lo", "default")], set()),
    )


def probe_check(expect: object, **extra: object) -> ProbeCheck:
    return ProbeCheck.model_validate({"from": "client", "to": "lo:8080", "expect": expect, **extra})


def result(outcome: str, data: bytes = b"", port: int = 51108) -> ProbeResult:
    return ProbeResult(outcome, data, (CLIENT, port), ("10.96.0.12", 8080), 1.2,
                       "ECONNRESET" if outcome == "reset" else "")


def log_line(cluster: str, remote: tuple[str, int], **fields: object) -> str:
    """A line as the proxy writes it (Istio's TEXT format), for an inbound connection to POD:8080."""
    return format_text(Entry(1795000000.2, cluster, (POD, 8080), remote, **fields))  # type: ignore[arg-type]


REFUSED_LINE = log_line("inbound|8080||", (CLIENT, 51108), upstream_host=(POD, 8080), flags="UF,URX",
                        transport_failure="delayed_connect_error:_111", bytes_received=5)
OK_LINE = log_line("inbound|8080||", (CLIENT, 51108), upstream_host=(POD, 8080), upstream_local=("127.0.0.6", 53762),
                   bytes_received=5, bytes_sent=5, duration_ms=3)


def test_1_10_reset_is_explained_by_the_app_listening_on_loopback() -> None:
    line = parse_log_line("lo-1-10", REFUSED_LINE)
    assert line is not None
    v = judge_probe(probe_check("reset"), ProbeObservation(result("reset"), [line]), facts())
    assert v.passed and v.word == "PASS"
    assert f"forwarded {POD}:8080 → {POD}:8080 from 127.0.0.6" in v.explanation
    assert "the app listens on 127.0.0.1:8080 (loopback) only" in v.explanation
    assert "delayed_connect_error:_111: ECONNREFUSED, Connection refused" in v.explanation
    assert "the proxy reset the client" in v.explanation
    assert v.explanation.index("the node DNATs") < v.explanation.index("took it on 15006")


def test_expected_reply_but_reset_fails_and_says_what_was_expected() -> None:
    line = parse_log_line("lo-1-10", REFUSED_LINE)
    assert line is not None
    v = judge_probe(probe_check({"reply": "pong"}), ProbeObservation(result("reset"), [line]), facts())
    assert not v.passed and v.word == "FAIL"
    assert v.expected == "reply 'pong'" and v.observed == "reset"
    assert "but the check expected reply 'pong'" in v.explanation


@pytest.mark.parametrize(("data", "want", "passed"), [(b"pong\n", "pong", True), (b"  pong  ", "pong", True),
                                                      (b"pong!\n", "pong", False), (b"", "pong", False)])
def test_reply_text_is_compared_stripped(data: bytes, want: str, passed: bool) -> None:
    outcome = "reply" if data else "closed"
    v = judge_probe(probe_check({"reply": want}), ProbeObservation(result(outcome, data)), facts("0.0.0.0"))
    assert v.passed is passed


def test_outcome_word_must_match_exactly() -> None:
    obs = ProbeObservation(result("refused"))
    assert judge_probe(probe_check("refused"), obs, facts()).passed
    assert not judge_probe(probe_check("reset"), obs, facts()).passed


def test_no_proxy_line_to_health_port_says_the_proxy_answered_directly() -> None:
    check = ProbeCheck.model_validate({"from": "client", "to": "lo-1-10:15021", "expect": "reply"})
    v = judge_probe(check, ProbeObservation(result("reply", b"HTTP/1.1 200 OK")), facts())
    assert v.passed
    assert "bypassed its sidecar" in v.explanation and "0.0.0.0:15021" in v.explanation


def test_loop_guard_explains_the_missing_rule_and_the_edit() -> None:
    first = parse_log_line("lo-1-10", log_line("inbound|8080||", (CLIENT, 51108), upstream_host=(POD, 8080),
                                               upstream_local=("127.0.0.6", 40000), flags="UC", bytes_received=5,
                                               termination_details="upstream_reset:ECONNRESET(104)"))
    loop = parse_log_line("lo-1-10", log_line("BlackHoleCluster", ("127.0.0.6", 40000), flags="NR",
                                              termination_details="loop_detected:127.0.0.6_captured_again"))
    assert first and loop
    v = judge_probe(probe_check("reset"), ProbeObservation(result("reset"), [first, loop]),
                    facts("0.0.0.0", edits=("delete nat/ISTIO_OUTPUT#1",)))
    assert v.passed
    assert "-o lo -s 127.0.0.6/32 -j RETURN" in v.explanation
    assert "rule_edits: delete nat/ISTIO_OUTPUT#1" in v.explanation
    assert "OUTPUT → ISTIO_OUTPUT → ISTIO_IN_REDIRECT" in v.explanation  # the second trip is made in the pod
    # failures unwind: the loop guard first, then the upstream reset of the first connection
    assert v.explanation.index("loop guard") < v.explanation.index("the upstream reset")


def conn(text: str) -> ConntrackEntry:
    entry = parse_conntrack_line(text)
    assert entry is not None
    return entry


def test_hops_count_distinct_connections_and_fail_on_mismatch() -> None:
    entries = [
        ("lo-1-10", conn(f"tcp 6 118 TIME_WAIT src={CLIENT} dst={POD} sport=51108 dport=8080 src={POD} "
                         f"dst={CLIENT} sport=15006 dport=51108 [ASSURED] mark=0 use=1")),
        ("_node", conn(f"tcp 6 118 TIME_WAIT src={CLIENT} dst=10.96.0.12 sport=51108 dport=8080 src={POD} "
                       f"dst={CLIENT} sport=8080 dport=51108 [ASSURED] mark=0 use=1")),
        ("lo-1-10", conn(f"tcp 6 118 TIME_WAIT src=127.0.0.6 dst={POD} sport=53762 dport=8080 src={POD} "
                         f"dst=127.0.0.6 sport=8080 dport=53762 [ASSURED] mark=0 use=1")),
    ]
    obs = ProbeObservation(result("reply", b"pong"), connections=entries, samples_ms=[1.0, 2.0, 3.0])
    assert obs.hops == 2
    assert judge_probe(probe_check({"reply": "pong"}, hops=2), obs, facts("0.0.0.0")).passed
    wrong = judge_probe(probe_check({"reply": "pong"}, hops=1), obs, facts("0.0.0.0"))
    assert not wrong.passed and "2 TCP connection(s)" in wrong.observed
    assert wrong.details["latency_ms"]["p50"] == 2.0


def pod_check(**expect: object) -> PodCheck:
    return PodCheck.model_validate({"pod": "lo-1-10", "expect": expect})


def test_app_peer_127_0_0_6_is_explained_by_the_1_10_sidecar() -> None:
    v = judge_pod(pod_check(app_peer="127.0.0.6"), PodObservation("lo-1-10", 0, peers=["127.0.0.6 53762"]),
                  facts("0.0.0.0"))
    assert v.passed and "forwards inbound connections to the pod IP from 127.0.0.6" in v.explanation
    v = judge_pod(pod_check(app_peer="127.0.0.1"), PodObservation("lo-1-10", 0, peers=["127.0.0.6 53762"]),
                  facts("0.0.0.0"))
    assert not v.passed and v.observed == "app_peer 127.0.0.6"


def test_app_peer_with_no_connection_fails() -> None:
    v = judge_pod(pod_check(app_peer="127.0.0.6"), PodObservation("lo-1-10", 2), facts())
    assert not v.passed and "accepted no connection during probe #3" in v.explanation


def test_rules_hit_and_not_hit_use_deltas_and_missing_rules_fail() -> None:
    rules = {"nat/ISTIO_OUTPUT#1": RuleDelta("nat/ISTIO_OUTPUT#1", "-s 127.0.0.6/32 -o lo -j RETURN", 1, 9),
             "nat/ISTIO_OUTPUT#4": RuleDelta("nat/ISTIO_OUTPUT#4", "-m owner --uid-owner 1337 -j RETURN", 0, 9)}
    obs = PodObservation("lo-1-10", 0, rules=rules)
    assert judge_pod(pod_check(rules_hit=["nat/ISTIO_OUTPUT#1"], rules_not_hit=["nat/ISTIO_OUTPUT#4"]), obs,
                     facts()).passed
    assert not judge_pod(pod_check(rules_hit=["nat/ISTIO_OUTPUT#4"]), obs, facts()).passed
    rules["nat/ISTIO_OUTPUT#12"] = RuleDelta("nat/ISTIO_OUTPUT#12", None, None, 9)
    missing = judge_pod(pod_check(rules_not_hit=["nat/ISTIO_OUTPUT#12"]), obs, facts())
    assert not missing.passed and "does not exist" in missing.explanation and "9 rule(s)" in missing.explanation


def test_conntrack_fields_match_any_entry_of_the_probe() -> None:
    entries = [conn(f"tcp 6 118 TIME_WAIT src={CLIENT} dst={POD} sport=51108 dport=8080 src={POD} dst={CLIENT} "
                    "sport=15006 dport=51108 [ASSURED] mark=0 use=1")]
    ok = judge_pod(pod_check(conntrack={"reply_sport": 15006, "orig_src": CLIENT}),
                   PodObservation("lo-1-10", 0, conntrack=entries), facts())
    assert ok.passed and "REDIRECT rewrote the destination" in ok.explanation
    bad = judge_pod(pod_check(conntrack={"reply_sport": 15001}), PodObservation("lo-1-10", 0, conntrack=entries),
                    facts())
    assert not bad.passed and bad.observed == "conntrack reply_sport=15006"
    none = judge_pod(pod_check(conntrack={"reply_sport": 15006}), PodObservation("lo-1-10", 0), facts())
    assert not none.passed and "no conntrack entry" in none.explanation


def test_proxy_log_addresses_match_without_port() -> None:
    line = parse_log_line("lo-1-10", OK_LINE)
    assert line is not None
    obs = PodObservation("lo-1-10", 0, lines=[line])
    assert judge_pod(pod_check(proxy_log={"upstream_local": "127.0.0.6", "cluster": "inbound|8080||"}), obs,
                     facts()).passed
    assert not judge_pod(pod_check(proxy_log={"flags": "UF"}), obs, facts()).passed


@pytest.mark.parametrize(("expected", "actual", "ok"), [
    ("127.0.0.6", "127.0.0.6:53762", True), ("127.0.0.6:53762", "127.0.0.6:53762", True),
    ("127.0.0.6:1", "127.0.0.6:53762", False), (15006, "15006", True), ("UF", "-", False), ("x", None, False),
])
def test_value_matches(expected: str | int, actual: str | None, ok: bool) -> None:
    assert value_matches(expected, actual) is ok
