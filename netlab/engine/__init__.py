"""The lab engine: build a lab on the kernel (build), the processes in its members (members, sidecar), its
recorded state (state), and teardown. Everything here has side effects; what it builds comes from netlab.plan."""

from __future__ import annotations

import os

from netlab.errors import EnvironmentProblem


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "netlab must run as root: it creates network namespaces, veths and iptables rules",
            hint="run it with sudo, e.g. `sudo netlab run lo-vs-eth0`",
        )
