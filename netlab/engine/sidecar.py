"""A pod's sidecar: istio-init's rules (plus the scenario's rule edits), then the proxy as UID/GID 1337; for a
gateway (`mode: router`) the proxy alone.

Both live inside the pod's namespace, so they need no undo of their own: the rules die with the namespace and the
proxy is a recorded process that teardown stops by PID.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from netlab.engine.members import member_netns_path, start_in_member, wait_until
from netlab.engine.mesh import certs_dir
from netlab.engine.state import LabState
from netlab.istio_init.flags import parse_flags
from netlab.kernel.iptables import apply_istio_init, delete_rule, insert_rule
from netlab.model.schema import RuleEdit, Sidecar

PROXY_READY_TIMEOUT = 10.0


def install_sidecar(state: LabState, pod: str, sidecar: Sidecar, config: str,
                    iptables: str = "auto") -> Callable[[], None]:
    """Apply the rules and start the proxy on its snapshot `config`; returns a function that waits until the proxy
    is ready."""
    netns = member_netns_path(state, pod)
    backend = None  # a router (gateway) captures nothing: no istio-init
    if sidecar.mode == "sidecar":
        cfg = parse_flags(sidecar.injector_flags(), sidecar.istio, env=sidecar.env)
        backend = apply_istio_init(netns, cfg, sidecar.istio, None if iptables == "auto" else iptables)
        for edit in sidecar.rule_edits:
            apply_rule_edit(netns, edit, backend)
    access_log = state.member_file("logs", pod, "access.log")
    state.members[pod]["sidecar"] = {"istio": sidecar.istio, "mode": sidecar.interception, "backend": backend,
                                     "type": sidecar.mode,
                                     "access_log": access_log, "config": config,
                                     "rule_edits": [e.model_dump(exclude_none=True) for e in sidecar.rule_edits]}
    return start_proxy(state, pod, ["--config", config, "--certs", certs_dir(state, pod)], access_log)


def start_proxy(state: LabState, pod: str, proxy_args: list[str], access_log: str | None = None,
                workers: int = 1) -> Callable[[], None]:
    """`python -m netlab.proxy PROXY_ARGS` in the pod, as root (it drops to 1337 itself after binding); returns a
    function that waits until it is ready."""
    ready = state.member_file("run", pod, "proxy.ready")
    os.makedirs(os.path.dirname(ready), exist_ok=True)
    argv = [sys.executable, "-m", "netlab.proxy", *proxy_args, "--ready-file", ready, "--workers", str(workers)]
    if access_log is not None:
        argv += ["--access-log", access_log]
    proc = start_in_member(state, pod, "proxy", argv)
    return lambda: wait_until(lambda: os.path.exists(ready) and os.path.getsize(ready) > 0, proc,
                              PROXY_READY_TIMEOUT, f"the sidecar proxy in {pod} did not become ready")


def apply_rule_edit(netns: str, edit: RuleEdit, backend: str) -> None:
    target = edit.delete or edit.insert or ""
    table_chain, position = target.split("#")
    table, chain = table_chain.split("/")
    if edit.delete:
        delete_rule(netns, table, chain, int(position), backend)  # type: ignore[arg-type]
    else:
        insert_rule(netns, table, chain, int(position), edit.rule or "", backend)  # type: ignore[arg-type]
