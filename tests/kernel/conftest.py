"""Every test in tests/kernel builds real kernel objects and needs root."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/kernel/" in str(item.path):
            item.add_marker(pytest.mark.kernel)
