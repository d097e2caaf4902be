"""istio-init's rules applied for real in a scratch namespace, with both backends (legacy and nft).

Every iptables/ip command runs inside the test namespace (nsenter / ip -n); the root namespace is untouched.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from netlab.errors import KernelError, UsageError
from netlab.istio_init.flags import IptablesConfig, parse_flags
from netlab.istio_init.render import build_rules
from netlab.istio_init.rules import to_restore
from netlab.kernel.iptables import (
    apply_istio_init,
    delete_rule,
    insert_rule,
    read_chains,
    select_backend,
)
from netlab.kernel.nsutil import nsenter_run

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "istio"
DERIVED = SHARED / "derived"
DEFAULT_FLAGS = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
BACKENDS = ("legacy", "nft")
CLONE_NEWNET = 0x40000000

needs_shared = pytest.mark.skipif(not DERIVED.is_dir(), reason=f"shared Istio data not found at {DERIVED}")

# derived/README.md scenarios: prefix -> (flags, env, ipv6, dns servers)
SCENARIOS: dict[str, tuple[str, dict[str, str], bool, tuple[str, ...]]] = {
    "default-redirect-ipv4": (DEFAULT_FLAGS, {}, False, ()),
    "default-redirect-ipv4-dnscapture": (DEFAULT_FLAGS, {"ISTIO_META_DNS_CAPTURE": "true"}, False, ("10.96.0.10",)),
    "default-redirect-ipv4-dnscapture-conntrackzone": (
        DEFAULT_FLAGS,
        {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_CONNTRACK_ZONE": "true"},
        False,
        ("10.96.0.10",),
    ),
    "default-tproxy-ipv4": (DEFAULT_FLAGS.replace("-m REDIRECT", "-m TPROXY"), {}, False, ()),
    "default-redirect-ipv6pod": (DEFAULT_FLAGS, {}, True, ()),
}


def config(scenario: str, version: str) -> IptablesConfig:
    flags, env, ipv6, servers = SCENARIOS[scenario]
    return parse_flags(shlex.split(flags), version, env, ipv6=ipv6, dns_servers=servers)


def save_tables(text: str) -> dict[str, list[str]]:
    """iptables-save text -> {table: lines}, without comments and counters, and without untouched tables.

    A legacy namespace lists every table whose module the host has loaded, even when nothing is in it;
    those empty tables are not part of what istio-init installed.
    """
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    name = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
        if line.startswith("*"):
            name, current = line[1:], []
        elif line == "COMMIT":
            if any(x.startswith("-A") or " - [" in x for x in current):
                tables[name] = current
        else:
            current.append(line)
    return tables


def save_in(netns: str, backend: str, ipv6: bool = False) -> str:
    tool = f"{'ip6tables' if ipv6 else 'iptables'}-{backend}-save"
    proc = nsenter_run(netns, [tool])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def connect_in_netns(netns: str, host: str, port: int) -> str:
    """Connect from a socket created inside the namespace (a thread enters it); returns the outcome."""
    result: dict[str, str] = {}

    def worker() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result["outcome"] = f"setns failed: {os.strerror(ctypes.get_errno())}"
                return
        finally:
            os.close(fd)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect((host, port))
                result["outcome"] = "connected"
            except ConnectionRefusedError:
                result["outcome"] = "refused"
            except OSError as err:
                result["outcome"] = f"error: {err}"

    thread = threading.Thread(target=worker)  # setns moves only this thread; it ends right after
    thread.start()
    thread.join()
    return result["outcome"]


def chain(chains: list, name: str):
    return next(c for c in chains if c.name == name)


# --- iptables-save equals the derived files -----------------------------------------------------------------


def _derived_cases() -> list[tuple[str, str, str]]:
    cases = []
    for path in sorted(DERIVED.glob("*/*.v[46].iptables-save-*.txt")) if DERIVED.is_dir() else []:
        scenario, rest = path.name.split(".", 1)
        family, backend = rest.split(".")[0], rest.rsplit("-", 1)[1].removesuffix(".txt")
        cases.append((str(path.relative_to(DERIVED)), scenario, f"{family}:{backend}"))
    return cases


@needs_shared
@pytest.mark.parametrize(("relpath", "scenario", "which"), _derived_cases(), ids=lambda v: str(v))
def test_iptables_save_matches_derived(scratch_netns: str, relpath: str, scenario: str, which: str) -> None:
    family, backend = which.split(":")
    version = relpath.split("/")[0]
    used = apply_istio_init(scratch_netns, config(scenario, version), version, backend)
    assert used == backend
    expected = (DERIVED / relpath).read_text()
    assert save_tables(save_in(scratch_netns, backend, ipv6=family == "v6")) == save_tables(expected)


# --- counters, zeroing, edits -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_counters_move_and_zero(scratch_netns: str, backend: str) -> None:
    cfg = parse_flags(shlex.split(DEFAULT_FLAGS), "1.10")
    apply_istio_init(scratch_netns, cfg, "1.10", backend)
    before = read_chains(scratch_netns, "nat", backend)
    assert chain(before, "OUTPUT").rules[0].packets == 0

    # Root's connection to a closed port on lo: OUTPUT -> ISTIO_OUTPUT, returned by the "-o lo ! --uid-owner"
    # rule (rule 3), so the kernel answers with a reset.
    assert connect_in_netns(scratch_netns, "127.0.0.1", 9) == "refused"
    after = read_chains(scratch_netns, "nat", backend, zero=True)
    assert chain(after, "OUTPUT").rules[0].packets >= 1
    assert chain(after, "OUTPUT").rules[0].bytes > 0
    lo_return = chain(after, "ISTIO_OUTPUT").rules[2]
    assert "! --uid-owner 1337" in lo_return.spec and lo_return.packets >= 1
    assert chain(after, "ISTIO_OUTPUT").rules[0].packets == 0  # nothing came from 127.0.0.6

    zeroed = read_chains(scratch_netns, "nat", backend)
    assert all(r.packets == 0 and r.bytes == 0 for c in zeroed for r in c.rules)


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_and_insert_rule(scratch_netns: str, backend: str) -> None:
    cfg = parse_flags(shlex.split(DEFAULT_FLAGS), "1.10")
    apply_istio_init(scratch_netns, cfg, "1.10", backend)
    original = [r.spec for r in chain(read_chains(scratch_netns, "nat", backend), "ISTIO_OUTPUT").rules]
    assert original[0] == "-s 127.0.0.6/32 -o lo -j RETURN"

    delete_rule(scratch_netns, "nat", "ISTIO_OUTPUT", 1, backend)
    edited = [r.spec for r in chain(read_chains(scratch_netns, "nat", backend), "ISTIO_OUTPUT").rules]
    assert edited == original[1:]

    insert_rule(scratch_netns, "nat", "ISTIO_OUTPUT", 1, "-o lo -s 127.0.0.6/32 -j RETURN", backend)
    restored = [r.spec for r in chain(read_chains(scratch_netns, "nat", backend), "ISTIO_OUTPUT").rules]
    assert restored == original
    with pytest.raises(KernelError):
        delete_rule(scratch_netns, "nat", "ISTIO_OUTPUT", 99, backend)


# --- failures as istio-init shows them ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_apply_fails_with_chain_exists(scratch_netns: str, backend: str) -> None:
    cfg = parse_flags(shlex.split(DEFAULT_FLAGS), "1.10")
    apply_istio_init(scratch_netns, cfg, "1.10", backend)
    with pytest.raises(KernelError) as caught:
        apply_istio_init(scratch_netns, cfg, "1.10", backend)
    message = str(caught.value)
    assert "Chain already exists" in message
    assert to_restore(build_rules(cfg, "1.10").v4).rstrip() in message  # the whole rules file
    assert caught.value.hint


def test_bad_backend_override_is_usage_error(scratch_netns: str) -> None:
    with pytest.raises(UsageError):
        select_backend(scratch_netns, "iptables-ng")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_selection(scratch_netns: str, backend: str) -> None:
    assert select_backend(scratch_netns, backend) == backend
    assert select_backend(scratch_netns) in BACKENDS
    if backend == "legacy":
        # Istio 1.22+: existing legacy rules in the pod make the detection choose legacy.
        apply_istio_init(scratch_netns, parse_flags(shlex.split(DEFAULT_FLAGS), "1.30"), "1.30", "legacy")
        assert select_backend(scratch_netns, version="1.30") == "legacy"


# --- TPROXY routing -----------------------------------------------------------------------------------------


def ip_in(netns: str, *args: str) -> str:
    name = Path(netns).name
    return subprocess.run(["ip", "-n", name, *args], capture_output=True, text=True, check=True).stdout


@needs_shared
@pytest.mark.parametrize("backend", BACKENDS)
def test_tproxy_routes(scratch_netns: str, backend: str) -> None:
    cfg = config("default-tproxy-ipv4", "1.10.6")
    apply_istio_init(scratch_netns, cfg, "1.10.6", backend)
    reference = (DERIVED / "tproxy-ip-rule-route.txt").read_text().split("# ")
    want_rules = next(s for s in reference if s.startswith("ip rule show")).splitlines()[1:]
    want_route = next(s for s in reference if s.startswith("ip route show table 133")).splitlines()[1:]
    assert [line.rstrip() for line in ip_in(scratch_netns, "rule").splitlines()] == [w.rstrip() for w in want_rules]
    got_route = [line.rstrip() for line in ip_in(scratch_netns, "route", "show", "table", "133").splitlines()]
    assert got_route == [w.rstrip() for w in want_route if w.strip()]
    # 1.9/1.10 ran `ip rule add` with RunOrFail: a second run fails there.
    with pytest.raises(KernelError, match="TPROXY routing"):
        apply_istio_init(scratch_netns, cfg, "1.10.6", backend)


def test_no_routes_without_tproxy(scratch_netns: str) -> None:
    apply_istio_init(scratch_netns, parse_flags(shlex.split(DEFAULT_FLAGS), "1.30"), "1.30", "nft")
    assert "lookup 133" not in ip_in(scratch_netns, "rule")
