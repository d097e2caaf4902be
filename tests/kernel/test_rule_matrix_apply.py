"""Every rule set netlab renders is accepted by the kernel: each payload of the rule matrix (every release × everyday
flag sets × IPv4/IPv6 pods, tests/rule_matrix.py) goes to `iptables-restore --test --noflush` (and ip6tables-,
legacy and nft) in a scratch namespace. A rejection names the release, the flags and the first rejected line."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from rule_matrix import VERSIONS, Case, cases

from netlab.kernel.nsutil import nsenter_run

BACKENDS = ("legacy", "nft")
_tested: dict[tuple[str, str], str] = {}  # (tool, payload) -> "" or the rejection: many releases render alike


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    import secrets
    import subprocess

    name = f"netlabtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def rejection(netns: str, tool: str, payload: str) -> str:
    """"" when the kernel accepts the payload, else the tool's message and the line it stopped at."""
    key = (tool, payload)
    if key not in _tested:
        proc = nsenter_run(netns, [tool, "--test", "--noflush"], stdin=payload, package="iptables")
        message = ""
        if proc.returncode != 0:
            error = proc.stderr.strip()
            line = re.search(r"line:? (\d+)", error)
            lines = payload.splitlines()
            if line and 0 < int(line.group(1)) <= len(lines):
                error += f"\n      rejected line {line.group(1)}: {lines[int(line.group(1)) - 1]}"
            message = error
        _tested[key] = message
    return _tested[key]


def failures_of(netns: str, case: Case) -> list[str]:
    found = []
    for family, payload in case.payloads():
        for backend in BACKENDS:
            tool = f"{'ip6tables' if family == '6' else 'iptables'}-{backend}-restore"
            message = rejection(netns, tool, payload)
            if message:
                found.append(f"{case}\n    {tool}: {message}")
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_the_kernel_accepts_every_rendered_payload(netns: str, version: str) -> None:
    matrix = list(cases(version))
    failures = [failure for case in matrix for failure in failures_of(netns, case)]
    assert not failures, f"{len(failures)} payload(s) rejected:\n" + "\n".join(failures)


def test_a_broken_payload_is_reported_with_its_line(netns: str) -> None:
    """The check itself can fail: the dual-stack DNS payload as netlab rendered it before (a jump to a chain the
    IPv6 nat table never declared) is rejected, and the message points at that line."""
    broken = "* nat\n-N ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS\nCOMMIT\n"
    message = rejection(netns, "ip6tables-legacy-restore", broken)
    assert "ISTIO_OUTPUT_DNS" in message and "rejected line 4: -A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS" in message
