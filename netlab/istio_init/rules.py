"""Rule values and the two text forms istio-iptables produces: iptables-restore input and a command list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

NAT, MANGLE, RAW = "nat", "mangle", "raw"
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


@dataclass(frozen=True)
class Rule:
    """One `-A CHAIN ARGS` (or `-I CHAIN POS ARGS` when `position` is set) in one table."""

    table: str
    chain: str
    args: tuple[str, ...]
    position: int | None = None

    def spec(self) -> str:
        head = f"-A {self.chain}" if self.position is None else f"-I {self.chain} {self.position}"
        return " ".join((head, *self.args))


@dataclass
class RuleList:
    """Rules in the order they were added; chains to create follow from that order."""

    rules: list[Rule] = field(default_factory=list)

    def append(self, table: str, chain: str, *args: str) -> None:
        self.rules.append(Rule(table, chain, tuple(args)))

    def insert(self, table: str, chain: str, position: int, *args: str) -> None:
        self.rules.append(Rule(table, chain, tuple(args), position))


def new_chains(rules: Iterable[Rule]) -> list[tuple[str, str]]:
    """(table, chain) of every non-builtin chain that holds a rule, in order of first use."""
    seen: dict[tuple[str, str], None] = {}
    for rule in rules:
        if rule.chain not in BUILTIN_CHAINS:
            seen.setdefault((rule.table, rule.chain), None)
    return list(seen)


def to_restore(rules: Sequence[Rule]) -> str:
    """iptables-restore input: tables sorted by name, `-N` lines first, rules in order; "" when empty."""
    blocks: list[str] = []
    for table in sorted({r.table for r in rules}):
        mine = [r for r in rules if r.table == table]
        lines = [f"* {table}"]
        lines += [f"-N {chain}" for _, chain in new_chains(mine)]
        lines += [r.spec() for r in mine]
        lines.append("COMMIT")
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)


def to_commands(rules: Sequence[Rule], ipv6: bool = False) -> list[str]:
    """The 1.9/1.10 command list: every `-N` (order of first use), then every rule in the order added."""
    binary = "ip6tables" if ipv6 else "iptables"
    out = [f"{binary} -t {table} -N {chain}" for table, chain in new_chains(rules)]
    out += [f"{binary} -t {r.table} {r.spec()}" for r in rules]
    return out
