"""Report formats: JSON document, JUnit XML (validated with xml.etree), the summary table and the check line."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from netlab.report import RunInfo, check_line, print_report, summary, to_json, to_junit
from netlab.verdict import CheckResult, Verdict

INFO = RunInfo("lab1", "lo-vs-eth0", "/x/lo-vs-eth0.yaml", "the matrix", 2.5)


def results() -> list[CheckResult]:
    ok = Verdict(True, "reply 'pong'", "reply 'pong'", "client → service → pong → as expected",
                 {"probe": {"outcome": "reply"}, "hops": 2, "latency_ms": {"samples": 3, "min": 1.0, "p50": 2.0,
                                                                           "p90": 3.0, "max": 3.0}})
    bad = Verdict(False, "reset", "reply 'pong'", "the sidecar forwarded <to> 127.0.0.1 & replied → but expected "
                  "reset", {})
    return [CheckResult(0, "probe", "client → lo:8080: reply 'pong'", {"from": "client"}, ok, 12.0),
            CheckResult(1, "pod", "lo-1-9: app_peer", {"pod": "lo-1-9"}, bad, 0.5)]


def test_summary_counts() -> None:
    assert summary(results()) == {"total": 2, "passed": 1, "failed": 1}
    assert summary([]) == {"total": 0, "passed": 0, "failed": 0}


def test_json_is_one_document_with_every_check() -> None:
    doc = json.loads(json.dumps(to_json(INFO, results())))
    assert doc["lab"] == "lab1" and doc["scenario"]["name"] == "lo-vs-eth0"
    assert doc["summary"] == {"total": 2, "passed": 1, "failed": 1, "duration_s": 2.5, "result": "FAIL"}
    first, second = doc["checks"]
    assert first["verdict"] == "PASS" and first["index"] == 1 and first["expected"] == "reply 'pong'"
    assert second["verdict"] == "FAIL" and second["explanation"].startswith("the sidecar forwarded")
    assert {"check", "observed", "details", "kind", "title"} <= set(first)


def test_junit_structure() -> None:
    text = to_junit(INFO, results())
    root = ET.fromstring(text.split("\n", 1)[1])  # parsed after the XML declaration
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "lo-vs-eth0" and suites[0].get("errors") == "0"
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["#1 client → lo:8080: reply 'pong'", "#2 lo-1-9: app_peer"]
    assert all(c.get("classname") == "netlab.lo-vs-eth0" and float(c.get("time") or "x") >= 0 for c in cases)
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "expected reset, observed reply 'pong'"
    assert failure.text and "<to> 127.0.0.1 & replied" in failure.text  # escaped on the way out, intact on the way in


def test_junit_with_all_passing_has_no_failure_elements() -> None:
    root = ET.fromstring(to_junit(INFO, results()[:1]).encode())
    assert root.get("failures") == "0" and not root.findall(".//failure")


def render(renderable: object) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(renderable)
    return buf.getvalue()


def test_check_line_and_tables() -> None:
    line = render(check_line(results()[1]))
    assert line.startswith("FAIL #2  lo-1-9: app_peer") and "(expected reset, observed reply 'pong')" in line
    assert line.splitlines()[1].startswith(" " * 9 + "the sidecar forwarded")
    buf = io.StringIO()
    print_report(Console(file=buf, width=200, color_system=None), INFO, results())
    text = buf.getvalue()
    assert "lo-vs-eth0: 1/2 checks passed" in text
    assert "measured" in text and "TCP connections" in text  # the hop/latency table appears when measured


def test_junit_is_read_by_a_common_consumer() -> None:
    """junitparser is what many CI result viewers and scripts use to read JUnit XML."""
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromstring(to_junit(INFO, results()))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = [case for suite in suites for case in suite]
    assert len(cases) == 2 and cases[0].is_passed
    assert not cases[1].is_passed and cases[1].result[0].message == "expected reset, observed reply 'pong'"
