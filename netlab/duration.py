"""Durations as Istio's YAML writes them (protobuf Duration): 3s, 0.5s, 100ms, 1m, 1h. Standard library only: the
model validates with it and the control plane converts with it."""

from __future__ import annotations

import re

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    found = DURATION.fullmatch(text)
    if not found:
        raise ValueError(f"'{text}' is not a duration (e.g. 3s, 500ms, 1m)")
    return float(found[1]) * _UNIT[found[2]]
