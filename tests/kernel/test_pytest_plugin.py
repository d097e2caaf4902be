"""The pytest plugin, loaded through its `pytest11` entry point in a separate pytest run, on the real kernel."""

from __future__ import annotations

import pytest
from labkit import leftovers

pytest_plugins = ["pytester"]

USER_TESTS = '''
def test_istio_1_9_hands_inbound_traffic_to_localhost(netlab_lab):
    lab = netlab_lab("lo-vs-eth0")
    assert lab.probe("client", "lo.rev-1-9:8080", send="ping").reply == "pong"
    assert lab.app_peer("lo-1-9") == "127.0.0.1"
    assert lab.probe("client", "lo.rev-1-10:8080").outcome == "reset"
    assert lab.probe("client", "eth0.rev-1-10:8080").reply == "pong"
    assert lab.app_peer("eth0-1-10") == "127.0.0.6"

def test_a_failing_assertion_still_tears_the_lab_down(netlab_lab):
    lab = netlab_lab("lo-vs-eth0", name="plugin-fail")
    assert lab.probe("client", "eth0.rev-1-9:8080").reply == "pong"  # 1.9 resets an app on eth0: fails
'''


def test_plugin_fixture_brings_labs_up_and_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*assert None == 'pong'*"])
    assert leftovers("lo-vs-eth0") == leftovers("plugin-fail") == []


def test_plugin_skips_with_a_reason_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlab import pytest_plugin

    monkeypatch.setattr(pytest_plugin.os, "geteuid", lambda: 1000)
    assert pytest_plugin._unsupported_reason.__wrapped__() == "netlab needs root (run the tests with sudo)"
