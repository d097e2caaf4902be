"""Helpers for lab-level kernel tests: run the CLI, look for netlab leftovers, talk from inside a pod."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

from netlab.engine import build, teardown
from netlab.engine.state import LabState
from netlab.kernel.holders import find_holders
from netlab.model import load_scenario
from netlab.plan import HOSTS_ROOT, NETNS_DIR, STATE_ROOT
from netlab.probe.connect import probe


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


@contextlib.contextmanager
def lab_up(scenario_file: str) -> Iterator[LabState]:
    """The scenario's lab, up; taken down afterwards, and nothing of it may be left."""
    model, path = load_scenario(scenario_file)
    state = build.up(model, path)
    try:
        yield state
    finally:
        teardown.down(state.lab)
    assert leftovers(state.lab) == []


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
    """Connect from inside a namespace with netlab's own probe, send, read until EOF; anything else fails."""
    result = probe(netns_path, (host, port), payload, timeout, own_ip="")
    assert result.outcome in ("reply", "closed"), f"{host}:{port}: {result.outcome} {result.error}"
    return result.data


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
