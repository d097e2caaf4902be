"""A pod's TCP sockets with their owning process and uid, like `ss -tanpe` run inside the pod."""

from __future__ import annotations

import re
from dataclasses import dataclass

from netlab.errors import KernelError
from netlab.kernel.nsutil import nsenter_run

_USERS = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')
_UID = re.compile(r"\buid:(\d+)")


@dataclass(frozen=True)
class SocketRow:
    state: str
    local: str
    peer: str
    uid: int | None
    processes: list[tuple[str, int]]  # (command, pid)


def parse_ss(text: str) -> list[SocketRow]:
    """Parse `ss -H -tanpe` output: STATE RECV-Q SEND-Q LOCAL PEER [users:((...))] [uid:N] ..."""
    rows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 5:
            continue
        uid = _UID.search(line)
        rows.append(SocketRow(state=words[0], local=words[3], peer=words[4], uid=int(uid[1]) if uid else None,
                              processes=[(name, int(pid)) for name, pid in _USERS.findall(line)]))
    return rows


def list_sockets(netns_path: str) -> list[SocketRow]:
    proc = nsenter_run(netns_path, ["ss", "-H", "-tanpe"], package="iproute2")
    if proc.returncode != 0:
        raise KernelError(f"ss failed in {netns_path}: {proc.stderr.strip()}")
    return parse_ss(proc.stdout)
