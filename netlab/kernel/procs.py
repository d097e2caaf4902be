"""Processes inside a namespace: started with nsenter as a given uid/gid, output to a log, stopped by PID."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from netlab.errors import EnvironmentProblem
from netlab.kernel.nsutil import start_time, unblock_signals

# Every process netlab starts carries NETLAB_LAB=<lab> in its environment (its children inherit it), so that it is
# recognised as netlab's even when a SIGKILL came between its start and its record in the lab state.
LAB_MARK = "NETLAB_LAB"


def marked_processes(lab: str) -> list[int]:
    """PIDs whose environment carries the lab's mark."""
    mark = f"\0{LAB_MARK}={lab}\0".encode()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:  # gone, or a kernel thread
            continue
        if mark in environ + b"\0":
            found.append(int(entry))
    return found


@dataclass(frozen=True)
class Started:
    member: str
    role: str
    pid: int
    started: int
    argv: list[str]
    log: str


def start_in_netns(member: str, role: str, netns_path: str, argv: list[str], log: str,
                   uid: int = 0, gid: int = 0, env: dict[str, str] | None = None) -> Started:
    """Start argv in the namespace; it survives this process (own session) and is stopped by PID later."""
    cmd = ["nsenter", f"--net={netns_path}"]
    if uid or gid:
        cmd += [f"--setgid={gid}", f"--setuid={uid}"]
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                [*cmd, "--", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **(env or {})}, preexec_fn=unblock_signals,
            )
        except FileNotFoundError:
            raise EnvironmentProblem("nsenter is missing", hint="apt-get install util-linux") from None
    started = start_time(proc.pid)
    proc.returncode = 0  # the lab owns it now; it is stopped by PID (and start time) at teardown
    return Started(member=member, role=role, pid=proc.pid, started=started or 0, argv=argv, log=log)
