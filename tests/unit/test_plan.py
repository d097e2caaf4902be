"""The pure lab plan: addresses, names within kernel limits, stable and collision-free."""

from __future__ import annotations

import ipaddress
import json

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
