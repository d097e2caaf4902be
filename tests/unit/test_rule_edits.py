"""rule_edits checked against the chains istio-iptables renders for the sidecar's version and flags, without the
kernel: a missing chain, a position past the end, in the order the edits apply."""

from __future__ import annotations

import pytest

from netlab.model.loader import parse_scenario
from netlab.model.problems import ScenarioError


@pytest.mark.parametrize(("edits", "problem"), [
    ([{"delete": "nat/ISTIO_OUTPUT#99"}], r"rule_edits.0: delete nat/ISTIO_OUTPUT#99: nat/ISTIO_OUTPUT has 9 rule"),
    ([{"delete": "nat/NO_SUCH_CHAIN#1"}], "rule_edits.0: nat has no chain NO_SUCH_CHAIN"),
    ([{"delete": "nat/ISTIO_OUTPUT#9"}, {"delete": "nat/ISTIO_OUTPUT#9"}], "rule_edits.1: .* has 8 rule"),
    ([{"insert": "nat/ISTIO_OUTPUT#11", "rule": "-j RETURN"}], "insert at 1..10"),
])
def test_rule_edits_are_checked_against_the_rendered_chains(edits: list[dict[str, str]], problem: str) -> None:
    with pytest.raises(ScenarioError, match=problem):
        parse_scenario({"name": "x", "pods": {"web": {"sidecar": {"istio": "1.10", "rule_edits": edits}}}})
    parse_scenario({"name": "x", "pods": {"web": {"sidecar": {"istio": "1.10", "rule_edits": [
        {"delete": "nat/ISTIO_OUTPUT#1"}, {"insert": "nat/ISTIO_OUTPUT#9", "rule": "-j RETURN"}]}}}})
