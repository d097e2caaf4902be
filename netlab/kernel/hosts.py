"""Per-namespace /etc/hosts for `netlab exec` (which runs `ip netns exec`, bind-mounting /etc/netns/NAME/hosts)."""

from __future__ import annotations

import contextlib
import os
import shutil

from netlab.plan import HOSTS_ROOT, NETNS_PREFIX


def write_hosts(netns: str, content: str) -> str:
    directory = os.path.join(HOSTS_ROOT, netns)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "hosts"), "w") as f:
        f.write(content)
    return directory


def remove_hosts(netns: str) -> None:
    # Only directories named after a netlab namespace are ever removed.
    if netns.startswith(NETNS_PREFIX + "."):
        shutil.rmtree(os.path.join(HOSTS_ROOT, netns), ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(HOSTS_ROOT)  # only if empty: we may have created it
