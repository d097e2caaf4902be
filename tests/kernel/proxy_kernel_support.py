"""Kernel-test helpers for the proxy: a pod netns with istio-init's real rules, a client netns on a veth, the
proxy started with nsenter as root, and sockets created inside a namespace by a short-lived thread.

The proxy runs on the interpreter that runs the tests (sys.executable: the venv provisioning made, or any other
with netlab installed), and the rules are what netlab renders for Istio 1.10's injector flags (the conformance
tests hold that rendering to upstream's), so nothing here depends on a path outside the checkout."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from netlab.istio_init.flags import parse_flags
from netlab.istio_init.render import render
from netlab.probe.observed import parse_log_line

INJECTOR_FLAGS = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
POD_IP, CLIENT_IP, EXTERNAL_IP = "10.44.0.2", "10.44.0.1", "198.51.100.10"  # EXTERNAL_IP lives in the client ns

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def in_netns(ns_path: str, fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread that entered the netns; sockets it creates stay in that netns."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    return box["v"]  # type: ignore[return-value]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def ns_exec(name: str, *cmd: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], input=stdin, check=True, capture_output=True)


@dataclass
class PodLab:
    pod: str  # netns name
    pod_path: str
    client: str
    client_path: str

    def install_istio_rules(self, mode: str = "REDIRECT") -> None:
        """istio-init's rules of Istio 1.10 for the injector's flags, in REDIRECT or TPROXY mode."""
        cfg = parse_flags(shlex.split(INJECTOR_FLAGS.replace("REDIRECT", mode)), "1.10")
        ns_exec(self.pod, "iptables-restore", "--noflush", stdin=render(cfg, "1.10")[0].encode())


@contextlib.contextmanager
def pod_lab(pod_path: str) -> Iterator[PodLab]:
    """Pod netns (given, eth0 10.44.0.2/24) + a client netns (eth0 10.44.0.1/24, also 'external' 198.51.100.10)."""
    pod = os.path.basename(pod_path)
    client = f"netlabtest-{secrets.token_hex(3)}"
    ip("netns", "add", client)
    try:
        ip("-n", client, "link", "set", "lo", "up")
        ip("-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client)
        ip("-n", pod, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
        ip("-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        ip("-n", client, "addr", "add", f"{EXTERNAL_IP}/32", "dev", "eth0")
        ip("-n", pod, "link", "set", "eth0", "up")
        ip("-n", client, "link", "set", "eth0", "up")
        ip("-n", pod, "route", "add", "198.51.100.0/24", "via", CLIENT_IP, "dev", "eth0")
        yield PodLab(pod, pod_path, client, f"/run/netns/{client}")
    finally:
        subprocess.run(["ip", "netns", "delete", client], check=False)


class ProxyProcess:
    """`nsenter --net=NS python -m netlab.proxy ARGS` as root; stopped by PID on exit."""

    def __init__(self, ns_path: str, *args: str, log_dir: Path) -> None:
        self.log_path = log_dir / "proxy-access.log"
        self.ready_path = log_dir / "proxy.ready"
        cmd = ["nsenter", f"--net={ns_path}", sys.executable, "-m", "netlab.proxy", *args,
               "--access-log", str(self.log_path), "--ready-file", str(self.ready_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid  # nsenter execs python in place: same PID

    def wait_ready(self, timeout: float = 15.0) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            self.stop()
            raise AssertionError(f"proxy not ready: {line!r}; stderr: {self.stderr}")
        assert self.ready_path.read_text().strip() == str(self.pid)

    def status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return dict(line.split(":\t", 1) for line in lines if ":\t" in line)

    def log_lines(self, want: int = 1, timeout: float = 5.0) -> list[str]:
        """Access-log lines once at least `want` are there (the proxy flushes every second)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
            if len(lines) >= want or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def log_entries(self, want: int = 1) -> list[dict[str, str]]:
        """The access-log lines parsed into fields (named as Istio's JSON encoding names them)."""
        lines = self.log_lines(want)
        entries = [parse_log_line("pod", line) for line in lines]
        assert all(entries), lines
        return [e.fields for e in entries if e]

    stderr = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, 15)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, 9)
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.stderr = self.proc.stderr.read().decode()
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def proxy(ns_path: str, *args: str, log_dir: Path) -> Iterator[ProxyProcess]:
    p = ProxyProcess(ns_path, *args, log_dir=log_dir)
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()


def unit_helpers() -> None:
    """The loopback harness's App/exchange helpers are reused here (threaded apps, blocking clients)."""
    unit = str(Path(__file__).resolve().parents[1] / "unit")
    if unit not in sys.path:
        sys.path.insert(0, unit)
