"""Golden error messages for invalid scenarios: each names its path and says how to fix it.

Regenerate after a deliberate wording change with `NETLAB_UPDATE_GOLDEN=1 pytest tests/unit/test_scenario_errors.py`
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from netlab.model.loader import parse_scenario
from netlab.model.problems import ScenarioError

GOLDEN = Path(__file__).parent / "golden" / "scenario_errors"
BASE = """
name: t
pods:
  client: {}
  web: {sidecar: {istio: "1.10"}, app: {kind: pong, listen: "0.0.0.0:8080"}}
services:
  web-svc: {selector: web, port: 8080}
"""

CASES = {
    "unknown_key": BASE + """checks:
  - {from: client, to: "web-svc:8080", expect: reset, retries: 3}
  - {pod: web, expect: {app_peer: 127.0.0.6, app_peers: 127.0.0.6}}
  - {pod: web, expect: {conntrack: {reply_port: 15006}}}
""",
    "wrong_type": BASE + """checks:
  - {from: client, to: "web-svc:8080", expect: {reply: pong}, samples: many}
  - {from: client, to: "web-svc:8080", expect: bounced}
  - {pod: web, expect: {rules_hit: "nat/ISTIO_OUTPUT#1"}}
  - {pod: web, expect: {rules_not_hit: ["ISTIO_OUTPUT 1"]}}
  - {pod: web, expect: {}}
""",
    "unknown_pod_in_check": BASE + """checks:
  - {from: clinet, to: "web-svc:8080", expect: reset}
  - {from: client, to: "webb:8080", expect: reset}
  - {pod: wbe, expect: {app_peer: 127.0.0.6}}
""",
    "bad_address": BASE.replace('"0.0.0.0:8080"', '"localhost:8080"') + """external:
  api: {address: 192.0.2.10}
checks:
  - {pod: web, expect: {app_peer: 127.0.0.300}}
""",
    "bad_check_target": BASE + """checks:
  - {from: client, to: "web-svc", expect: reset}
  - {from: client, to: "10.0.0:80", expect: reset}
  - {from: client, to: "web-svc:70000", expect: reset}
""",
    "observation_without_probe": BASE + """checks:
  - {pod: web, expect: {rules_hit: ["nat/ISTIO_OUTPUT#1"], conntrack: {reply_sport: 15006}}}
  - {from: client, to: "web-svc:8080", expect: reset}
  - {pod: client, expect: {proxy_log: {flags: UF}, app_peer: 10.244.0.10}}
""",
}


def error_text(case: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(yaml.safe_load(CASES[case]), source=f"{case}.yaml")
    return f"{info.value}\nhint: {info.value.hint}\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_message_matches_golden(case: str) -> None:
    text = error_text(case)
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("NETLAB_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}: run with NETLAB_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text()


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(CASES)


def test_valid_base_has_no_error() -> None:
    parse_scenario(yaml.safe_load(BASE + "checks:\n  - {from: client, to: 'web-svc:8080', expect: reset}\n"))
