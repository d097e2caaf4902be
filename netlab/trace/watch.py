"""`netlab rules show POD --watch`: live counters with the ones that moved since the last refresh highlighted,
like `watch -d iptables -t nat -L -n -v` (the table is pure; the loop lives in the CLI)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from netlab.kernel.iptables import ChainCounters

Key = tuple[str, int]  # (chain, rule position); position 0 is the chain's policy counter


def counter_map(chains: Sequence[ChainCounters]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    for chain in chains:
        out[(chain.name, 0)] = (chain.packets, chain.bytes)
        for rule in chain.rules:
            out[(chain.name, rule.position)] = (rule.packets, rule.bytes)
    return out


def changed(previous: dict[Key, tuple[int, int]] | None, current: dict[Key, tuple[int, int]]) -> set[Key]:
    """Counters that differ from the previous refresh (nothing on the first one)."""
    if previous is None:
        return set()
    return {k for k, v in current.items() if previous.get(k) != v}


def watch_table(chains: Sequence[ChainCounters], moved: set[Key], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column, justify in (("chain", "left"), ("num", "right"), ("pkts", "right"), ("bytes", "right"),
                            ("rule", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for chain in chains:
        hot = (chain.name, 0) in moved
        policy = f"policy {chain.policy}" if chain.policy != "-" else ""
        table.add_row(Text(chain.name, style="bold"), "", _num(chain.packets, hot), _num(chain.bytes, hot),
                      Text(policy, style="dim"))
        for rule in chain.rules:
            hot = (chain.name, rule.position) in moved
            table.add_row("", str(rule.position), _num(rule.packets, hot), _num(rule.bytes, hot),
                          Text(rule.spec, style="reverse" if hot else ""))
    return table


def _num(value: int, hot: bool) -> Text:
    return Text(str(value), style="bold reverse" if hot else "")
