"""The scenario model and loader: strictness, paths and hints in errors, cross references."""

from __future__ import annotations

import pytest

from netlab.errors import EXIT_USAGE
from netlab.model.loader import parse_scenario
from netlab.model.problems import ScenarioError


def minimal(**extra: object) -> dict:
    return {"name": "t", "pods": {"client": {}, "srv": {"app": {"kind": "pong", "listen": "eth0:8080"}}}, **extra}


def problems(data: dict) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert caught.value.exit_code == EXIT_USAGE
    return [str(p) for p in caught.value.problems]


def test_minimal_scenario_parses() -> None:
    scenario = parse_scenario(minimal(services={"svc": {"selector": "srv", "port": 80, "target_port": 8080}}))
    assert scenario.services["svc"].service_ports()[0].backend_port == 8080
    assert scenario.pods["srv"].app is not None and str(scenario.pods["srv"].app.listen) == "eth0:8080"


def test_unknown_key_names_its_path() -> None:
    assert problems(minimal(pods={"client": {"sidecarr": {}}})) == [
        "pods.client.sidecarr: unknown key 'sidecarr' (unknown keys are errors); did you mean 'sidecar'?"
    ]


def test_every_problem_is_reported_together() -> None:
    found = problems({
        "name": "t",
        "pods": {"a": {"sidecar": {"istio": "1.8"}, "app": {"kind": "pong", "listen": "lo:80"}}},
        "services": {"s": {"selector": "a", "port": 0}},
    })
    assert [p.split(":")[0] for p in found] == ["pods.a.sidecar.istio", "pods.a.app.listen", "services.s.port"]


def test_unquoted_istio_version_gets_a_hint() -> None:
    # YAML reads `istio: 1.10` as the float 1.1
    [problem] = problems(minimal(pods={"p": {"sidecar": {"istio": 1.1}}}))
    assert "1.1 is a number in YAML" in problem and 'quote the version, e.g. istio: "1.10"' in problem
    # a version that does not exist is not told to quote itself, but which versions exist
    [problem] = problems(minimal(pods={"p": {"sidecar": {"istio": "1.31"}}}))
    assert "quote" not in problem and "1.9 … 1.30" in problem


@pytest.mark.parametrize("address", ["192.0.2.10", "10.0.0.5", "198.51.100.1", "203.0.113.255"])
def test_external_hosts_only_in_test_net(address: str) -> None:
    [problem] = problems(minimal(external={"web": {"address": address}}))
    assert problem.startswith("external.web.address:")


def test_cross_references() -> None:
    found = problems(minimal(
        services={"svc": {"selector": "nope", "port": 80}, "idle": {"selector": "client", "port": 80}},
        checks=[{"from": "ghost", "to": "svc:80", "expect": "reply"}, {"from": "client", "to": "where:80",
                                                                       "expect": "reset"},
                {"pod": "ghost", "expect": {"app_peer": "127.0.0.6"}}],
    ))
    assert found[:4] == [
        "services.svc.selector: no pod named 'nope'; known: client, srv",
        "services.idle.selector: pod 'client' runs no app",
        "checks.0.from: no pod named 'ghost'; known: client, srv",
        "checks.1.to: no pod, service or external host named 'where'; known: client, idle, srv, svc",
    ]
    assert found[4].startswith("checks.2.pod: no pod") and "'ghost'" in found[4]


def test_command_app_needs_a_command() -> None:
    [problem] = problems(minimal(pods={"p": {"app": {"kind": "command"}}}))
    assert "kind 'command' needs 'command:" in problem


def test_rule_edit_syntax() -> None:
    parse_scenario(minimal(pods={"p": {"sidecar": {"rule_edits": [{"delete": "nat/ISTIO_OUTPUT#1"}]}}}))
    [problem] = problems(minimal(pods={"p": {"sidecar": {"rule_edits": [{"delete": "ISTIO_OUTPUT 1"}]}}}))
    assert "is not TABLE/CHAIN#N" in problem


def test_sidecar_settings_istio_would_refuse_are_refused_before_anything_is_built() -> None:
    [removed] = problems(minimal(pods={"p": {"sidecar": {"istio": "1.22", "inbound_passthrough": False}}}))
    assert removed.startswith("pods.p.sidecar: inbound_passthrough: false") and "1.21" in removed
    [too_new] = problems(minimal(pods={"p": {"sidecar": {"istio": "1.9", "iptables_flags": ["-c", "10.0.0.0/8"]}}}))
    assert too_new.startswith("pods.p.sidecar: flag --") and "was added in Istio 1.12" in too_new
    parse_scenario(minimal(pods={"p": {"sidecar": {"istio": "1.20", "inbound_passthrough": False}}}))


def test_addresses_must_not_clash() -> None:
    found = problems(minimal(
        services={"a": {"selector": "srv", "port": 80, "ip": "10.96.0.50"},
                  "b": {"selector": "srv", "port": 80, "ip": "10.96.0.50"},
                  "c": {"selector": "srv", "port": 80, "ip": "10.0.0.1"}},
        external={"x": {"address": "198.51.100.7"}, "y": {"address": "198.51.100.7"}},
    ))
    assert found == [
        "services.b.ip: 10.96.0.50:80 is also service 'a'; give one of them another ip or port",
        "services.c.ip: 10.0.0.1 is outside the service range 10.96.0.0/16",
        "external.y.address: 198.51.100.7 is also 'x'",
    ]


def test_a_schema_problem_does_not_hide_the_cross_reference_problems() -> None:
    """An unquoted 1.10 (a schema problem) and a name clash (a cross-reference problem) are reported together; what
    refers to the invalid entry is not reported twice."""
    found = problems(minimal(pods={"a": {"sidecar": {"istio": 1.1}}, "b": {}},
                             external={"b": {"address": "198.51.100.9"}},
                             services={"s": {"selector": "a", "port": 80}}))
    assert found[0].startswith("pods.a.sidecar.istio: 1.1 is a number in YAML")
    assert "external.b: 'b' is already a pod name; names must be unique" in found
    assert not any("'a'" in p for p in found[1:])  # the service selecting the invalid pod: not a second problem
    assert len(found) == 2


@pytest.mark.parametrize(("pods", "wanted"), [
    ({"a": {"lables": {}}}, "pods.a.lables: unknown key 'lables' (unknown keys are errors); did you mean 'labels'?"),
    ({"a": {"sidecar": {"interceptoin": "TPROXY"}}}, "did you mean 'interception'?"),
    ({"a": {"mode": "router"}}, "'mode' is a key of sidecar: sidecar: {mode: ...}"),
    ({"a": {"zzz": 1}}, "known keys here: namespace, labels, serviceAccount, replicas, deployment, node, sidecar, app"),
])
def test_an_unknown_key_gets_a_suggestion(pods: dict, wanted: str) -> None:
    [problem] = problems(minimal(pods=pods))
    assert wanted in problem
