"""The workshop's rough edges (issue 20), each with the behaviour a student should get: exec's command line and
exit codes, status of an unknown or orphaned lab, rules --watch through a pipe, logs --explain, a safe clean,
trace's messages, run --quiet."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import leftovers, netlab

from netlab.engine import teardown

NETLAB = [sys.executable, "-m", "netlab"]


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    name = f"polish-{secrets.token_hex(2)}"
    netlab("up", "lo-vs-eth0", "--name", name, "--quiet", check=True)
    try:
        yield name
    finally:
        teardown.down(name)
    assert leftovers(name) == []


def test_exec_takes_the_command_after_pod_and_exits_like_a_shell(lab: str) -> None:
    listening = netlab("exec", "--lab", lab, "eth0-1-10", "ss", "-tlnp")  # no --: -l is ss's, not --lab
    assert listening.returncode == 0 and ":15006" in listening.stdout
    missing = netlab("exec", "--lab", lab, "client", "--", "nosuchcmd")
    assert missing.returncode == 127 and "nosuchcmd: command not found" in missing.stderr
    assert netlab("exec", "--lab", lab, "client", "--", "sh", "-c", "exit 3").returncode == 3
    assert netlab("exec", "client", "--lab", lab, "--", "true").returncode == 0  # options before `--` still count
    misplaced = netlab("exec", "--lab", lab, "client", "--timeout", "3")
    assert misplaced.returncode == 2 and "the command goes after `--`" in misplaced.stderr
    assert netlab("exec", lab, "client", "--", "true").returncode == 0  # netlab exec LAB POD -- CMD


def test_status_trace_and_logs(lab: str) -> None:
    unknown = netlab("status", "nosuchlab")
    assert unknown.returncode == 2 and "no lab named 'nosuchlab' is up" in unknown.stderr
    shown = netlab("status", lab)
    assert "app eth0-1-10: pong app, listens on 10.244.0.15:8080 (eth0, the pod IP)" in shown.stdout
    nosuch = netlab("trace", lab, "--from", "client", "--to", "nosuch:8080")
    assert nosuch.returncode == 2 and "no service, pod or host 'nosuch'" in nosuch.stderr
    traced = netlab("trace", lab, "--from", "client", "--to", "eth0.rev-1-10:8080", "--no-evidence")
    assert traced.returncode == 0 and traced.stdout.startswith("sent: 'ping'")
    explained = netlab("logs", "--lab", lab, "eth0-1-10", "--explain")  # the trace's line is there at once
    assert "upstream_local_address" in explained.stdout and "127.0.0.6:" in explained.stdout
    no_app = netlab("logs", "--lab", lab, "--app", "client")
    assert no_app.returncode == 2 and "runs no app" in no_app.stderr


def test_every_verb_takes_lab_as_an_option(lab: str) -> None:
    assert netlab("status", "--lab", lab).returncode == 0
    assert netlab("checks", "--lab", lab, "-q").returncode == 0
    assert netlab("graph", "--lab", lab).returncode == 0
    assert netlab("trace", "--lab", lab, "--from", "client", "--to", "lo.rev-1-9:8080").returncode == 0
    both = netlab("status", lab, "--lab", "other")
    assert both.returncode == 2 and "two labs named" in both.stderr


def test_rules_watch_prints_frames_into_a_pipe(lab: str) -> None:
    proc = subprocess.Popen([*NETLAB, "rules", "show", "--lab", lab, "eth0-1-10", "--watch", "--interval", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read until the second frame (however long the command takes to start); the timer ends a watch that stalls.
    watchdog = threading.Timer(30, proc.terminate)
    watchdog.start()
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if sum(x.startswith("# eth0-1-10") for x in lines) >= 2:
            break
    watchdog.cancel()
    proc.terminate()
    proc.communicate(timeout=10)
    frames = [line for line in lines if line.startswith("# eth0-1-10")]
    assert len(frames) >= 2 and "Chain ISTIO_INBOUND" in "".join(lines)


def test_bare_clean_only_lists(lab: str) -> None:
    listed = netlab("clean")
    assert listed.returncode == 2 and lab in listed.stderr and "--all" in listed.stderr
    assert leftovers(lab) != []  # nothing was removed


def test_a_killed_run_is_orphaned_and_down_says_what_it_removed(tmp_path: Path) -> None:
    name = f"orphan-{secrets.token_hex(2)}"
    proc = subprocess.Popen([*NETLAB, "run", "fault-delay", "--name", name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = Path(f"/run/netlab/{name}/state.json")
    try:
        for _ in range(300):
            if state.exists() and json.loads(state.read_text()).get("info", {}).get("owner"):
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        shown = netlab("status", name)
        assert f"orphaned: its `netlab run` (pid {proc.pid}) is gone; `netlab clean --lab {name}`" in \
            " ".join(shown.stdout.split())
    finally:
        removed = netlab("down", name)
    assert f"removed lab {name}: 1 node, " in removed.stdout
    again = netlab("down", name)
    assert again.returncode == 0 and again.stdout == again.stderr == ""  # already gone: quiet
    assert leftovers(name) == [] and not os.path.exists(state)


def test_run_quiet_prints_the_summary_line() -> None:
    name = f"quiet-{secrets.token_hex(2)}"
    result = netlab("run", "lo-vs-eth0", "--name", name, "--quiet")
    assert result.returncode == 0
    assert re.fullmatch(r"lo-vs-eth0: 12/12 checks passed \(\d+\.\d s\)", result.stdout.strip()), result.stdout
