"""pytest plugin (entry point `pytest11`): scenarios as fixtures for privileged CI runners.

    def test_1_9_forwards_to_localhost(netlab_lab):
        lab = netlab_lab("lo-vs-eth0")
        assert lab.probe("client", "lo.rev-1-9:8080", send="ping").reply == "pong"
        assert lab.app_peer("lo-1-9") == "127.0.0.1"

Every lab a test brings up is torn down after it, whatever the outcome. Tests using the fixture are skipped, with
the reason, when not running as root or when the kernel lacks what netlab needs (see `netlab doctor`).
"""

from __future__ import annotations

import functools
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from netlab.engine import build, members, teardown
from netlab.engine.state import LabState
from netlab.hostport import is_ipv4, split_host_port
from netlab.model import load_scenario
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.probe.connect import probe as probe_once
from netlab.probe.facts import lab_facts
from netlab.probe.observed import ProbeResult
from netlab.probe.readers import last_line


@dataclass(frozen=True)
class Probe:
    outcome: str  # reply / reset / refused / timeout / closed / unreachable
    reply: str | None  # the bytes received, stripped, when any arrived
    result: ProbeResult


class Lab:
    """A lab that is up, with helpers to probe it and read what its apps saw."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.name = state.lab

    def netns(self, member: str) -> str:
        return members.member_netns_path(self.state, member)

    def address(self, name: str, from_pod: str | None = None) -> str:
        """The IP a pod, external host or service name resolves to (from `from_pod`'s namespace)."""
        facts = lab_facts(self.state.lab_plan(), self.state.members)
        found = facts.names.host(name, facts.namespaces.get(from_pod or "", DEFAULT_NAMESPACE))
        if found is None:
            raise KeyError(f"lab {self.name} has no pod, host or service named {name!r}")
        kind, key = found
        return facts.services[key].ip if kind == "service" else facts.members[key].ip

    def probe(self, from_pod: str, to: str, send: str = "ping", timeout: float = 2.0) -> Probe:
        host, port = split_host_port(to)
        ip = host if is_ipv4(host) else self.address(host, from_pod)
        result = probe_once(self.netns(from_pod), (ip, port), send.encode(), timeout,
                            self.state.members[from_pod]["ip"])
        return Probe(result.outcome, result.text if result.data else None, result)

    def app_peer(self, pod: str) -> str | None:
        """The peer address of the last connection the pod's built-in app accepted."""
        line = last_line(self.state.peers_file(pod))
        return line.split()[0] if line else None

    def exec(self, member: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's namespace (like `netlab exec`), capturing its output."""
        return subprocess.run(["ip", "netns", "exec", self.state.members[member]["netns"], *argv],
                              capture_output=True, text=True, check=False)


@functools.cache
def _unsupported_reason() -> str | None:
    if os.geteuid() != 0:
        return "netlab needs root (run the tests with sudo)"
    from netlab.doctor import FAIL, run_checks

    missing = [f"{f.check}: {f.detail}" for f in run_checks() if f.status == FAIL]
    return "netlab cannot run here: " + "; ".join(missing) if missing else None


@pytest.fixture
def netlab_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: `netlab_lab(SCENARIO, name=None)` brings a scenario up; it comes down after the test."""
    reason = _unsupported_reason()
    if reason:
        pytest.skip(reason)
    started: list[str] = []

    def bring_up(scenario: str, name: str | None = None) -> Lab:
        model, path = load_scenario(scenario)
        state = build.up(model, path, name)
        started.append(state.lab)
        return Lab(state)

    try:
        yield bring_up
    finally:
        for lab in reversed(started):  # every lab comes down, even when one teardown has trouble
            try:
                problems = teardown.down(lab)
            except Exception as err:
                problems = [f"{type(err).__name__}: {err}"]
            for problem in problems:
                warnings.warn(f"netlab lab {lab}: {problem}", stacklevel=1)
