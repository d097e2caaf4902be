"""Small helpers for network namespaces and processes: setns in a thread, nsenter, sysctls, PID identity."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from netlab.errors import EnvironmentProblem

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def unblock_signals() -> None:
    """preexec_fn: clear the signal mask the child inherits.

    Children are spawned inside `signals.deferred()`, which blocks SIGINT/SIGTERM/SIGHUP; the mask survives
    exec, so without this a holder or app ignores SIGTERM and `stop_pid` waits its whole grace before SIGKILL.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def unshare_net() -> None:
    """preexec_fn: give the child a new network namespace (and a clear signal mask) before it execs."""
    unblock_signals()
    if _libc.unshare(CLONE_NEWNET) != 0:
        os._exit(127)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(netns_path: str, func: Callable[[], T]) -> T:
    """Run func in a short-lived thread that entered the namespace.

    setns() changes only the calling thread, so the rest of the process stays where it is. Sockets created by
    func keep the namespace they were created in after the thread ends.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(func())
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=body, name=f"netns:{netns_path}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def nsenter_run(
    netns_path: str,
    argv: Sequence[str],
    stdin: str | None = None,
    package: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion inside the network namespace at netns_path (`nsenter --net=PATH`, nothing else is
    entered); text output captured, the exit status left to the caller.

    A missing nsenter, or a missing argv[0] (nsenter's exec fails with status 127), is an EnvironmentProblem
    whose hint names the package to install. Unlike run_in_netns this starts a process: use it for tools.
    """
    try:
        proc = subprocess.run(["nsenter", f"--net={netns_path}", *argv], input=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError as err:
        raise EnvironmentProblem("nsenter is missing", hint="apt-get install util-linux") from err
    if proc.returncode == 127:
        tool = argv[0]
        raise EnvironmentProblem(f"{tool} is missing: {proc.stderr.strip()}",
                                 hint=f"apt-get install {package}" if package else f"install {tool}")
    return proc


def write_sysctls(netns_path: str, values: dict[str, str]) -> None:
    """Set net.* sysctls of one namespace (/proc/sys/net follows the opening thread's namespace)."""

    def write() -> None:
        for key, value in values.items():
            with open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
                f.write(value)

    run_in_netns(netns_path, write)


def start_time(pid: int) -> int | None:
    """The start time in clock ticks of a live process (None once it exited, zombies included).

    With the PID it identifies a process despite PID reuse. A zombie counts as gone: it has left its namespaces,
    and its reaper may be slow (this process, if it is the parent, or whatever init the machine has).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def is_same_process(pid: int, started: int) -> bool:
    return start_time(pid) == started


def netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def reap(pid: int) -> None:
    """Collect the exit status if pid is our child (a no-op for processes another process started)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
