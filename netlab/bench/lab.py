"""Lab benchmark (issue 2): time to bring N pods up (holders, veths, routes) and down, and RSS per pause holder.

Targets: 50 pods up and down again in under 5 s in total on 2 cores; pause RSS ≤ 2 MB.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from netlab.bench.report import fmt, format_table, median
from netlab.engine import build, teardown
from netlab.model.loader import parse_scenario

TARGET_SECONDS, TARGET_RSS_KB = 5.0, 2048
TARGETS = {(50, 1), (100, 4)}  # (pods, nodes) with the time target


@dataclass(frozen=True)
class LabRun:
    pods: int
    nodes: int
    up_s: float
    down_s: float
    rss_kb: list[int]  # VmRSS of every holder (pods and the node)
    problems: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.up_s + self.down_s


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def measure(pods: int, nodes: int = 1) -> LabRun:
    """One up/down of a lab with `pods` plain pods (links and routes, no sidecars), spread over `nodes` nodes."""
    name = f"bench-lab-{pods}-{secrets.token_hex(2)}"
    spec: dict[str, object] = {"name": name, "pods": {f"p{i}": {} for i in range(pods)}}
    if nodes > 1:
        spec["nodes"] = {f"node-{i + 1}": {} for i in range(nodes)}
    scenario = parse_scenario(spec, source="bench")
    start = time.perf_counter()
    state = build.up(scenario, "<netlab bench lab>", name)
    up_s = time.perf_counter() - start
    try:
        rss = [vm_rss_kb(m["pid"]) for m in state.members.values()]
    finally:
        start = time.perf_counter()
        problems = teardown.down(state.lab)
        down_s = time.perf_counter() - start
    return LabRun(pods, nodes, up_s, down_s, rss, problems)


def run(pod_counts: Sequence[int], repeat: int = 3, nodes: int = 1,
        progress: Callable[[str], None] = lambda _m: None) -> list[list[LabRun]]:
    """`repeat` runs per pod count, interleaved so that a slow moment of the machine hits every count alike."""
    results: list[list[LabRun]] = [[] for _ in pod_counts]
    for r in range(repeat):
        for i, n in enumerate(pod_counts):
            progress(f"round {r + 1}/{repeat}: {n} pods on {nodes} node(s)")
            results[i].append(measure(n, nodes))
    return results


@dataclass(frozen=True)
class LabSummary:
    """Medians of one pod count's runs, with the verdicts where the issue sets a target."""

    pods: int
    nodes: int
    runs: int
    up_s: float
    down_s: float
    rss_kb_median: float
    rss_kb_max: int
    problems: list[str]

    @property
    def total_s(self) -> float:
        return self.up_s + self.down_s

    @property
    def per_pod_ms(self) -> float:
        return self.total_s / self.pods * 1000

    @property
    def rss_ok(self) -> bool:
        return self.rss_kb_max <= TARGET_RSS_KB

    @property
    def time_ok(self) -> bool | None:
        return self.total_s < TARGET_SECONDS if (self.pods, self.nodes) in TARGETS else None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "total_s": self.total_s, "per_pod_ms": self.per_pod_ms, "rss_ok": self.rss_ok,
                "time_ok": self.time_ok}


def summarize(runs: Sequence[LabRun]) -> LabSummary:
    rss = [kb for r in runs for kb in r.rss_kb]
    return LabSummary(pods=runs[0].pods, nodes=runs[0].nodes, runs=len(runs), up_s=median([r.up_s for r in runs]),
                      down_s=median([r.down_s for r in runs]), rss_kb_median=median(rss), rss_kb_max=max(rss),
                      problems=[p for r in runs for p in r.problems])


def table(summaries: Sequence[LabSummary]) -> str:
    headers = ["pods", "nodes", "up s", "down s", "total s", "ms/pod", "pause RSS median/max", "targets"]
    rows = []
    for s in summaries:
        verdicts = [] if s.time_ok is None else [f"< {TARGET_SECONDS:g} s {'ok' if s.time_ok else 'MISS'}"]
        verdicts.append(f"RSS ≤ 2 MB {'ok' if s.rss_ok else 'MISS'}")
        rss = f"{s.rss_kb_median / 1024:.2f} / {s.rss_kb_max / 1024:.2f} MB"
        rows.append([str(s.pods), str(s.nodes), fmt(s.up_s), fmt(s.down_s), fmt(s.total_s), fmt(s.per_pod_ms), rss,
                     ", ".join(verdicts)])
    runs = summaries[0].runs if summaries else 0
    return format_table(headers, rows, left=(0, 7)) + f"\n({os.cpu_count()} cores; medians of {runs} run(s) per row)"
