"""Cross-references of the `checks:` part of a scenario: names must exist, observations need a probe before them."""

from __future__ import annotations

from netlab.hostport import is_ipv4, split_host_port
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.names import Names, member_key, pod_instances
from netlab.model.problems import Problem, unknown
from netlab.model.schema import App, MeshStep, ProbeCheck, ProbeExpectReply, Scenario


def check_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    names = Names.of_scenario(scenario)
    pods = {p.key: p for p in pod_instances(scenario)}
    seen_probe = False
    workloads = {member_key(p.namespace, p.workload) for p in pods.values()}
    for i, check in enumerate(scenario.checks):
        if isinstance(check, MeshStep):
            continue
        if isinstance(check, ProbeCheck):
            seen_probe = True
            expect = check.expect
            if isinstance(expect, ProbeExpectReply) and expect.spread is not None:
                if check.samples < 2:
                    problems.append(Problem(f"checks.{i}.samples", "a spread needs samples, e.g. samples: 30"))
                for key in expect.spread:
                    if key not in pods and key not in workloads:
                        problems.append(Problem(f"checks.{i}.expect.spread", unknown(
                            "pod or Deployment", key, set(pods) | workloads)))
            namespace: str | None = DEFAULT_NAMESPACE  # an external host calls from outside: default's view
            if check.from_ not in scenario.external:
                try:
                    namespace = pods[names.pod(check.from_)].namespace
                except LookupError as err:
                    problems.append(Problem(f"checks.{i}.from", str(err)))
                    namespace = None
            try:
                host, _port = split_host_port(check.to)
            except ValueError as err:
                problems.append(Problem(f"checks.{i}.to", str(err)))
                continue
            if namespace is not None and names.host(host, namespace) is None and not is_ipv4(host):
                where = "" if namespace == DEFAULT_NAMESPACE else f" (from namespace '{namespace}')"
                kinds = "pod, service, external host or node" if scenario.nodes else "pod, service or external host"
                problems.append(Problem(f"checks.{i}.to", unknown(f"{kinds}{where}", host,
                                                                  set(names.known_hosts(namespace)))))
            continue
        expect = check.expect
        app: App | None
        if check.pod in scenario.external:
            app, has_sidecar = scenario.external[check.pod].app, False
        elif check.pod in scenario.nodes:
            wrong = [k for k, v in expect.model_dump(exclude_none=True).items() if k != "conntrack"]
            if wrong:
                problems.append(Problem(f"checks.{i}.expect", f"{', '.join(wrong)}: a node has no app and no "
                                        "sidecar; a node check reads its conntrack (conntrack: {...})"))
            if not seen_probe:
                problems.append(Problem(f"checks.{i}.expect", "conntrack describes the probe before this check; "
                                        "put a probe check (from/to) above it"))
            continue
        else:
            try:
                pod = pods[names.pod(check.pod)]
            except LookupError as err:
                ambiguous = "ambiguous" in str(err) or "/" in check.pod
                problems.append(Problem(f"checks.{i}.pod", str(err) if ambiguous else unknown(
                    "pod or external host", check.pod, set(pods) | set(scenario.external))))
                continue
            app, has_sidecar = pod.spec.app, pod.spec.sidecar is not None
        if expect.app_peer is not None and (app is None or app.kind == "command"):
            problems.append(Problem(f"checks.{i}.expect.app_peer",
                                    f"'{check.pod}' runs no built-in app (pong, echo, http) that records its peers"))
        if expect.app_log is not None and (app is None or app.kind in ("pong", "echo")):
            problems.append(Problem(f"checks.{i}.expect.app_log",
                                    f"'{check.pod}' runs no app that writes an access log: the http app writes "
                                    "nginx's combined format with x-forwarded-for, a command app (nginx) may print "
                                    "one to stdout"))
        if expect.needs_probe and not seen_probe:
            problems.append(Problem(f"checks.{i}.expect",
                                    "rules_hit, rules_not_hit, conntrack and proxy_log describe the probe before "
                                    "this check; put a probe check (from/to) above it"))
        for key in ("rules_hit", "rules_not_hit", "proxy_log"):
            if getattr(expect, key) is not None and not has_sidecar:
                problems.append(Problem(f"checks.{i}.expect.{key}",
                                        f"'{check.pod}' has no sidecar: no istio rules and no access log"))
    return problems
