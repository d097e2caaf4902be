"""Every scenario shipped in scenarios/ validates, teaches (a description) and has checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.model import load_scenario
from netlab.model.loader import SCENARIO_DIR
from netlab.model.schema import ProbeCheck
from netlab.plan import make_plan

SHIPPED = sorted(SCENARIO_DIR.glob("*.yaml"))
ISSUE_5 = {"lo-vs-eth0", "inbound-127-0-0-6", "outbound-15001", "pod-to-pod", "excluded-ports",
           "passthrough-undeclared-port", "missing-127-0-0-6-rule", "tproxy", "no-sidecar-baseline"}


def test_the_nine_scenarios_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= ISSUE_5


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_validates(path: Path) -> None:
    scenario, _ = load_scenario(str(path))
    assert scenario.name == path.stem, "the lab name is the file name, so `netlab run NAME` finds it"
    assert len(scenario.description.split()) >= 30, "a shipped scenario explains what it demonstrates"
    assert any(isinstance(c, ProbeCheck) for c in scenario.checks)
    make_plan(scenario)  # addresses and names can be allocated
