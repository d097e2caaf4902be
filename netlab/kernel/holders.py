"""Pause-style namespace holders: one tiny process per network namespace.

The holder is coreutils `sleep infinity` started in a fresh network namespace with argv[0] set to
`netlab-pause:<lab>:<member>`, so `ps` shows what it is and `netlab clean` can find it after a SIGKILLed run.
It costs under 2 MB RSS (a Python interpreter per pod would cost ~10 MB). `nsenter -t PID -n` works on it, and
`/run/netns/<name>` is a symlink to `/proc/PID/ns/net` so `ip netns exec` works too: a symlink, not a bind mount,
so that the namespace dies with its holder instead of being pinned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from netlab.errors import EnvironmentProblem, KernelError
from netlab.kernel.nsutil import is_same_process, reap, start_time, unshare_net
from netlab.plan import NETNS_DIR

MARK = "netlab-pause"


@dataclass(frozen=True)
class Holder:
    member: str
    netns: str
    pid: int
    started: int

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def holder_argv0(lab: str, member: str) -> str:
    return f"{MARK}:{lab}:{member}"


def spawn_holder(lab: str, member: str, netns: str) -> Holder:
    sleep = shutil.which("sleep")
    if sleep is None:
        raise EnvironmentProblem("`sleep` (coreutils) is not on PATH", hint="apt-get install coreutils")
    proc = subprocess.Popen(
        [holder_argv0(lab, member), "infinity"],
        executable=sleep,
        preexec_fn=unshare_net,
        start_new_session=True,  # a Ctrl-C in the terminal must not kill a lab that `up` leaves running
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = start_time(proc.pid)
    if started is None:
        raise EnvironmentProblem(f"the namespace holder for {member} exited at once", hint="run `netlab doctor`")
    # The holder now belongs to the lab, not to this Popen: don't let Python reap or warn about it.
    proc.returncode = 0
    return Holder(member=member, netns=netns, pid=proc.pid, started=started)


def link_netns_name(holder: Holder) -> None:
    os.makedirs(NETNS_DIR, exist_ok=True)
    link = os.path.join(NETNS_DIR, holder.netns)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(holder.netns_path, link)


def unlink_netns_name(netns: str) -> None:
    link = os.path.join(NETNS_DIR, netns)
    if os.path.islink(link):
        os.unlink(link)


def stop_pid(pid: int, started: int, grace: float = 1.0, kill_wait: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, only if PID still names the process we started.

    Everything netlab starts leads its own session (start_new_session), so the signal goes to the process group:
    a `command` app's children (`sh -c`, nginx workers) go too instead of keeping the pod's namespace alive.
    """
    if not is_same_process(pid, started):
        return False
    group = _own_group(pid)
    if not _signal(pid, group, signal.SIGTERM):
        return False
    if _wait_gone(pid, started, grace):
        _signal(pid, group, signal.SIGKILL)  # stragglers of the group, if any
        return True
    _signal(pid, group, signal.SIGKILL)
    if not _wait_gone(pid, started, kill_wait):
        raise KernelError(f"pid {pid} did not exit {kill_wait:.0f} s after SIGKILL (stuck in the kernel?)",
                          hint="check `ps -o pid,stat,wchan -p PID`; `netlab clean --lab LAB` retries")
    return True


def _own_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(pid: int, group: bool, signum: int) -> bool:
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, started: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not is_same_process(pid, started):
            return True
        time.sleep(0.005)
    return False


def find_holders(lab: str | None = None) -> list[tuple[int, str, str]]:
    """(pid, lab, member) of every running netlab holder, found by its argv[0] mark."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if argv0.startswith(MARK + ":"):
            _, holder_lab, member = argv0.split(":", 2)
            if lab is None or holder_lab == lab:
                found.append((int(entry), holder_lab, member))
    return found
