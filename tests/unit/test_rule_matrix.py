"""Every payload of the rule matrix is well-formed without a kernel: each jump goes to a chain the same table of the
same payload declares, and each address belongs to the payload's family. (tests/kernel/test_rule_matrix_apply.py
feeds the same payloads to iptables-restore --test.)"""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from rule_matrix import VERSIONS, cases

from netlab.istio_init.rules import BUILTIN_CHAINS

# Targets that are not chains (what istio-iptables jumps to besides its ISTIO_* chains).
TARGETS = frozenset({"RETURN", "ACCEPT", "DROP", "REDIRECT", "TPROXY", "MARK", "CONNMARK", "CT"})


def problems(payload: str, family: str) -> list[str]:
    found: list[str] = []
    declared: set[str] = set()
    for number, line in enumerate(payload.splitlines(), 1):
        words = line.split()
        if line.startswith("*"):
            declared = set()
        elif line.startswith("-N "):
            declared.add(words[1])
        elif line.startswith(("-A ", "-I ")):
            if words[1] not in BUILTIN_CHAINS | declared:
                found.append(f"line {number}: chain {words[1]} is not declared: {line}")
            for option, value in itertools.pairwise(words):
                if option in ("-j", "-g") and value not in TARGETS | declared:
                    found.append(f"line {number}: target {value} is not declared in this table: {line}")
                if option in ("-d", "-s"):
                    version = ipaddress.ip_network(value, strict=False).version
                    if str(version) != family:
                        found.append(f"line {number}: IPv{version} address in the IPv{family} payload: {line}")
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_payload_is_well_formed(version: str) -> None:
    failures = [f"{case}\n    IPv{family}: {problem}"
                for case in cases(version)
                for family, payload in case.payloads()
                for problem in problems(payload, family)]
    assert not failures, "\n".join(failures)


def test_the_matrix_covers_dual_stack_dns_and_every_version() -> None:
    names = {(case.flag_set.name, case.ipv6) for version in VERSIONS for case in cases(version)}
    assert ("dns-ipv4-server", True) in names and ("tproxy-dns", True) in names
    assert len({case.version for version in VERSIONS for case in cases(version)}) == len(VERSIONS)
