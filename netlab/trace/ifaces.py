"""Per-interface packet counters of a namespace (/proc/PID/net/dev is the namespace of PID)."""

from __future__ import annotations

IfaceCounters = dict[str, tuple[int, int]]  # iface -> (rx packets, tx packets)


def parse_net_dev(text: str) -> IfaceCounters:
    out: IfaceCounters = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 10:
            out[name.strip()] = (int(fields[1]), int(fields[9]))
    return out


def read_ifaces(pid: int) -> IfaceCounters:
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return parse_net_dev(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return {}


def iface_deltas(before: IfaceCounters, after: IfaceCounters) -> dict[str, list[int]]:
    """Interfaces whose counters moved, [rx, tx] packets."""
    out: dict[str, list[int]] = {}
    for name, (rx, tx) in after.items():
        rx0, tx0 = before.get(name, (rx, tx))
        if rx != rx0 or tx != tx0:
            out[name] = [rx - rx0, tx - tx0]
    return out
