"""Conformance of the istio-iptables renderer with every upstream golden and derived file in shared/istio.

Configurations are read from each golden folder's CASES.md ("equivalent CLI" plus the overrides that have no
flag) and from derived/README.md's scenario list, so the expected text comes only from the shared files.
Full runs must equal the golden per table; single-helper goldens must be an ordered subsequence of the full
rendering. Files that need a kernel (iptables-save output, ip rule/route) are checked here structurally and
for real in tests/kernel/test_rules_apply.py.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netlab.istio_init.flags import IptablesConfig, parse_flags
from netlab.istio_init.render import NetRange, OutboundRanges, build_rules, init_steps, outbound_ranges
from netlab.istio_init.rules import new_chains, to_commands, to_restore

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "istio"
GOLDEN = SHARED / "golden"
DERIVED = SHARED / "derived"
DEFAULT_FLAGS = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"

if not SHARED.is_dir():
    pytest.skip(f"shared Istio reference data not found at {SHARED}", allow_module_level=True)


# --- reading CASES.md ---------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    version: str
    lines: list[str] = field(default_factory=list)

    def item(self, key: str) -> str:
        for line in self.lines:
            if line.startswith(f"- {key}"):
                return line.split(":", 1)[1].strip()
        return ""

    @property
    def partial(self) -> bool:
        return "(partial" in self.item("code path exercised")

    @property
    def overrides(self) -> list[tuple[str, str]]:
        return re.findall(r"`(\w+) = ([^`]*)`", self.item("overrides"))

    def override_values(self, key: str) -> list[str]:
        return [value for name, value in self.overrides if name == key]

    def ipv6_for(self, golden: Path) -> bool:
        values = self.override_values("EnableInboundIPv6") + self.override_values("EnableIPv6")
        if not values:
            return False
        # TestShortCircuitInternalIterface runs twice: its .v6 golden comes from the IPv6 run.
        if golden.name.endswith(".v6.golden"):
            return "true" in values
        return values[-1] == "true"

    def config(self, golden: Path) -> IptablesConfig:
        cli = re.search(r"`([^`]*)`", self.item("equivalent CLI"))
        assert cli, f"{self.name}: no equivalent CLI in CASES.md"
        words = shlex.split(cli.group(1))
        start = words.index("istio-iptables")
        env = dict(word.split("=", 1) for word in words[:start])
        if self.item("package var"):
            env["ISTIO_META_DNS_CONNTRACK_ZONE"] = "true"
        servers = [
            server
            for key in ("DNSServersV4", "DNSServersV6")
            for value in self.override_values(key)
            for server in re.findall(r'"([^"]*)"', value)
        ]
        return parse_flags(words[start + 1 :], self.version, env, ipv6=self.ipv6_for(golden), dns_servers=servers)

    def ranges(self, cfg: IptablesConfig) -> OutboundRanges:
        """The NetworkRange values a single-helper test passes directly (not expressible as flags)."""
        ranges = outbound_ranges(cfg)
        for name, body in re.findall(r"(ipv[46]Range) = \{([^}]*)\}", self.item("helper arguments")):
            nets = tuple(n for n in re.search(r"IPNets:\[([^\]]*)\]", body).group(1).split(",") if n)
            value = NetRange(wildcard="IsWildcard:true" in body, nets=nets)
            if name == "ipv4Range":
                ranges = OutboundRanges(value, ranges.exclude_v4, ranges.include_v6, ranges.exclude_v6)
            else:  # the IPv6 helper receives the same range as exclude and include
                ranges = OutboundRanges(ranges.include_v4, ranges.exclude_v4, value, value)
        return ranges


def read_cases(folder: Path) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    current: Case | None = None
    for line in (folder / "CASES.md").read_text().splitlines():
        if line.startswith("## "):
            current = Case(line[3:].strip(), folder.name)
            cases[current.name] = current
        elif current is not None and line.startswith("- "):
            current.lines.append(line)
    return cases


def case_for(golden: Path) -> Case:
    cases = read_cases(golden.parent)
    name = golden.name.removesuffix(".golden").removesuffix(".v4").removesuffix(".v6")
    assert name in cases, f"{golden} has no section in {golden.parent / 'CASES.md'}"
    return cases[name]


# --- text helpers -------------------------------------------------------------------------------------------


def by_table_commands(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        table = re.search(r" -t (\S+) ", line)
        assert table, f"not an iptables command: {line!r}"
        out.setdefault(table.group(1), []).append(line)
    return out


def restore_blocks(text: str) -> dict[str, list[str]]:
    """iptables-restore text -> {table: lines between '* table' and COMMIT}."""
    out: dict[str, list[str]] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("* "):
            table = line[2:].strip()
            assert table not in out, f"table {table} twice in one payload"
            out[table] = []
        elif line == "COMMIT":
            table = None
        elif line.strip():
            assert table is not None, f"rule outside a table: {line!r}"
            out[table].append(line)
    return out


def log_payloads(text: str) -> list[dict[str, list[str]]]:
    """A 1.30 execution log -> its iptables-restore payloads (IPv4, then IPv6); save calls are dropped."""
    payloads: list[list[str]] = []
    last_table = ""
    for line in text.splitlines():
        if line in ("iptables-save", "ip6tables-save") or not line.strip():
            continue
        if line.startswith("* "):
            # Tables come sorted inside one payload, so a table that does not sort after the last starts the next.
            if not payloads or line[2:] <= last_table:
                payloads.append([])
            last_table = line[2:]
        payloads[-1].append(line)
    return [restore_blocks("\n".join(p)) for p in payloads]


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    rest = iter(haystack)
    return all(any(line == candidate for candidate in rest) for line in needle)


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


# --- goldens: 1.9.9 and 1.10.6 (command lists) --------------------------------------------------------------

COMMAND_GOLDENS = sorted(p for d in ("1.9.9", "1.10.6") for p in (GOLDEN / d).glob("*.golden"))


@pytest.mark.parametrize("golden", COMMAND_GOLDENS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_command_golden(golden: Path) -> None:
    case = case_for(golden)
    cfg = case.config(golden)
    sets = build_rules(cfg, case.version, case.ranges(cfg))
    ipv6 = golden.name.endswith(".v6.golden")
    rendered = to_commands(sets.v6 if ipv6 else sets.v4, ipv6=ipv6)
    expected = read_lines(golden)
    if case.partial:
        assert is_subsequence(expected, rendered), "\n".join(["golden not in rendering:", *expected, "--", *rendered])
    else:
        assert by_table_commands(rendered) == by_table_commands(expected)


# --- goldens: 1.30.3 (execution logs with restore payloads) -------------------------------------------------

LOG_GOLDENS = sorted((GOLDEN / "1.30.3").glob("*.golden"))


@pytest.mark.parametrize("golden", LOG_GOLDENS, ids=lambda p: p.name)
def test_log_golden(golden: Path) -> None:
    case = case_for(golden)
    cfg = case.config(golden)
    sets = build_rules(cfg, case.version)
    rendered = [restore_blocks(to_restore(sets.v4))]
    if sets.ipv6:
        rendered.append(restore_blocks(to_restore(sets.v6)))
    assert rendered == log_payloads(golden.read_text())


def test_log_golden_saves_match_state_check() -> None:
    """Every 1.30 log starts with the pre-apply state check (iptables-save, ip6tables-save)."""
    for golden in LOG_GOLDENS:
        assert golden.read_text().splitlines()[:2] == ["iptables-save", "ip6tables-save"], golden.name


# --- derived: the default injector flags and their variants -------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    flags: str = DEFAULT_FLAGS
    env: tuple[tuple[str, str], ...] = ()
    ipv6: bool = False
    dns_servers: tuple[str, ...] = ()


# From derived/README.md "Scenarios (file prefix)".
DNS = (("ISTIO_META_DNS_CAPTURE", "true"),)
SCENARIOS = {
    "default-redirect-ipv4": Scenario(),
    "default-redirect-ipv4-dnscapture": Scenario(env=DNS, dns_servers=("10.96.0.10",)),
    "default-redirect-ipv4-dnscapture-conntrackzone": Scenario(
        env=(*DNS, ("ISTIO_META_DNS_CONNTRACK_ZONE", "true")), dns_servers=("10.96.0.10",)
    ),
    "default-tproxy-ipv4": Scenario(flags=DEFAULT_FLAGS.replace("-m REDIRECT", "-m TPROXY")),
    "default-redirect-ipv6pod": Scenario(ipv6=True),
}
_DERIVED_RE = re.compile(r"^(?P<scenario>[a-z0-9-]+?)\.(?P<kind>[a-z0-9.-]+)\.txt$")


def derived_config(path: Path) -> tuple[IptablesConfig, str, str]:
    match = _DERIVED_RE.match(path.name)
    assert match and match["scenario"] in SCENARIOS, f"{path.name}: scenario not listed in derived/README.md"
    sc = SCENARIOS[match["scenario"]]
    version = path.parent.name
    cfg = parse_flags(shlex.split(sc.flags), version, dict(sc.env), ipv6=sc.ipv6, dns_servers=sc.dns_servers)
    return cfg, version, match["kind"]


DERIVED_FILES = sorted(p for p in DERIVED.glob("*/*.txt"))


@pytest.mark.parametrize("path", DERIVED_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_derived(path: Path) -> None:
    cfg, version, kind = derived_config(path)
    sets = build_rules(cfg, version)
    if kind in ("restore-v4", "restore-v6"):
        rules = sets.v4 if kind == "restore-v4" else sets.v6
        assert restore_blocks(to_restore(rules)) == restore_blocks(path.read_text())
        if version != "1.9.9" and version != "1.10.6":
            assert to_restore(rules) == path.read_text()  # 1.30 sorts tables: byte-identical
    elif kind in ("commands-v4", "commands-v6"):
        ipv6 = kind == "commands-v6"
        assert to_commands(sets.v6 if ipv6 else sets.v4, ipv6=ipv6) == read_lines(path)
    elif kind == "ext-calls":
        assert init_steps(cfg, version) == read_lines(path)
    elif kind.startswith(("v4.iptables-save-", "v6.iptables-save-")):
        # The kernel regroups rules by chain and canonicalises matches; compare what survives that:
        # the ISTIO_* chains of each table and the number of rules per table. The kernel test compares text.
        rules = sets.v6 if kind.startswith("v6.") else sets.v4
        assert save_shape(path.read_text()) == rendered_shape(rules)
    else:
        pytest.fail(f"{path.name}: unknown derived file kind {kind!r}")


def save_shape(text: str) -> dict[str, tuple[list[str], int]]:
    out: dict[str, tuple[list[str], int]] = {}
    table = ""
    chains: list[str] = []
    count = 0
    for line in text.splitlines():
        if line.startswith("*"):
            table, chains, count = line[1:], [], 0
        elif line.startswith(":") and " - " in line:
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            count += 1
        elif line == "COMMIT":
            out[table] = (sorted(chains), count)
    return out


def rendered_shape(rules: tuple) -> dict[str, tuple[list[str], int]]:
    out: dict[str, tuple[list[str], int]] = {}
    for table in {r.table for r in rules}:
        mine = [r for r in rules if r.table == table]
        out[table] = (sorted(chain for _, chain in new_chains(mine)), len(mine))
    return out


# --- coverage of the shared folder --------------------------------------------------------------------------

NFTABLES_REASON = "native nftables goldens (golden/1.30.3/nftables, --native-nftables) are out of netlab's scope"
KERNEL_ONLY = {"tproxy-ip-rule-route.txt"}  # checked by tests/kernel/test_rules_apply.py


def test_every_shared_file_is_checked() -> None:
    """A file added to shared/istio must be claimed by one of the tests above (or explicitly skipped)."""
    claimed = set(COMMAND_GOLDENS) | set(LOG_GOLDENS) | set(DERIVED_FILES)
    unclaimed = []
    for path in sorted(SHARED.rglob("*")):
        if not path.is_file() or path in claimed or path.suffix == ".md":
            continue
        if "nftables" in path.parts or path.name in KERNEL_ONLY:
            continue
        unclaimed.append(str(path.relative_to(SHARED)))
    assert not unclaimed, f"files no test checks: {unclaimed}"
    assert len(COMMAND_GOLDENS) >= 50 and len(LOG_GOLDENS) >= 20 and len(DERIVED_FILES) >= 70


@pytest.mark.skip(reason=NFTABLES_REASON)
def test_nftables_goldens() -> None:  # pragma: no cover - documented as skipped
    raise AssertionError("not implemented")
