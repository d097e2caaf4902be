"""`netlab run --json` of every shipped scenario, as a user runs it: exit code, JSON, every check, no leftovers.

Labs get a unique name (--name) so these runs never collide with a lab someone else has up, and the leak checks
look only for objects carrying that name.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from labkit import leftovers

from netlab.model.loader import SCENARIO_DIR

NETLAB = [sys.executable, "-m", "netlab"]
SHIPPED = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def lab_name(scenario: str) -> str:
    return f"{scenario[:24].rstrip('-')}-{secrets.token_hex(3)}"


def netlab(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETLAB, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def lab() -> object:
    names: list[str] = []
    yield names
    for name in names:  # only when a test failed half-way: normally `run` already removed it
        subprocess.run([*NETLAB, "down", name], capture_output=True, check=False)


@pytest.mark.parametrize("scenario", SHIPPED)
def test_shipped_scenario_passes(scenario: str, lab: list[str], tmp_path: Path) -> None:
    name = lab_name(scenario)
    lab.append(name)
    junit = tmp_path / "junit.xml"
    proc = netlab("run", scenario, "--json", "--name", name, "--junit", str(junit))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    doc = json.loads(proc.stdout)
    assert doc["lab"] == name and doc["scenario"]["name"] == scenario
    failed = [c for c in doc["checks"] if c["verdict"] != "PASS"]
    assert failed == [], json.dumps(failed, indent=1)
    assert doc["summary"]["total"] == len(doc["checks"]) > 0 and doc["summary"]["failed"] == 0
    assert all(c["explanation"] for c in doc["checks"])
    assert junit.read_text().count("<testcase ") == len(doc["checks"])
    assert leftovers(name) == []


def test_a_failing_check_exits_1_and_says_why(lab: list[str], tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.yaml"
    scenario.write_text("""name: wrong
pods:
  client: {}
  lo-1-10: {sidecar: {istio: "1.10"}, app: {kind: pong, listen: "127.0.0.1:8080"}}
services:
  lo: {selector: lo-1-10, port: 8080}
checks:
  - {from: client, to: "lo:8080", expect: {reply: pong}}
  - {pod: lo-1-10, expect: {app_peer: 127.0.0.6}}
""")
    name = lab_name("wrong")
    lab.append(name)
    proc = netlab("run", str(scenario), "--json", "--name", name)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    probe, peer = doc["checks"]
    assert probe["verdict"] == "FAIL" and probe["observed"] == "reset"
    assert "the app listens on 127.0.0.1:8080 (loopback) only" in probe["explanation"]
    assert peer["verdict"] == "FAIL" and "accepted no connection" in peer["explanation"]
    assert doc["summary"]["result"] == "FAIL"
    assert leftovers(name) == []


def test_invalid_scenario_exits_2_and_builds_nothing(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\npods: {client: {}}\nchecks:\n  - {from: nobody, to: 'client:80', expect: x}\n")
    proc = netlab("run", str(scenario), "--name", "bad-scenario-kt")
    assert proc.returncode == 2
    assert "checks.0.expect" in proc.stderr
    assert leftovers("bad-scenario-kt") == []


def test_keep_then_checks_reruns_against_the_live_lab(lab: list[str]) -> None:
    name = lab_name("lo-vs-eth0")
    lab.append(name)
    proc = netlab("run", "lo-vs-eth0", "--keep", "--quiet", "--name", name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.exists(f"/run/netlab/{name}/state.json")
    again = netlab("checks", name, "--json")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads(again.stdout)["summary"]["failed"] == 0
    down = netlab("down", name)
    assert down.returncode == 0
    assert leftovers(name) == []
