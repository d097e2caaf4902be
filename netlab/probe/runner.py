"""Run a scenario's checks against a lab that is up: probe, observe, judge, one result per check.

A pod check describes the probe check just above it: before that probe the runner notes where each access log and
peers file ends and reads the rule counters the pod checks name; after it, it reads what was appended, the
counters again (deltas) and conntrack. Access-log lines are linked to the probe by addresses: a line belongs to
the probe when its downstream is the probe's socket or the upstream socket of a line that already belongs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState
from netlab.errors import NetlabError
from netlab.http_reply import parse_response
from netlab.model.istio import describe
from netlab.model.schema import Check, MeshStep, PodCheck, ProbeCheck, Scenario
from netlab.probe.connect import TlsClient, probe
from netlab.probe.facts import LabFacts, lab_facts
from netlab.probe.http import request_bytes, server_name
from netlab.probe.observed import (
    Addr,
    ConntrackEntry,
    LogLine,
    PodObservation,
    ProbeObservation,
    ProbeResult,
    link,
    parse_app_log_line,
    rule_deltas,
)
from netlab.probe.readers import (
    file_size,
    last_line,
    linked_lines,
    masqueraded,
    read_conntrack,
    read_counters,
    read_from,
    read_log_from,
)
from netlab.verdict import CheckResult, Verdict, expect_text, judge_pod, judge_probe

APP_LOG_SETTLE = 0.05  # seconds for an app's access-log line to follow its answer


@dataclass
class _Marks:
    """Where each file ended and what the counters were just before the observed probe."""

    logs: dict[str, int] = field(default_factory=dict)
    peers: dict[str, int] = field(default_factory=dict)
    app_logs: dict[str, int] = field(default_factory=dict)
    counters: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)


def title_of(check: ProbeCheck | PodCheck) -> str:
    if check.name:
        return check.name
    if isinstance(check, MeshStep):
        return f"{check.action} " + (check.resources if isinstance(check.resources, str)
                                      else ", ".join(describe(r) for r in check.resources))
    if isinstance(check, ProbeCheck):
        return f"{check.from_} → {check.to}: {expect_text(check.expect)}"
    return f"{check.pod}: " + ", ".join(check.expect.model_dump(exclude_none=True))


class Runner:
    def __init__(self, state: LabState, scenario: Scenario, capture_dir: str | None = None) -> None:
        self.state = state
        self.facts: LabFacts = self.read_facts()
        self.checks = [canonical(check, self.facts) for check in scenario.checks]
        self.capture_dir = capture_dir  # a pcap per probe on lo and eth0 of each pod involved
        self.extra: dict[str, Any] = {}  # the last probe's trace and pcap files, for the verdict's details

    # --- paths ----------------------------------------------------------------------------------------------

    def access_log(self, pod: str) -> str | None:
        sidecar = self.state.members.get(pod, {}).get("sidecar")
        return sidecar["access_log"] if sidecar else None

    def app_log(self, member: str) -> str:
        """The app's output: a built-in http app's access log, or whatever a command app prints."""
        return self.state.member_file("logs", member, "app.log")

    def app_lines(self, member: str, mark: int) -> list[str]:
        """The app's access-log lines since `mark`; an app writes its line after answering, so look twice."""
        for _ in range(2):
            lines = [ln for ln in read_from(self.app_log(member), mark).splitlines() if parse_app_log_line(ln)]
            if lines:
                return lines
            time.sleep(APP_LOG_SETTLE)
        return []

    def node_paths(self) -> list[str]:
        return [member_netns_path(self.state, m) for m, info in self.state.members.items() if info["kind"] == "node"]

    def sidecar_pods(self) -> list[str]:
        return [n for n in self.state.members if self.access_log(n)]

    # --- running --------------------------------------------------------------------------------------------

    def run(self, on_result: Callable[[CheckResult], None] = lambda _r: None) -> list[CheckResult]:
        results: list[CheckResult] = []
        checks = self.checks
        last_probe: tuple[int, ProbeCheck, ProbeObservation, _Marks] | None = None
        for i, check in enumerate(checks):
            started = time.monotonic()
            if isinstance(check, MeshStep):
                verdict, kind = self.run_step(check), "step"
            elif isinstance(check, ProbeCheck):
                followers = []
                for later in checks[i + 1:]:
                    if not isinstance(later, PodCheck):
                        break
                    followers.append(later)
                obs, marks = self.run_probe(check, followers, i)
                last_probe = (i, check, obs, marks)
                verdict = judge_probe(check, obs, self.facts)
                verdict.details.update(self.extra)
                kind = "probe"
            else:
                pod_obs = self.observe_pod(check, last_probe)
                verdict = judge_pod(check, pod_obs, self.facts)
                kind = "pod"
            result = CheckResult(i, kind, title_of(check), check.model_dump(by_alias=True, exclude_none=True),
                                 verdict, (time.monotonic() - started) * 1000)
            results.append(result)
            on_result(result)
        return results

    def read_facts(self) -> LabFacts:
        from netlab.engine.mesh import resources_of

        return lab_facts(self.state.lab_plan(), self.state.members, resources_of(self.state))

    def run_step(self, step: MeshStep) -> Verdict:
        """Apply or delete Istio resources in the running lab and push the new configuration to every sidecar."""
        from netlab.engine.mesh import applied, deleted, push, resources_of  # the engine's control plane

        resources = step.resources
        assert isinstance(resources, list)  # the loader read step files
        names = ", ".join(describe(r) for r in resources)
        current = resources_of(self.state)
        if step.action == "apply":
            wanted, missing = applied(current, resources), []
        else:
            wanted, missing = deleted(current, resources)
        if missing:
            return Verdict(False, f"delete {names}", f"not applied: {', '.join(missing)}",
                           f"{', '.join(missing)} was not in the lab; nothing changed")
        try:
            version = push(self.state, wanted)
        except NetlabError as err:
            return Verdict(False, f"{step.action} {names}", "push failed", str(err))
        self.facts = self.read_facts()  # the explanations follow the resources in force
        word = "applied" if step.action == "apply" else "deleted"
        return Verdict(True, f"{step.action} {names}", f"config version {version} on every sidecar (SYNCED)",
                       f"{word} {names}: the control plane recomputed every sidecar's configuration and pushed "
                       f"version {version}; each proxy reloaded it (open connections keep their route)")

    def run_probe(self, check: ProbeCheck, followers: list[PodCheck],
                  index: int = 0) -> tuple[ProbeObservation, _Marks]:
        target = self.facts.resolve(check.to, check.from_)
        source = self.facts.members[check.from_]
        netns = member_netns_path(self.state, check.from_)
        remote: Addr = (target.ip, target.port)
        payload = request_bytes(check.http, check.to) if check.http else check.send.encode()
        half_close = check.http is None
        tls = self.tls_client(check)
        before = {m: file_size(self.state.peers_file(m)) for m in self.state.members} if check.samples > 1 else {}
        samples = [probe(netns, remote, payload, check.timeout, source.ip, half_close=half_close, tls=tls)
                   for _ in range(check.samples - 1)]
        marks = self.mark(followers)
        result = self.observed_probe(check, index, netns, remote, payload, tls)
        results = [*samples, result]
        obs = ProbeObservation(result, samples_ms=[r.elapsed_ms for r in results] if check.samples > 1 else [])
        if check.samples > 1 and check.http is not None:
            # Who answered each request, as the http app says: upstream connections are pooled, so the apps'
            # accepted connections do not count requests.
            replies = [parse_response(r.data) for r in results]
            obs.answered = dict(Counter(pod for reply in replies if reply and (pod := reply.answered_by())))
        for member, size in before.items():
            accepted = len(read_from(self.state.peers_file(member), size).splitlines())
            if accepted and check.http is None:
                obs.answered[member] = accepted
        relevant = [m for m in (check.from_, target.member) if m and self.access_log(m)]
        logs = {pod: self.access_log(pod) or "" for pod in marks.logs}
        aliases = masqueraded(result.local, self.node_paths()) if target.kind == "nodeport" else ()
        obs.lines = linked_lines(result.local, logs, marks.logs, relevant, aliases)
        if check.trace or check.hops is not None:
            obs.connections = self.connections(result.local, obs.lines)
        return obs, marks

    def tls_client(self, check: ProbeCheck) -> TlsClient | None:
        """An https probe's TLS, trusting the lab's gateway CA (the root of the credentials the lab made)."""
        if check.http is None or check.http.scheme != "https":
            return None
        from netlab.engine.mesh import gateway_ca  # as below: the control plane's imports stay off the probe's path

        return TlsClient.trusting(str(gateway_ca(self.state).root_path), server_name(check.http, check.to))

    def observed_probe(self, check: ProbeCheck, index: int, netns: str, remote: Addr, payload: bytes,
                       tls: TlsClient | None = None) -> ProbeResult:
        """The probe itself; with `trace: true` recorded hop by hop, with a capture dir inside tcpdumps."""
        # Imported here: netlab.trace builds on this module.
        from netlab.trace.build import build_trace
        from netlab.trace.capture import captures
        from netlab.trace.collect import trace_probe

        self.extra = {}
        prefix = f"probe{index + 1:02d}"
        half_close = check.http is None
        if check.trace:
            result, recorded = trace_probe(self.state, self.facts, check.from_, check.to, payload,
                                           check.timeout, self.capture_dir, prefix, half_close, tls)
            self.extra["trace"] = build_trace(recorded).to_json()
            if recorded.captures:
                self.extra["captures"] = recorded.captures
            return result
        source = self.facts.members[check.from_]
        if not self.capture_dir:
            return probe(netns, remote, payload, check.timeout, source.ip, half_close=half_close, tls=tls)
        member = self.facts.resolve(check.to, check.from_).member
        pods = [(m, member_netns_path(self.state, m)) for m in dict.fromkeys([check.from_, member])
                if m and self.state.members[m]["kind"] == "pod"]
        with captures(pods, self.capture_dir, prefix) as paths:
            result = probe(netns, remote, payload, check.timeout, source.ip, half_close=half_close, tls=tls)
        self.extra["captures"] = paths
        return result

    def mark(self, followers: list[PodCheck]) -> _Marks:
        marks = _Marks()
        for pod in self.sidecar_pods():
            marks.logs[pod] = file_size(self.access_log(pod) or "")
        for member in self.state.members:
            marks.peers[member] = file_size(self.state.peers_file(member))
        for check in followers:
            if check.expect.app_log is not None:
                marks.app_logs[check.pod] = file_size(self.app_log(check.pod))
            refs = [*(check.expect.rules_hit or []), *(check.expect.rules_not_hit or [])]
            if refs and check.pod not in marks.counters:
                marks.counters[check.pod] = self.counters(check.pod, refs)[0]
        return marks

    def counters(self, pod: str, refs: list[str]) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
        backend = self.state.members[pod]["sidecar"]["backend"]
        return read_counters(member_netns_path(self.state, pod), {r.split("/")[0] for r in refs}, backend)

    def connections(self, local: Addr | None, lines: list[LogLine]) -> list[tuple[str, ConntrackEntry]]:
        """Every conntrack entry of the probe's connections, in path order. The node is read too (last): pods
        without rules may have no conntrack of their own, while the node tracks everything it routes or NATs."""
        sources = endpoints(local, lines)
        members = sorted(self.state.members, key=lambda m: self.state.members[m]["kind"] == "node")
        found: list[tuple[str, ConntrackEntry]] = []
        for member in members:
            found += [(member, e) for e in read_conntrack(member_netns_path(self.state, member))
                      if e.orig_source in sources]
        return sorted(found, key=lambda pair: sources.index(pair[1].orig_source))

    # --- pod checks -----------------------------------------------------------------------------------------

    def observe_pod(self, check: PodCheck,
                    last_probe: tuple[int, ProbeCheck, ProbeObservation, _Marks] | None) -> PodObservation:
        pod, exp = check.pod, check.expect
        if last_probe is None:
            return PodObservation(pod, None, last_peer=last_line(self.state.peers_file(pod)))
        index, _probe, probe_obs, marks = last_probe
        obs = PodObservation(pod, index)
        if exp.app_peer is not None:
            obs.peers = read_from(self.state.peers_file(pod), marks.peers.get(pod, 0)).splitlines()
        refs = [*(exp.rules_hit or []), *(exp.rules_not_hit or [])]
        if refs:
            after, lengths = self.counters(pod, refs)
            obs.rules = rule_deltas(refs, marks.counters.get(pod, {}), after, lengths)
        if exp.conntrack is not None:
            sources = endpoints(probe_obs.result.local, probe_obs.lines)
            entries = read_conntrack(member_netns_path(self.state, pod))
            obs.conntrack = [e for e in entries if e.orig_source in sources]
        if exp.app_log is not None:
            obs.app_lines = self.app_lines(pod, marks.app_logs.get(pod, 0))
        if exp.proxy_log is not None:
            obs.lines = [line for line in probe_obs.lines if line.pod == pod]
            if not obs.lines:  # a line flushed after the probe's wait: look once more
                log = self.access_log(pod) or ""
                later = read_log_from(pod, log, marks.logs[pod])
                obs.lines = [ln for ln in link(probe_obs.result.local, [*probe_obs.lines, *later]) if ln.pod == pod]
        return obs


def canonical(check: Check, facts: LabFacts) -> Check:
    """The check with its pods named by their member keys (NAMESPACE/POD outside the default namespace)."""
    if isinstance(check, MeshStep):
        return check
    if isinstance(check, ProbeCheck):
        return check.model_copy(update={"from_": facts.pod(check.from_)})
    return check.model_copy(update={"pod": facts.pod(check.pod)})


def endpoints(local: Addr | None, lines: list[LogLine]) -> list[Addr]:
    """Source addresses of the probe's connections in path order: its own socket, then each proxy's upstream."""
    found = [local] if local else []
    found += [a for line in lines if (a := line.addr("upstream_local")) is not None and a not in found]
    return found
