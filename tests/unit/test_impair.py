"""Link impairments (pure): the tc command lines and the scenario's `links:` validation."""

from __future__ import annotations

import pytest

from netlab.kernel.impair import Impairment, tc_argv
from netlab.model.loader import parse_scenario
from netlab.model.problems import ScenarioError


def test_tc_command_lines() -> None:
    assert tc_argv(Impairment(delay="50ms", jitter="5ms", loss="1%")) == [
        "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "50ms", "5ms", "loss", "1%"]
    assert tc_argv(Impairment(delay="10ms", rate="10mbit"))[-2:] == ["rate", "10mbit"]
    assert tc_argv(Impairment(rate="10mbit")) == ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
                                                  "10mbit", "burst", "32kbit", "latency", "400ms"]
    assert tc_argv(Impairment()) == ["tc", "qdisc", "del", "dev", "eth0", "root"]
    assert Impairment(delay="50ms", jitter="5ms", loss="1%").describe() == "delay 50ms ± 5ms, loss 1%"


def test_links_in_a_scenario() -> None:
    scenario = parse_scenario({"name": "t", "pods": {"a": {}}, "links": {"a": {"delay": "50ms", "loss": "1%"}}})
    assert scenario.links["a"].delay == "50ms"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"name": "t", "pods": {"a": {}}, "links": {"a": {"jitter": "5ms"}, "b": {"rate": "1mbit"},
                                                                  "a2": {"delay": "fast"}}})
    text = str(caught.value)
    assert "links.a: jitter varies a delay: give delay too" in text
    assert "links.a2.delay: 'fast' is not a delay (e.g. 50ms, 200us, 1s)" in text
    assert "links.b: no pod or external host named 'b'" in text
