"""Packet captures around one probe: tcpdump on lo and eth0 of each pod involved, stopped by PID afterwards."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from netlab.errors import EnvironmentProblem, KernelError

READY_TIMEOUT = 5.0
SETTLE = 0.1  # let the last packets (FIN/RST, the proxy's close) reach tcpdump before it is stopped
CAPTURE_IFACES = ("lo", "eth0")


@dataclass
class Capture:
    member: str
    iface: str
    path: str
    proc: subprocess.Popen[bytes]


def _wait_listening(proc: subprocess.Popen[bytes], what: str) -> None:
    """tcpdump prints `listening on IFACE` on stderr once its capture is open: only then start the probe."""
    assert proc.stderr is not None
    deadline = time.monotonic() + READY_TIMEOUT
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        if b"listening on" in seen:
            return
    stop(proc)
    message = seen.decode(errors="replace").strip()
    if proc.returncode == 127:  # nsenter could not exec tcpdump
        raise EnvironmentProblem(f"tcpdump is missing: {message}", hint="apt-get install tcpdump")
    raise KernelError(f"tcpdump did not start for {what}: {message}")


def start(member: str, netns_path: str, iface: str, path: str) -> Capture:
    # --immediate-mode: packets reach the file as they come (buffered ones would be lost at the SIGTERM);
    # -Z root: Debian's tcpdump otherwise drops to user tcpdump, which may not write into DIR.
    argv = ["nsenter", f"--net={netns_path}", "tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root",
            "-i", iface, "-w", path, "tcp"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError as err:
        raise EnvironmentProblem("nsenter is missing", hint="apt-get install util-linux") from err
    _wait_listening(proc, f"{member} {iface}")
    return Capture(member, iface, path, proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to our own tcpdump (nsenter execs it: same PID), SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@contextlib.contextmanager
def captures(targets: list[tuple[str, str]], directory: str, prefix: str) -> Iterator[list[str]]:
    """Capture on lo and eth0 of each (member, netns path) while the body runs; yields the pcap paths."""
    os.makedirs(directory, exist_ok=True)
    running: list[Capture] = []
    paths: list[str] = []
    try:
        for member, netns in targets:
            for iface in CAPTURE_IFACES:
                path = os.path.abspath(os.path.join(directory, f"{prefix}-{member}-{iface}.pcap"))
                running.append(start(member, netns, iface, path))
                paths.append(path)
        yield paths
        time.sleep(SETTLE)
    finally:
        for cap in running:
            stop(cap.proc)
