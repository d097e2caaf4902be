"""Per-namespace /etc/hosts for `netlab exec` (`ip netns exec` bind-mounts /etc/netns/NAME/hosts on /etc/hosts)."""

from __future__ import annotations

import contextlib
import os
import shutil

from netlab.plan import HOSTS_ROOT, NETNS_PREFIX


def write_hosts(netns: str, content: str) -> bool:
    """Write the hosts file; returns True when this created /etc/netns itself (so that only then it is removed)."""
    created_root = not os.path.isdir(HOSTS_ROOT)
    directory = os.path.join(HOSTS_ROOT, netns)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "hosts"), "w") as f:
        f.write(content)
    return created_root


def remove_hosts(netns: str) -> None:
    # Only directories named after a netlab namespace are ever removed.
    if netns.startswith(NETNS_PREFIX + "."):
        shutil.rmtree(os.path.join(HOSTS_ROOT, netns), ignore_errors=True)


def remove_hosts_root() -> None:
    """Remove /etc/netns, which netlab created, once it is empty (another lab may still use it)."""
    with contextlib.suppress(OSError):
        os.rmdir(HOSTS_ROOT)
