"""Read what a pod recorded: conntrack entries, iptables counters, the sidecar's access log, the app's peers."""

from __future__ import annotations

import os
import time

from netlab.errors import EnvironmentProblem, KernelError
from netlab.kernel.iptables import read_chains
from netlab.kernel.nsutil import nsenter_run
from netlab.probe.observed import Addr, ConntrackEntry, LogLine, link, parse_conntrack, parse_log

LOG_WAIT = 1.5  # the proxy flushes its access log about once a second
LOG_POLL = 0.05


def read_conntrack(netns_path: str) -> list[ConntrackEntry]:
    """`conntrack -L -p tcp` inside the namespace (the same view a student gets with nsenter)."""
    proc = nsenter_run(netns_path, ["conntrack", "-L", "-p", "tcp"], package="conntrack")
    if proc.returncode != 0:
        if "not found" in proc.stderr or "No such file" in proc.stderr:
            raise EnvironmentProblem(f"conntrack is not usable: {proc.stderr.strip()}",
                                     hint="install the conntrack package (conntrack-tools)")
        raise KernelError(f"conntrack -L failed in {netns_path}: {proc.stderr.strip()}")
    return parse_conntrack(proc.stdout)


Counters = dict[str, tuple[str, int]]  # TABLE/CHAIN#N -> (rule spec, packets)


def read_counters(netns_path: str, tables: set[str], backend: str) -> tuple[Counters, dict[str, int]]:
    """Packet counters of every rule in the tables, plus each chain's length (TABLE/CHAIN -> rules)."""
    counters: Counters = {}
    lengths: dict[str, int] = {}
    for table in sorted(tables):
        for chain in read_chains(netns_path, table, backend):  # type: ignore[arg-type]
            lengths[f"{table}/{chain.name}"] = len(chain.rules)
            for rule in chain.rules:
                counters[f"{table}/{chain.name}#{rule.position}"] = (rule.spec, rule.packets)
    return counters, lengths


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def read_from(path: str, offset: int) -> str:
    """What was appended to path after offset (whole lines only)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return text[: text.rfind("\n") + 1]


def read_log_from(pod: str, path: str, offset: int) -> list[LogLine]:
    return parse_log(pod, read_from(path, offset))


def linked_lines(local: Addr | None, logs: dict[str, str], marks: dict[str, int],
                 relevant: list[str], aliases: tuple[Addr, ...] = ()) -> list[LogLine]:
    """The access-log lines of a probe from `local` (or its masqueraded `aliases`), in path order, among those
    appended after marks (pod -> offset in logs[pod]). While a pod in `relevant` (a sidecar on the path) has none
    yet, wait up to LOG_WAIT for the proxies' periodic flush."""
    deadline = time.monotonic() + (LOG_WAIT if relevant else 0)
    while True:
        fresh = [line for pod, offset in marks.items() for line in read_log_from(pod, logs[pod], offset)]
        chain = link(local, fresh, aliases)
        if all(any(line.pod == pod for line in chain) for pod in relevant) or time.monotonic() >= deadline:
            return chain
        time.sleep(LOG_POLL)


def masqueraded(local: Addr | None, netns_paths: list[str]) -> tuple[Addr, ...]:
    """`local` as the nodes' conntrack says they rewrote it (the reply's destination), if any did."""
    if local is None:
        return ()
    found = []
    for path in netns_paths:
        for entry in read_conntrack(path):
            if entry.orig_source == local:
                seen = (entry.fields["reply_dst"], int(entry.fields["reply_dport"]))
                if seen != local:
                    found.append(seen)
    return tuple(found)


def last_line(path: str) -> str | None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    return lines[-1] if lines else None

