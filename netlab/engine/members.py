"""A lab member's namespace and the processes netlab starts in it: apps, proxies, their readiness."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netlab.engine.state import LabState
from netlab.errors import KernelError, UsageError
from netlab.kernel import procs
from netlab.kernel.nsutil import is_same_process, netns_inode, reap
from netlab.model.schema import App
from netlab.plan import HOSTS_ROOT
from netlab.signals import deferred

APP_START_TIMEOUT = 5.0


def member_netns_path(state: LabState, member: str) -> str:
    """`/proc/PID/ns/net` of a member's holder, checked to still be the lab's namespace.

    The PID comes from the state file: if the holder died and the PID was reused, the path would lead into
    somebody else's namespace (the host's root one, even). The namespace inode recorded at creation tells.
    """
    info = state.members.get(member)
    if info is None:
        known = ", ".join(n for n in state.members if n != "_node")
        raise UsageError(f"lab '{state.lab}' has no pod or host named '{member}'", hint=f"known: {known}")
    path = f"/proc/{info['pid']}/ns/net"
    if info.get("inode") is None or netns_inode(path) != info["inode"]:
        raise KernelError(f"the namespace of {member} is gone (its holder, pid {info['pid']}, exited)",
                          hint=f"`netlab down {state.lab}` and bring the lab up again")
    return path


def start_in_member(state: LabState, member: str, role: str, argv: list[str], uid: int = 0, gid: int = 0,
                    env: dict[str, str] | None = None) -> procs.Started:
    """Start a process in a pod or host as uid/gid, logging to <state>/logs/<member>.<role>.log."""
    log = state.member_file("logs", member, f"{role}.log")
    env = {**(env or {}), procs.LAB_MARK: state.lab}
    with deferred():
        started = procs.start_in_netns(member, role, member_netns_path(state, member), argv, log, uid, gid, env)
        state.push("process", member=member, role=role, pid=started.pid, started=started.started,
                   argv=argv, log=log)
    return started


def app_argv(state: LabState, member: str, app: App, version: str = "") -> list[str]:
    """The app's command line. An http app's answers carry the member's name and the pod's version label."""
    if app.kind == "command":
        return list(app.command or [])
    assert app.listen is not None
    host = state.members[member]["ip"] if app.listen.host == "eth0" else app.listen.host
    peers = state.peers_file(member)
    os.makedirs(os.path.dirname(peers), exist_ok=True)
    argv = [sys.executable, "-m", "netlab.apps", app.kind, "--listen", f"{host}:{app.listen.port}",
            "--reply", app.reply, "--peers", peers, "--uid", str(app.uid), "--gid", str(app.gid)]
    if app.kind == "http":
        argv += ["--name", member, "--version", version, *app.behaviour_args()]
        if app.calls:
            hosts = os.path.join(HOSTS_ROOT, state.members[member]["netns"], "hosts")
            argv += ["--call-timeout", str(app.call_timeout), "--hosts", hosts]
    return argv


def start_app(state: LabState, member: str, app: App, version: str = "") -> Callable[[], None]:
    """Start the app; returns a function that waits until it listens (when it declares a port)."""
    # Built-in apps switch to uid/gid themselves after binding; a `command` app is exec'd as uid/gid by nsenter.
    uid, gid = (app.uid, app.gid) if app.kind == "command" else (0, 0)
    started = start_in_member(state, member, "app", app_argv(state, member, app, version), uid, gid)
    port = app.listen.port if app.listen is not None else None
    return lambda: wait_listening(state, member, port, started) if port is not None else None


def wait_listening(state: LabState, member: str, port: int, proc: procs.Started,
                   timeout: float = APP_START_TIMEOUT) -> None:
    """Until the member's TCP table (/proc/PID/net/tcp shows the namespace of PID) has a listener on port."""
    table = f"/proc/{state.members[member]['pid']}/net/tcp"
    wanted = f":{port:04X} "

    def listening() -> bool:
        with open(table) as f:
            return any(wanted in line and line.split()[3] == "0A" for line in f.readlines()[1:])

    wait_until(listening, proc, timeout, f"{proc.role} in {member} is not listening on port {port}")


def wait_until(ready: Callable[[], bool], proc: procs.Started, timeout: float, failure: str) -> None:
    """Poll ready() until it holds; fail early if proc exits, and show the tail of its log either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        reap(proc.pid)
        if not is_same_process(proc.pid, proc.started):
            break
        time.sleep(0.01)
    tail = Path(proc.log).read_text(errors="replace")[-800:] if os.path.exists(proc.log) else ""
    raise KernelError(f"{failure} after {timeout:.0f} s: {' '.join(proc.argv)}\n{tail}", hint=f"see the log {proc.log}")


