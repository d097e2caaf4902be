"""Running tools inside a namespace: nsenter_run's error mapping and the argv kernel.iptables builds (pure, no root)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from netlab.errors import EnvironmentProblem
from netlab.kernel import iptables, nsutil


def fake_run(returncode: int, stderr: str = "", calls: list[list[str]] | None = None) -> Any:
    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if calls is not None:
            calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode, "out", stderr)

    return run


def test_nsenter_run_enters_only_the_network_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(nsutil.subprocess, "run", fake_run(1, "boom", calls))
    proc = nsutil.nsenter_run("/run/netns/x", ["ss", "-H"], package="iproute2")
    assert calls == [["nsenter", "--net=/run/netns/x", "ss", "-H"]]
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "out", "boom")  # other failures: the caller's call


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nsutil.subprocess, "run",
                        fake_run(127, "nsenter: failed to execute ss: No such file or directory"))
    with pytest.raises(EnvironmentProblem, match="ss is missing") as info:
        nsutil.nsenter_run("/run/netns/x", ["ss"], package="iproute2")
    assert info.value.hint == "apt-get install iproute2"


def test_missing_nsenter(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", "nsenter")

    monkeypatch.setattr(nsutil.subprocess, "run", run)
    with pytest.raises(EnvironmentProblem, match="nsenter is missing") as info:
        nsutil.nsenter_run("/run/netns/x", ["ss"])
    assert info.value.hint == "apt-get install util-linux"


def test_insert_rule_splits_like_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(nsutil.subprocess, "run", fake_run(0, calls=calls))
    rule = "-o lo -s 127.0.0.6/32 -m comment --comment 'keep the passthrough' -j RETURN"
    iptables.insert_rule("/run/netns/x", "nat", "ISTIO_OUTPUT", 1, rule, "nft")
    assert calls == [["nsenter", "--net=/run/netns/x", "iptables-nft", "-t", "nat", "-I", "ISTIO_OUTPUT", "1",
                      "-o", "lo", "-s", "127.0.0.6/32", "-m", "comment", "--comment", "keep the passthrough",
                      "-j", "RETURN"]]
