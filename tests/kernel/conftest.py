"""Every test in tests/kernel builds real kernel objects and needs root.

`scratch_netns` gives a throwaway network namespace (lo up) for testing one kernel-edge piece in isolation;
it is always deleted, even when the test fails. Whole labs come from the lab engine instead.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/kernel/" in str(item.path):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    """Yield the path of a fresh netns (`/run/netns/netlabtest-XXXX`); `ip netns exec NAME` works on it."""
    name = f"netlabtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
