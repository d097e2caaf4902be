"""The pure lab plan: addresses, names within kernel limits, stable and collision-free."""

from __future__ import annotations

import ipaddress
import json

import pytest

from netlab.model.loader import parse_scenario
from netlab.plan import POD_CIDR, SERVICE_CIDR, lab_id, make_plan


def scenario(pods: int = 3, **extra: object):
    return parse_scenario({
        "name": "plan-test",
        "pods": {f"p{i}": {"app": {"kind": "pong", "listen": "eth0:80"}} for i in range(pods)},
        **extra,
    })


def test_pod_addresses_are_unique_and_in_the_pod_cidr() -> None:
    plan = make_plan(scenario(pods=300))
    ips = [p.ip for p in plan.pods.values()]
    assert len(set(ips)) == 300 and all(ip in POD_CIDR for ip in ips)


def test_interface_names_fit_the_kernel_limit_and_carry_the_lab_id() -> None:
    plan = make_plan(scenario(pods=300, external={"web": {"address": "198.51.100.10"}}))
    names = [n for p in plan.pods.values() for n in (p.node_veth, p.temp_peer)]
    names += [plan.external_bridge, plan.externals["web"].node_veth]
    assert all(len(n) <= 15 and n.startswith("nl" + plan.id) for n in names)
    assert len(set(names)) == len(names)


def test_lab_name_override_changes_every_mark() -> None:
    a, b = make_plan(scenario(), lab="a"), make_plan(scenario(), lab="b")
    assert a.id == lab_id("a") != b.id
    assert {p.netns for p in a.pods.values()}.isdisjoint(p.netns for p in b.pods.values())
    assert a.node_netns == "netlab.a._node" and a.pods["p0"].netns == "netlab.a.p0"


def test_services_get_cluster_ips_and_point_at_their_pod() -> None:
    plan = make_plan(scenario(services={
        "fixed": {"selector": "p1", "port": 80, "ip": "10.96.0.10"},
        "auto": {"selector": "p2", "port": 8080, "target_port": 80},
    }))
    assert plan.services["fixed"].ip == ipaddress.ip_address("10.96.0.10")
    auto = plan.services["auto"]
    assert auto.ip in SERVICE_CIDR and auto.ip != plan.services["fixed"].ip
    assert auto.endpoints == ("p2",) and [(p.port, p.target_port) for p in auto.ports] == [(8080, 80)]


def test_external_hosts_share_the_node_address_of_their_net() -> None:
    plan = make_plan(scenario(external={
        "a": {"address": "198.51.100.10"}, "b": {"address": "198.51.100.20"}, "c": {"address": "203.0.113.5"},
    }))
    assert [str(a) for a in plan.node_external_addresses] == ["198.51.100.1/24", "203.0.113.1/24"]


def test_hosts_file_resolves_every_name() -> None:
    plan = make_plan(scenario(services={"svc": {"selector": "p0", "port": 80}},
                              external={"web": {"address": "203.0.113.5"}}))
    hosts = {name: ip for ip, names in (line.split("\t") for line in plan.hosts_file().splitlines())
             for name in names.split()}
    assert hosts["p0"] == str(plan.pods["p0"].ip)
    assert hosts["svc"] == hosts["svc.default.svc.cluster.local"] == str(plan.services["svc"].ip)
    assert hosts["web"] == "203.0.113.5"


def test_the_plan_survives_its_json() -> None:
    plan = make_plan(scenario(services={"svc": {"selector": "p0", "port": 80}},
                              external={"web": {"address": "203.0.113.5", "app": {"kind": "pong",
                                                                                  "listen": "0.0.0.0:80"}}}))
    assert type(plan).from_json(json.loads(json.dumps(plan.to_json()))) == plan


MULTI = {
    "name": "multi",
    "nodes": {"node-1": {}, "node-2": {}},
    "pods": {"gw": {"node": "node-1"}, "web": {"node": "node-2", "labels": {"app": "web"},
                                               "app": {"kind": "http", "listen": "0.0.0.0:80"}},
             "spread": {"replicas": 2}},
    "services": {
        "cluster": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
        "local": {"type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "nodePort": 30000}]},
    },
    "external": {"testpc": {"address": "192.168.10.254"}},
}


def test_nodes_get_a_pod_cidr_slice_and_a_lan_address() -> None:
    plan = make_plan(parse_scenario(MULTI))
    assert {n: (str(p.ip), str(p.pod_cidr)) for n, p in plan.nodes.items()} == {
        "node-1": ("192.168.10.10", "10.244.0.0/24"), "node-2": ("192.168.10.11", "10.244.1.0/24")}
    assert {k: (p.node, str(p.ip)) for k, p in plan.pods.items()} == {
        "gw": ("node-1", "10.244.0.10"), "web": ("node-2", "10.244.1.10"),
        "spread-0": ("node-1", "10.244.0.11"), "spread-1": ("node-2", "10.244.1.11")}  # in turn: pods 2 and 3
    assert plan.multi_node and plan.external_netns == plan.router_netns != plan.node_netns
    # the explicit node port is skipped by the allocation of the other
    assert [p.node_port for s in plan.services.values() for p in s.ports] == [30001, 30000]
    assert "192.168.10.11\tnode-2" in plan.hosts_file()


def test_one_node_lab_keeps_its_shape() -> None:
    plan = make_plan(scenario())
    assert list(plan.nodes) == ["_node"] and not plan.multi_node and plan.external_netns == plan.node_netns
    assert all(p.node == "_node" for p in plan.pods.values())


def test_node_ports_follow_the_traffic_policy_per_node() -> None:
    from netlab.kernel.node_nat import render_node_nat

    plan = make_plan(parse_scenario(MULTI))
    node1, node2 = render_node_nat(plan, "node-1"), render_node_nat(plan, "node-2")
    for text in (node1, node2):
        assert "--dport 30001 -j NETLAB-EXT-" in text and "--dport 30000 -j NETLAB-EXT-" in text
        assert "-m addrtype --dst-type LOCAL -j NETLAB-NODEPORTS" in text.split("COMMIT")[0].splitlines()[-1] or \
            text.index("-j NETLAB-NODEPORTS") > text.rindex("-A NETLAB-SERVICES -d ")  # the last service rule
        assert "-m mark --mark 0x4000/0x4000 -j MASQUERADE" in text
        assert "-s 10.244.0.0/16 ! -d 10.244.0.0/16 -o eth0 -j MASQUERADE" in text
    # Local: node-2 runs web and picks it locally; node-1 has no endpoint and drops
    assert "NETLAB-SVL-" in node2 and "has no local endpoints" not in node2
    assert "NETLAB-SVL-" not in node1 and '--dport 30000 -m comment --comment "default/local:http has no local ' \
        'endpoints" -j DROP' in node1


def test_node_problems_are_reported_with_their_paths() -> None:
    from netlab.model.problems import ScenarioError

    def problems(**changes: object) -> str:
        with pytest.raises(ScenarioError) as caught:
            parse_scenario({**MULTI, **changes})
        return str(caught.value)

    text = problems(pods={"a": {"node": "node-9"}, "node-1": {}},
                    services={"s": {"type": "NodePort", "selector": "a", "port": 80, "node_port": 30000},
                              "t": {"type": "NodePort", "selector": "a", "port": 81, "node_port": 30000}})
    assert "pods.a.node: no node named 'node-9'" in text
    assert "nodes.node-1: 'node-1' is already a pod" in text
    assert "services.t: nodePort 30000 is also service 's'" in text
    text = problems(services={"s": {"selector": "gw", "port": 80, "node_port": 30000}},
                    external={"pc": {"address": "192.168.10.20"}})
    assert "services.s: a nodePort needs 'type: NodePort'" in text and ".10-.99 are nodes" in text
    one_node = {k: v for k, v in MULTI.items() if k != "nodes"}
    with pytest.raises(ScenarioError, match="only multi-node labs have"):
        parse_scenario({**one_node, "pods": {"a": {}}, "services": {}})


def test_a_pod_may_share_its_services_name_and_the_service_resolves() -> None:
    server = {"labels": {"app": "server"}, "app": {"kind": "pong", "listen": "eth0:80"}}
    plan = make_plan(parse_scenario({"name": "same", "pods": {"server": server},
                                     "services": {"server": {"selector": {"app": "server"}, "port": 80}}}))
    hosts = plan.hosts_file()
    assert f"{plan.services['server'].ip}\tserver " in hosts and f"{plan.pods['server'].ip}\tserver" not in hosts
    assert plan.names().host("server", "default") == ("service", "server")
