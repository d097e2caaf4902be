"""The lab engine on the real kernel: pods, node, veths, services, external hosts, lifecycle and cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import lab_up, leftovers, netlab, snapshot_root_namespace, talk, write_scenario

from netlab.engine import build, members, teardown
from netlab.engine.state import LabState
from netlab.errors import KernelError
from netlab.kernel.nsutil import netns_inode
from netlab.model import load_scenario

TWO_PODS = """
    name: {name}
    pods:
      client: {{}}
      server: {{app: {{kind: pong, listen: "eth0:8080", reply: hello}}}}
    services:
      web: {{selector: server, port: 80, target_port: 8080}}
    external:
      ext: {{address: 203.0.113.10, app: {{kind: echo, listen: "0.0.0.0:7"}}}}
"""


@pytest.fixture
def scenario_file(tmp_path: Path) -> str:
    return write_scenario(tmp_path, TWO_PODS.format(name="engine-test"))


@pytest.fixture
def lab(scenario_file: str) -> Iterator[LabState]:
    with lab_up(scenario_file) as state:
        yield state


def netns(state: LabState, member: str) -> str:
    return f"/proc/{state.members[member]['pid']}/ns/net"


def test_pods_reach_each_other_by_pod_ip_and_by_service(lab: LabState) -> None:
    client, server_ip = netns(lab, "client"), lab.members["server"]["ip"]
    assert talk(client, server_ip, 8080) == b"hello\n"
    service = lab.info["services"]["web"]
    assert talk(client, service["ip"], 80) == b"hello\n"
    peers = Path(lab.directory, "apps", "server.peers").read_text().split()
    assert peers[0::2] == [lab.members["client"]["ip"]] * 2  # the app sees the client pod, not the node


def test_nsenter_and_ip_netns_exec_see_the_pod(lab: LabState) -> None:
    pid, name, ip = lab.members["client"]["pid"], lab.members["client"]["netns"], lab.members["client"]["ip"]
    via_nsenter = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-br", "addr", "show", "eth0"],
                                 capture_output=True, text=True, check=True).stdout
    via_netns = subprocess.run(["ip", "netns", "exec", name, "ip", "-br", "addr", "show", "eth0"],
                               capture_output=True, text=True, check=True).stdout
    assert f"{ip}/32" in via_nsenter and via_nsenter == via_netns
    assert os.readlink(f"/run/netns/{name}") == f"/proc/{pid}/ns/net"  # a symlink: nothing pins the namespace


def test_netlab_exec_resolves_lab_names(lab: LabState) -> None:
    for name, address in [("web", lab.info["services"]["web"]["ip"]), ("server", lab.members["server"]["ip"]),
                          ("ext", "203.0.113.10")]:
        result = netlab("exec", "client", "--lab", lab.lab, "--", "getent", "ahostsv4", name, check=True)
        assert result.stdout.split()[0] == address


def test_external_host_sees_the_node_address(lab: LabState) -> None:
    assert talk(netns(lab, "client"), "203.0.113.10", 7, b"through the node") == b"through the node"
    peer = Path(lab.directory, "apps", "ext.peers").read_text().split()[0]
    assert peer == "203.0.113.1"  # masqueraded by the node, as a cluster node's SNAT does


def test_pause_holders_are_light(lab: LabState) -> None:
    for member in lab.members.values():
        status = Path(f"/proc/{member['pid']}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        assert rss_kb <= 2048, f"pause process uses {rss_kb} kB"
        assert Path(f"/proc/{member['pid']}/cmdline").read_bytes().startswith(b"netlab-pause:engine-test:")


def test_status_json_reports_live_objects(lab: LabState) -> None:
    document = json.loads(netlab("status", lab.lab, "--json", check=True).stdout)
    [described] = document["labs"]
    assert {m["alive"] for m in described["members"].values()} == {True}
    assert {(p["member"], p["alive"]) for p in described["processes"]} == {("server", True), ("ext", True)}


def test_up_and_down_leave_the_root_namespace_unchanged(scenario_file: str) -> None:
    before = snapshot_root_namespace()
    netlab("up", scenario_file, "--quiet", check=True)
    netlab("down", "engine-test", check=True)
    after = snapshot_root_namespace()
    assert after == before
    assert leftovers("engine-test") == []


def test_down_twice_is_quiet(scenario_file: str) -> None:
    netlab("up", scenario_file, "--quiet", check=True)
    first, second = netlab("down", "engine-test"), netlab("down", "engine-test")
    assert (first.returncode, second.returncode) == (0, 0)
    assert second.stdout == second.stderr == ""


def test_two_labs_with_different_names_run_side_by_side(scenario_file: str) -> None:
    try:
        netlab("up", scenario_file, "--name", "side-a", "--quiet", check=True)
        netlab("up", scenario_file, "--name", "side-b", "--quiet", check=True)
        for name in ("side-a", "side-b"):
            state = json.loads(netlab("status", name, "--json", check=True).stdout)["labs"][0]
            client = f"/proc/{state['members']['client']['pid']}/ns/net"
            assert talk(client, state["members"]["server"]["ip"], 8080) == b"hello\n"
        again = netlab("up", scenario_file, "--name", "side-a", "--quiet")
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        netlab("down", "side-a", "side-b")
    assert leftovers("side-a") == leftovers("side-b") == []


def test_failure_half_way_removes_everything(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, """
        name: half-way
        pods:
          a: {app: {kind: pong, listen: "eth0:80"}}
          b: {app: {kind: command, command: ["/bin/false"], listen: "0.0.0.0:80"}}
    """)
    result = netlab("up", path, "--quiet")
    assert result.returncode == 3
    assert "app in b is not listening on port 80" in result.stderr and "/bin/false" in result.stderr
    assert leftovers("half-way") == []


def test_invalid_scenario_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, "name: bad\npods: {a: {sidecar: {istio: '1.10', colour: blue}}}\n")
    result = netlab("up", path)
    assert result.returncode == 2
    assert "pods.a.sidecar.colour: unknown key 'colour'" in result.stderr
    assert leftovers("bad") == []


def test_not_root_is_an_environment_error(scenario_file: str) -> None:
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "netlab", "up", scenario_file],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 3, result.stderr
    assert "must run as root" in result.stderr and "sudo" in result.stderr


def _start_slow_build(tmp_path: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    pods = "\n".join(f"  p{i}: {{app: {{kind: pong, listen: 'eth0:80'}}}}" for i in range(40))
    path = write_scenario(tmp_path, f"name: {name}\npods:\n{pods}\n")
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "run", path, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(leftovers(name)) < 8:  # wait until the build is well under way
        time.sleep(0.01)
    assert len(leftovers(name)) >= 8, "the build did not start"
    return proc, path


def test_sigkilled_run_leaves_marked_objects_that_clean_removes(tmp_path: Path) -> None:
    proc, _ = _start_slow_build(tmp_path, "killed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert leftovers("killed"), "SIGKILL should leave the lab behind"
    result = netlab("clean", "--lab", "killed", "--json", check=True)  # scoped: other labs may be up
    assert "killed" in json.loads(result.stdout)["labs"]
    assert leftovers("killed") == []
    assert netlab("clean", "--lab", "killed", check=True).stdout.strip() == "nothing to clean"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_up_leaves_nothing(tmp_path: Path, signum: int) -> None:
    proc, _ = _start_slow_build(tmp_path, "interrupted")
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert leftovers("interrupted") == [], stderr


def test_builtin_app_switches_to_its_uid_after_binding(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, """
        name: app-uid
        pods:
          client: {}
          server: {app: {kind: pong, listen: "eth0:80", uid: 1000, gid: 1000}}
    """)
    with lab_up(path) as state:
        [app] = [e for e in state.undo if e["kind"] == "process" and e["role"] == "app"]
        status = Path(f"/proc/{app['pid']}/status").read_text()
        assert "Uid:\t1000\t1000\t1000\t1000" in status and "Gid:\t1000\t1000\t1000\t1000" in status
        assert talk(netns(state, "client"), state.members["server"]["ip"], 80) == b"pong\n"
        assert Path(state.peers_file("server")).read_text().split()[0] == state.members["client"]["ip"]


def test_a_namespace_that_is_gone_is_an_error_not_a_wrong_namespace(lab: LabState) -> None:
    fake = LabState(lab=lab.lab, members={"client": {**lab.members["client"], "pid": os.getpid()}})
    with pytest.raises(KernelError, match="the namespace of client is gone"):
        members.member_netns_path(fake, "client")  # our own PID: the host's namespace, never the pod's


def processes_in(inode: int) -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and netns_inode(f"/proc/{p}/ns/net") == inode]


def test_a_command_apps_children_go_down_with_it(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, """
        name: app-group
        pods:
          a: {app: {kind: command, command: ["sh", "-c", "sleep 300 & exec sleep 301"]}}
    """)
    model, scenario_path = load_scenario(path)
    state = build.up(model, scenario_path)
    pod_inode = state.members["a"]["inode"]
    try:
        time.sleep(0.2)  # let sh start its background child
        assert len(processes_in(pod_inode)) >= 3  # the holder, sleep 301 (the app itself) and its background sleep 300
    finally:
        problems = teardown.down(state.lab)
    assert problems == []  # the background child is the app's, not "a process netlab did not start"
    assert processes_in(pod_inode) == []
    assert leftovers("app-group") == []
