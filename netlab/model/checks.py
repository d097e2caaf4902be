"""Cross-references of the `checks:` part of a scenario: names must exist, observations need a probe before them."""

from __future__ import annotations

from netlab.model.problems import Problem, unknown
from netlab.model.schema import ProbeCheck, Scenario


def check_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    pods, externals = set(scenario.pods), set(scenario.external)
    targets = pods | externals | set(scenario.services)
    seen_probe = False
    for i, check in enumerate(scenario.checks):
        if isinstance(check, ProbeCheck):
            seen_probe = True
            if check.from_ not in pods:
                problems.append(Problem(f"checks.{i}.from", unknown("pod", check.from_, pods)))
            host, sep, port = check.to.rpartition(":")
            if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
                problems.append(Problem(f"checks.{i}.to", f"'{check.to}' is not NAME:PORT or IP:PORT"))
            elif host not in targets and not is_ipv4(host):
                problems.append(Problem(f"checks.{i}.to", unknown("pod, service or external host", host, targets)))
            continue
        expect = check.expect
        if check.pod not in pods | externals:
            problems.append(Problem(f"checks.{i}.pod", unknown("pod or external host", check.pod, pods | externals)))
            continue
        app = scenario.pods[check.pod].app if check.pod in pods else scenario.external[check.pod].app
        if expect.app_peer is not None and (app is None or app.kind == "command"):
            problems.append(Problem(f"checks.{i}.expect.app_peer",
                                    f"'{check.pod}' runs no built-in app (pong, echo, http) that records its peers"))
        if expect.needs_probe and not seen_probe:
            problems.append(Problem(f"checks.{i}.expect",
                                    "rules_hit, rules_not_hit, conntrack and proxy_log describe the probe before "
                                    "this check; put a probe check (from/to) above it"))
        has_sidecar = check.pod in pods and scenario.pods[check.pod].sidecar is not None
        for key in ("rules_hit", "rules_not_hit", "proxy_log"):
            if getattr(expect, key) is not None and not has_sidecar:
                problems.append(Problem(f"checks.{i}.expect.{key}",
                                        f"'{check.pod}' has no sidecar: no istio rules and no access log"))
    return problems


def is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
