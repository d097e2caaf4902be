"""Round trip (issue 18): `netlab export k8s S` and then `netlab run` of the exported directory give the same
verdicts as `netlab run S`, for every shipped scenario that has a Kubernetes form."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from labkit import leftovers

from netlab.export.k8s import export_k8s
from netlab.model.loader import SCENARIO_DIR, load_scenario

NETLAB = [sys.executable, "-m", "netlab"]
EXPORTABLE = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml") if not export_k8s(load_scenario(p.stem)[0]).problems)


def verdicts(*args: str) -> list[tuple[str, str]]:
    name = f"rt-{secrets.token_hex(3)}"
    try:
        proc = subprocess.run([*NETLAB, "run", *args, "--json", "--name", name], capture_output=True, text=True,
                              timeout=300, check=False)
    finally:
        assert leftovers(name) == []
    assert proc.stdout, proc.stderr[-2000:]
    return [(c["title"], c["verdict"]) for c in json.loads(proc.stdout)["checks"]]


def test_most_shipped_scenarios_can_be_exported() -> None:
    assert len(EXPORTABLE) >= 12, EXPORTABLE


@pytest.mark.parametrize("scenario", EXPORTABLE)
def test_the_exported_lab_gives_the_same_verdicts(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / scenario
    subprocess.run([*NETLAB, "export", "k8s", scenario, "-o", str(out)], capture_output=True, check=True)
    original = verdicts(scenario)
    again = verdicts(str(out))
    assert [v for _t, v in again] == [v for _t, v in original], (original, again)
    assert all(v == "PASS" for _t, v in again)
