"""Shared test setup.

Kernel tests need root and are skipped, with the reason, without it. When the suite ran as root, it must leave the
machine as it found it: any netlab namespace holder, netns name, hosts file or state directory still present at the
end fails the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "kernel"))  # labkit, shared by kernel tests and this check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kernel test: needs root (run the suite with sudo)")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.geteuid() != 0 or os.environ.get("NETLAB_SKIP_LEAK_CHECK"):
        return
    from labkit import leftovers

    found = leftovers()
    if found:
        print("\nnetlab leftovers after the test suite (each is a leak):\n  " + "\n  ".join(found), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
