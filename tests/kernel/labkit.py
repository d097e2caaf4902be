"""Helpers for lab-level kernel tests: run the CLI, look for netlab leftovers, talk from inside a pod."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from netlab.kernel.holders import find_holders
from netlab.kernel.nsutil import run_in_netns
from netlab.plan import HOSTS_ROOT, NETNS_DIR, STATE_ROOT


def netlab(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def write_scenario(directory: Path, text: str) -> str:
    path = directory / "scenario.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def leftovers(lab: str | None = None) -> list[str]:
    """Everything netlab marks that still exists (for one lab, or for all)."""
    prefix = f"netlab.{lab}." if lab else "netlab."
    found = [f"holder pid {pid} ({lab_}:{member})" for pid, lab_, member in find_holders(lab)]
    for directory in (NETNS_DIR, HOSTS_ROOT):
        if os.path.isdir(directory):
            found += [f"{directory}/{n}" for n in os.listdir(directory) if n.startswith(prefix)]
    if os.path.isdir(STATE_ROOT):
        found += [f"{STATE_ROOT}/{n}" for n in os.listdir(STATE_ROOT) if lab is None or n == lab]
    return found


def talk(netns_path: str, host: str, port: int, payload: bytes = b"ping\n", timeout: float = 3.0) -> bytes:
    """Connect from inside a namespace (the socket is created there), send, read until EOF."""
    sock = run_in_netns(netns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def snapshot_root_namespace() -> dict[str, str]:
    """What the host's root namespace looks like, to prove a lab never touches it."""
    commands = {
        "links": ["ip", "-d", "link", "show"], "addresses": ["ip", "addr", "show"], "routes": ["ip", "route", "show",
                                                                                               "table", "all"],
        "rules": ["ip", "rule", "show"], "iptables": ["iptables-save"], "iptables-legacy": ["iptables-legacy-save"],
        "nft": ["nft", "list", "ruleset"],
    }
    snapshot = {}
    for name, argv in commands.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        except FileNotFoundError:
            out = "(not installed)"
        # Counters, comments and address lifetimes move on their own; the objects themselves must not.
        lines = (re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
                 if not line.startswith("#") and "valid_lft" not in line)
        snapshot[name] = "\n".join(lines)
    return snapshot
