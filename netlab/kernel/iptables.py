"""Apply istio-init's rules inside a pod's network namespace, read them back, edit them.

Every command runs inside the namespace given by path (`/proc/PID/ns/net`, `/run/netns/NAME`) through
`nsenter --net=PATH`; nothing here touches the caller's own namespace. Backends:
- `legacy`: python-iptables in a short-lived worker process (`python -m netlab.kernel.iptables_legacy`), so no
  libiptc handle outlives the apply, like an init container;
- `nft`: `iptables-nft-restore --noflush`.
Both are what the pod's own `iptables`/`iptables-save` then show (with the matching binary).
"""

from __future__ import annotations

import errno
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from netlab.errors import EnvironmentProblem, KernelError, UsageError
from netlab.istio_init.flags import IptablesConfig
from netlab.istio_init.render import build_rules, tproxy_routes_needed
from netlab.istio_init.rules import to_restore
from netlab.istio_init.versions import IstioVersion, parse_version, traits_for
from netlab.kernel.nsutil import nsenter_run

Backend = Literal["legacy", "nft"]
BACKENDS: tuple[Backend, ...] = ("legacy", "nft")
TABLES = ("nat", "mangle", "raw", "filter")


@dataclass(frozen=True)
class RuleCounter:
    position: int  # 1-based, as `iptables -L --line-numbers` and `-D CHAIN N` count
    spec: str  # iptables-save form, without the leading `-A CHAIN`
    packets: int
    bytes: int


@dataclass(frozen=True)
class ChainCounters:
    name: str
    policy: str  # ACCEPT/DROP for builtin chains, "-" for user chains
    packets: int
    bytes: int
    rules: list[RuleCounter] = field(default_factory=list)


# --- running things in the namespace ------------------------------------------------------------------------


def _binary(backend: Backend, tool: str, ipv6: bool = False) -> str:
    """tool is "" (iptables), "-save" or "-restore"."""
    return f"{'ip6tables' if ipv6 else 'iptables'}-{backend}{tool}"


def _iptables_in(netns_path: str, argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """An iptables tool run inside the namespace; a missing tool is an EnvironmentProblem naming the package."""
    return nsenter_run(netns_path, argv, stdin=stdin, package="iptables")


def _if_installed(netns_path: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    """For backend detection: the finished command, None when its tool is not installed (that backend is out)."""
    try:
        return _iptables_in(netns_path, argv)
    except EnvironmentProblem:
        return None


def _check(proc: subprocess.CompletedProcess[str], what: str, netns_path: str) -> str:
    if proc.returncode != 0:
        raise KernelError(f"{what} failed in {netns_path}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


# --- backend selection --------------------------------------------------------------------------------------


def _nft_usable(netns_path: str) -> bool:
    version = _if_installed(netns_path, ["iptables-nft-save", "--version"])
    if version is None or version.returncode != 0 or "nf_tables" not in version.stdout:
        return False
    # Istio's probe: add and delete a no-op rule (protocol 255 never occurs), here in the pod namespace only.
    probe = ["-t", "nat", "INPUT", "-p", "255", "-j", "RETURN"]
    added = _if_installed(netns_path, ["iptables-nft", probe[0], probe[1], "-A", *probe[2:]])
    if added is None or added.returncode != 0:
        return False
    _iptables_in(netns_path, ["iptables-nft", probe[0], probe[1], "-D", *probe[2:]])
    return True


def system_backend() -> Backend:
    """What the unsuffixed `iptables` on this machine is (what users type in `nsenter -t PID -n iptables`)."""
    try:
        out = subprocess.run(["iptables", "--version"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError as err:
        raise EnvironmentProblem("iptables not found", hint="install the iptables package") from err
    return "nft" if "nf_tables" in out else "legacy"


def select_backend(
    netns_path: str, override: str | None = None, version: IstioVersion | str | None = None
) -> Backend:
    """Pick the backend as Istio does; `override` ("legacy"/"nft") wins, like --force-iptables-binary.

    1.22+: legacy when `iptables-legacy-save` in the pod already dumps ≥3 lines, else nft when usable, else
    the plain `iptables`. Before 1.22 istio-init simply ran the unsuffixed `iptables`.
    """
    if override:
        if override not in BACKENDS:
            raise UsageError(f"unknown iptables backend {override!r}", hint="use legacy or nft")
        return override  # type: ignore[return-value]
    if version is not None and not traits_for(version).detects_iptables_backend:
        return system_backend()
    legacy = _if_installed(netns_path, ["iptables-legacy-save"])
    if legacy is not None and legacy.returncode == 0 and len(legacy.stdout.splitlines()) >= 3:
        return "legacy"
    if _nft_usable(netns_path):
        return "nft"
    return system_backend()


# --- applying -----------------------------------------------------------------------------------------------


def apply_restore(netns_path: str, text: str, backend: Backend, ipv6: bool = False) -> None:
    """`iptables-restore --noflush` of text in the namespace; a failure shows the message and the whole file."""
    if not text.strip():
        return  # istio-init runs ip6tables-restore on an empty file; nothing to do
    if backend == "legacy":
        argv = [sys.executable, "-m", "netlab.kernel.iptables_legacy", *(["--ipv6"] if ipv6 else [])]
        tool = _binary("legacy", "-restore", ipv6) + " (python-iptables)"
    elif backend == "nft":
        argv = [_binary("nft", "-restore", ipv6), "--noflush"]
        tool = argv[0]
    else:
        raise UsageError(f"unknown iptables backend {backend!r}", hint="use legacy or nft")
    proc = _iptables_in(netns_path, argv, stdin=text)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if proc.returncode < 0:
            message = f"{message}\nthe apply process was killed by signal {-proc.returncode}".strip()
        raise KernelError(
            f"{tool} --noflush failed in {netns_path}:\n{message}\nrules file:\n{text.rstrip()}",
            hint="istio-init 1.9/1.10 fails like this when it runs twice in one pod (the ISTIO_* chains exist); "
            "recreate the pod instead of re-applying",
        )


def setup_tproxy_routes(
    netns_path: str, mark: int = 1337, table: int = 133, ipv6: bool = False, exist_ok: bool = False
) -> None:
    """`ip rule add fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`, by netlink.

    Like `ip rule add`, a rule that already exists is an error unless exist_ok (a second 1.9/1.10 istio-init
    run fails right here); the route is best effort, as istio-init's `Run` of `ip route add` was.
    """
    from pyroute2.netlink.exceptions import NetlinkError  # imported lazily: pure callers never need netlink

    from netlab.kernel.links import netlink

    families = [socket.AF_INET, socket.AF_INET6] if ipv6 else [socket.AF_INET]
    try:
        with netlink(netns_path) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            for family in families:
                # The kernel's own choice when `ip rule add` gives no pref: just above the first non-local rule.
                rules = ipr.get_rules(family=family)
                prefs = [r.get_attr("FRA_PRIORITY") or 0 for r in rules]
                priority = min((p for p in prefs if p > 0), default=32766) - 1
                # `ip rule add` asks for an exclusive create; do the same check explicitly.
                exists = any(r.get_attr("FRA_FWMARK") == mark and r.get_attr("FRA_TABLE") == table for r in rules)
                if exists and not exist_ok:
                    raise NetlinkError(errno.EEXIST, f"RTNETLINK answers: File exists (fwmark {mark} lookup {table})")
                if not exists:
                    ipr.rule("add", family=family, fwmark=mark, table=table, priority=priority)
                dst = "0.0.0.0/0" if family == socket.AF_INET else "::/0"
                try:
                    ipr.route("add", family=family, dst=dst, type="local", scope="host", oif=lo,
                              table=table, proto="boot")
                except NetlinkError as err:
                    if err.code != errno.EEXIST:
                        raise
    except Exception as err:
        reason = err.__cause__ if isinstance(err, KernelError) and err.__cause__ else err  # netlink()'s wrapping
        raise KernelError(
            f"TPROXY routing setup (fwmark {mark} -> table {table}) failed in {netns_path}: {reason}",
            hint="a second istio-init run in one pod fails here in TPROXY mode; recreate the pod",
        ) from err


def add_ipv6_passthrough_address(netns_path: str) -> None:
    """`ip -6 addr add ::6/128 dev lo`: the IPv6 inbound passthrough source needs an address (127/8 does not)."""
    from netlab.kernel.links import netlink

    try:
        with netlink(netns_path) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address="::6", prefixlen=128, family=socket.AF_INET6)
    except Exception as err:
        reason = err.__cause__ if isinstance(err, KernelError) and err.__cause__ else err
        raise KernelError(f"adding ::6/128 to lo failed in {netns_path}: {reason}") from err


def apply_istio_init(
    netns_path: str,
    cfg: IptablesConfig,
    version: IstioVersion | str,
    backend: str | None = None,
) -> Backend:
    """Do what istio-init of `version` does in a pod: addresses, TPROXY routes, then the rules. Returns the backend."""
    ver = parse_version(version) if isinstance(version, str) else version
    chosen = select_backend(netns_path, backend, ver)
    if cfg.ipv6:
        add_ipv6_passthrough_address(netns_path)
    if tproxy_routes_needed(cfg, ver):
        setup_tproxy_routes(
            netns_path, int(cfg.tproxy_mark), int(cfg.tproxy_route_table), cfg.ipv6,
            exist_ok=traits_for(ver).tproxy_routes_via_netlink,
        )
    sets = build_rules(cfg, ver)
    apply_restore(netns_path, to_restore(sets.v4), chosen)
    if sets.ipv6:
        apply_restore(netns_path, to_restore(sets.v6), chosen, ipv6=True)
    return chosen


# --- reading and editing ------------------------------------------------------------------------------------

_COUNTED_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) ?(.*)$")
_CHAIN_LINE = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]$")


def read_chains(
    netns_path: str, table: str, backend: Backend, zero: bool = False, ipv6: bool = False
) -> list[ChainCounters]:
    """The table's chains with rules and packet/byte counters (what `iptables -t T -L -n -v` shows).

    With zero=True the counters are reset right after reading (like `iptables -L -Z`).
    """
    if table not in TABLES:
        raise UsageError(f"unknown table {table!r}", hint=f"use one of {', '.join(TABLES)}")
    out = _check(_iptables_in(netns_path, [_binary(backend, "-save", ipv6), "-c", "-t", table]),
                 "reading rules", netns_path)
    chains: dict[str, ChainCounters] = {}
    for line in out.splitlines():
        if m := _CHAIN_LINE.match(line):
            chains[m[1]] = ChainCounters(m[1], m[2], int(m[3]), int(m[4]))
        elif m := _COUNTED_RULE.match(line):
            chain = chains[m[3]]
            chain.rules.append(RuleCounter(len(chain.rules) + 1, m[4], int(m[1]), int(m[2])))
    if zero:
        _check(_iptables_in(netns_path, [_binary(backend, "", ipv6), "-t", table, "-Z"]), "zeroing", netns_path)
    return list(chains.values())


def format_chains(chains: Sequence[ChainCounters], marked: Collection[tuple[str, int]] = ()) -> str:
    """A compact `iptables -L -n -v --line-numbers` style listing; rules in `marked` ((chain, position); position 0
    is the policy) get a * before their number."""
    lines: list[str] = []
    for chain in chains:
        head = f"Chain {chain.name}"
        head += f" (policy {chain.policy} {chain.packets} packets, {chain.bytes} bytes)" if chain.policy != "-" else ""
        lines += [("*" if (chain.name, 0) in marked else "") + head, f"{'num':>4} {'pkts':>8} {'bytes':>10}  rule"]
        lines += [f"{'*' if (chain.name, r.position) in marked else ' '}{r.position:>3} {r.packets:>8} {r.bytes:>10}  "
                  f"{r.spec}" for r in chain.rules]
        lines.append("")
    return "\n".join(lines)


def delete_rule(netns_path: str, table: str, chain: str, position: int, backend: Backend, ipv6: bool = False) -> None:
    """Delete rule number `position` (1-based) of chain, e.g. ISTIO_OUTPUT rule 1 (the 127.0.0.6 RETURN)."""
    if position < 1:
        raise UsageError(f"rule position {position} is invalid", hint="positions count from 1")
    argv = [_binary(backend, "", ipv6), "-t", table, "-D", chain, str(position)]
    _check(_iptables_in(netns_path, argv), f"deleting {table}/{chain} rule {position}", netns_path)


def insert_rule(
    netns_path: str,
    table: str,
    chain: str,
    position: int,
    rule: Sequence[str] | str,
    backend: Backend,
    ipv6: bool = False,
) -> None:
    """Insert rule (iptables arguments, e.g. "-o lo -s 127.0.0.6/32 -j RETURN", split like a shell would) at
    `position` (1-based)."""
    if position < 1:
        raise UsageError(f"rule position {position} is invalid", hint="positions count from 1")
    args = shlex.split(rule) if isinstance(rule, str) else list(rule)  # quoted arguments, e.g. a --comment
    argv = [_binary(backend, "", ipv6), "-t", table, "-I", chain, str(position), *args]
    _check(_iptables_in(netns_path, argv), f"inserting into {table}/{chain} at {position}", netns_path)
