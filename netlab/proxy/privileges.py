"""Become the proxy user after the listeners are bound, as istio-proxy runs (FACTS.md section c).

REDIRECT: uid 1337 / gid 1337 (the ISTIO_OUTPUT `--uid-owner 1337` rules let our upstream traffic out).
TPROXY: uid 0 / gid 1337 (the injector's runAsUser 0, runAsGroup 1337; uid 0 keeps CAP_NET_ADMIN for
IP_TRANSPARENT and SO_MARK, the `--gid-owner 1337` rules match). The interpreter is never exec'ed as the proxy
user: it may live where that user cannot read.
"""

from __future__ import annotations

import os

from netlab.errors import EnvironmentProblem


def drop(uid: int, gid: int) -> None:
    """setgroups, setgid, then setuid: the order that leaves no way back (uid last, it takes the right to change)."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        if uid != os.geteuid() or uid != os.getuid():
            os.setresuid(uid, uid, uid)
    except PermissionError as e:
        raise EnvironmentProblem(
            f"cannot switch to uid {uid} / gid {gid}: {e}", hint="start the proxy as root inside the pod netns"
        ) from e
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups() not in ([], [gid]):
        raise EnvironmentProblem(f"privilege drop to {uid}/{gid} did not take effect")
