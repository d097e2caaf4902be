"""Link impairments on the kernel: a scenario's `links:` and `netlab impair` put a qdisc on the pod's eth0 inside
its namespace (tbf for a rate alone, netem for delay and loss, where the kernel has sch_netem)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from labkit import lab_up, netlab, snapshot_root_namespace, talk, write_scenario

from netlab.engine.members import member_netns_path
from netlab.kernel.nsutil import nsenter_run

SCENARIO = """
    name: {name}
    pods:
      client: {{}}
      web: {{app: {{kind: pong, listen: "0.0.0.0:8080"}}}}
    links:
      web: {{rate: 10mbit}}
"""


def qdisc(state: object, member: str) -> str:
    return nsenter_run(member_netns_path(state, member), ["tc", "qdisc", "show", "dev", "eth0"]).stdout  # type: ignore[arg-type]


def test_links_and_impair_change_only_the_pods_eth0(tmp_path: Path) -> None:
    before = snapshot_root_namespace()
    name = f"impair-{secrets.token_hex(2)}"
    with lab_up(write_scenario(tmp_path, SCENARIO.format(name=name))) as state:
        assert "tbf" in qdisc(state, "web") and "rate 10Mbit" in qdisc(state, "web")
        assert "link web eth0: rate 10mbit" in netlab("status", name).stdout
        assert talk(member_netns_path(state, "client"), state.members["web"]["ip"], 8080) == b"pong\n"
        netlab("impair", name, "web", "--clear", check=True)
        assert "tbf" not in qdisc(state, "web") and "link web" not in netlab("status", name).stdout
    assert snapshot_root_namespace() == before


def test_delay_where_the_kernel_has_netem(tmp_path: Path) -> None:
    name = f"delay-{secrets.token_hex(2)}"
    with lab_up(write_scenario(tmp_path, SCENARIO.format(name=name))) as state:
        delayed = netlab("impair", name, "web", "--delay", "100ms")
        if delayed.returncode == 3 and "no tc netem" in delayed.stderr:
            pytest.skip("this kernel has no sch_netem (netlab doctor says so): delay cannot be checked here")
        assert delayed.returncode == 0, delayed.stderr
        started = time.monotonic()
        talk(member_netns_path(state, "client"), state.members["web"]["ip"], 8080)
        assert time.monotonic() - started >= 0.2  # the SYN-ACK and the answer each wait 100 ms
