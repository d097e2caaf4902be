"""Report a run: one line per check while running, a summary table, one JSON document, JUnit XML (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from netlab.verdict import CheckResult


@dataclass(frozen=True)
class RunInfo:
    lab: str
    scenario: str  # its name
    path: str
    description: str
    duration_s: float = 0.0


def check_line(result: CheckResult) -> Group:
    """`PASS  #3 client → eth0.rev-1-9:8080: reset` and, indented below, the explanation."""
    v = result.verdict
    line = Text()
    line.append(f"{v.word:4}", style="bold green" if v.passed else "bold red")
    line.append(f" #{result.index + 1:<2} {result.title}")
    if not v.passed:
        line.append(f"  (expected {v.expected}, observed {v.observed})", style="red")
    parts = [line, Padding(Text(v.explanation, style="dim" if v.passed else ""), (0, 0, 0, 9))]
    if "trace" in v.details:  # `trace: true` on the probe: its path hop by hop
        from netlab.trace.model import Trace  # late: keeps report importable without the trace package's deps
        from netlab.trace.text import render_text

        parts.append(Padding(Text(render_text(Trace.from_json(v.details["trace"]), evidence=False)), (0, 0, 0, 9)))
    if v.details.get("captures") and "trace" not in v.details:  # a trace lists its own
        parts.append(Padding(Text("pcap: " + ", ".join(v.details["captures"]), style="dim"), (0, 0, 0, 9)))
    return Group(*parts)


def summary(results: list[CheckResult]) -> dict[str, int]:
    passed = sum(r.passed for r in results)
    return {"total": len(results), "passed": passed, "failed": len(results) - passed}


def summary_table(info: RunInfo, results: list[CheckResult]) -> Table:
    s = summary(results)
    table = Table(title=f"{info.scenario}: {s['passed']}/{s['total']} checks passed ({info.duration_s:.1f} s)",
                  title_justify="left")
    for column in ("#", "check", "expected", "observed", "verdict"):
        table.add_column(column, overflow="fold")
    for r in results:
        word = Text(r.verdict.word, style="bold green" if r.passed else "bold red")
        table.add_row(str(r.index + 1), r.title, r.verdict.expected, r.verdict.observed, word)
    return table


def measurements_table(results: list[CheckResult]) -> Table | None:
    """Hop counts and latencies side by side, for probes that measured them."""
    rows = [r for r in results if "hops" in r.verdict.details or "latency_ms" in r.verdict.details]
    if not rows:
        return None
    table = Table(title="measured (this machine, this run)", title_justify="left")
    for column in ("#", "probe", "TCP connections", "samples", "min ms", "p50 ms", "p90 ms", "max ms"):
        table.add_column(column)
    for r in rows:
        lat = r.verdict.details.get("latency_ms", {})
        table.add_row(str(r.index + 1), r.title, str(r.verdict.details.get("hops", "")),
                      *(str(lat.get(k, "")) for k in ("samples", "min", "p50", "p90", "max")))
    return table


def print_report(console: Console, info: RunInfo, results: list[CheckResult]) -> None:
    console.print()
    console.print(summary_table(info, results))
    extra = measurements_table(results)
    if extra is not None:
        console.print(extra)


def to_json(info: RunInfo, results: list[CheckResult]) -> dict[str, Any]:
    return {
        "lab": info.lab,
        "scenario": {"name": info.scenario, "path": info.path, "description": info.description},
        "checks": [
            {
                "index": r.index + 1,
                "kind": r.kind,
                "title": r.title,
                "check": r.spec,
                "expected": r.verdict.expected,
                "observed": r.verdict.observed,
                "verdict": r.verdict.word,
                "explanation": r.verdict.explanation,
                "details": r.verdict.details,
                "duration_ms": round(r.duration_ms, 3),
            }
            for r in results
        ],
        "summary": {**summary(results), "duration_s": round(info.duration_s, 3),
                    "result": "PASS" if all(r.passed for r in results) else "FAIL"},
    }


def to_junit(info: RunInfo, results: list[CheckResult]) -> str:
    """One <testsuite> (the scenario) with one <testcase> per check; failures carry the explanation."""
    s = summary(results)
    suites = ET.Element("testsuites", name="netlab", tests=str(s["total"]), failures=str(s["failed"]),
                        errors="0", time=f"{info.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=info.scenario, tests=str(s["total"]),
                          failures=str(s["failed"]), errors="0", skipped="0", time=f"{info.duration_s:.3f}")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="lab", value=info.lab)
    ET.SubElement(props, "property", name="scenario_path", value=info.path)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"netlab.{info.scenario}",
                             name=f"#{r.index + 1} {r.title}", time=f"{r.duration_ms / 1000:.3f}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=f"expected {r.verdict.expected}, "
                                                             f"observed {r.verdict.observed}", type="CheckFailed")
            failure.text = r.verdict.explanation
        out = ET.SubElement(case, "system-out")
        out.text = r.verdict.explanation
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
