"""Rule walks (pure): which chains and rules a connection went through, rebuilt from counters that moved.

Within one table, a walk starts at a built-in chain's counted rule, follows counted jumps into user chains and ends
at the rule that decided (REDIRECT, DNAT, RETURN, ...). nat rules count only a connection's first packet, so each
walk is one connection (or several that took the same path: its last rule's delta says how many).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlab.trace.model import RuleChange

BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
# Targets that are not user chains; anything else after -j/-g is a chain of the same table.
TARGETS = {"ACCEPT", "DROP", "RETURN", "REDIRECT", "DNAT", "SNAT", "MASQUERADE", "TPROXY", "MARK", "CONNMARK",
           "LOG", "REJECT", "CT", "NOTRACK", "TRACE", "NETMAP", "QUEUE", "NFQUEUE", "CHECKSUM", "TOS", "DSCP"}
_JUMP = re.compile(r"(?:^|\s)-[jg] (\S+)")
_TO_PORTS = re.compile(r"--to-ports (\d+)")
_TO_DEST = re.compile(r"--to-destination (\S+)")
_ON_PORT = re.compile(r"--on-port (\d+)")


def target_of(spec: str) -> str | None:
    m = _JUMP.search(spec)
    return m[1] if m else None


@dataclass(frozen=True)
class Walk:
    table: str
    root: str  # the built-in chain it started in
    rules: tuple[RuleChange, ...]

    @property
    def last(self) -> RuleChange:
        return self.rules[-1]

    @property
    def verdict(self) -> str:
        return target_of(self.last.spec) or "-"

    @property
    def packets(self) -> int:
        return self.last.packets

    def redirect_port(self) -> int | None:
        """The port a REDIRECT or TPROXY sends the connection to."""
        m = _TO_PORTS.search(self.last.spec) or _ON_PORT.search(self.last.spec)
        return int(m[1]) if m and self.verdict in ("REDIRECT", "TPROXY") else None

    def dnat_to(self) -> str | None:
        m = _TO_DEST.search(self.last.spec)
        return m[1] if m and self.verdict == "DNAT" else None

    def describe(self) -> list[str]:
        return [r.describe() for r in self.rules]


def walks(changes: list[RuleChange]) -> list[Walk]:
    """Every walk the moved counters show, table by table, roots in hook order."""
    out: list[Walk] = []
    by_chain: dict[tuple[str, str], list[RuleChange]] = {}
    for c in sorted(changes, key=lambda c: (c.table, c.chain, c.position)):
        by_chain.setdefault((c.table, c.chain), []).append(c)
    for table in sorted({c.table for c in changes}):
        for root in BUILTIN_CHAINS:
            for path in _walk(by_chain, table, root, (), set()):
                out.append(Walk(table, root, path))
    return out


def _walk(by_chain: dict[tuple[str, str], list[RuleChange]], table: str, chain: str,
          prefix: tuple[RuleChange, ...], seen: set[str]) -> list[tuple[RuleChange, ...]]:
    found: list[tuple[RuleChange, ...]] = []
    for rule in by_chain.get((table, chain), []):
        target = target_of(rule.spec)
        path = (*prefix, rule)
        if target and target not in TARGETS and target not in seen:
            deeper = _walk(by_chain, table, target, path, seen | {chain})
            # Nothing counted in the target chain: the packet fell through it and came back here, so a later
            # counted rule of this chain (its own walk) carries on.
            found += deeper
            if not deeper and rule is by_chain[(table, chain)][-1]:
                found.append(path)  # ... unless this was the last one: it ended at the chain's policy
        else:
            found.append(path)
    return found
