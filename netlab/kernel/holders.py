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

from netlab.errors import EnvironmentProblem
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


def stop_pid(pid: int, started: int, grace: float = 1.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, only if PID still names the process we started."""
    if not is_same_process(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pid)
        if not is_same_process(pid, started):
            return True
        time.sleep(0.005)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    while is_same_process(pid, started):
        reap(pid)
        time.sleep(0.005)
    return True



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
