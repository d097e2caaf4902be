"""Process lifecycle: bind as root, drop privileges, fork one worker per core, serve, signal readiness, reload the
configuration snapshot on SIGHUP (the parent passes the signal on to its workers), stop."""

from __future__ import annotations

import asyncio
import contextlib

# Imported now, as root: after the drop to 1337 the interpreter's stdlib may be unreadable (it can live under
# /root), and uvloop imports concurrent.futures when imported and the idna codec at its first connect. Importing
# it lazily after the drop silently fell back to the stdlib loop (ImportError), and warming only uvloop made every
# upstream connect fail with "unknown encoding: idna".
import encodings.idna  # noqa: F401
import gc
import os
import signal
import sys
import time

from netlab.mesh.types import loads
from netlab.mesh.workload import spiffe_id
from netlab.proxy.accesslog import AccessLog
from netlab.proxy.config import ProxyConfig
from netlab.proxy.privileges import drop
from netlab.proxy.stats import Stats
from netlab.proxy.tls import Identity
from netlab.proxy.worker import Listeners, Worker, bind_listeners

try:
    import uvloop
except ImportError:
    uvloop = None

READY_LINE = "ready"


def new_loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop() if uvloop is None else uvloop.new_event_loop()


def run(cfg: ProxyConfig) -> int:
    """Blocking entry point; returns the exit code."""
    # What needs root happens first: the access log and ready file under the lab's root-owned state directory,
    # and in TPROXY mode the IP_TRANSPARENT listeners. REDIRECT listeners are bound after the switch, so that
    # `ss -tlnpe` shows them owned by 1337, as Envoy's are (ports above 1024 need no privilege).
    log = AccessLog.open(cfg.access_log, cfg.access_log_json) if cfg.access_log else None
    ready_fd = None
    if cfg.ready_file:
        ready_fd = os.open(cfg.ready_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def bind_all() -> list[Listeners]:
        return [bind_listeners(cfg, admin=(i == 0), reuseport=cfg.workers > 1) for i in range(cfg.workers)]

    sets = bind_all() if cfg.mode == "TPROXY" or not cfg.drop_privileges else None
    if cfg.drop_privileges:
        drop(cfg.uid, cfg.gid)
    if sets is None:
        sets = bind_all()
    stats = Stats(cfg.workers)
    node = cfg.snapshot.node
    identity = Identity(cfg.certs, spiffe_id(node.namespace, node.service_account)) if cfg.certs else None

    # Everything imported and built so far is shared with the workers: frozen, the cycle collector leaves it
    # alone, so its passes do not write to (and copy) the shared pages in every worker.
    gc.collect()
    gc.freeze()
    parent = os.getpid()
    children: list[int] = []
    for i in range(1, cfg.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised by the kernel tests
            code = 1
            try:
                for j, other in enumerate(sets):
                    if j != i:
                        other.close()
                if ready_fd is not None:
                    os.close(ready_fd)
                stats.use_row(i)
                code = _serve(cfg, sets[i], stats, log, parent_pid=parent, identity=identity)
            finally:
                os._exit(code)
        children.append(pid)
    for other in sets[1:]:
        other.close()

    def announce() -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"{os.getpid()}\n".encode())
            os.close(ready_fd)
        sys.stdout.write(READY_LINE + "\n")
        sys.stdout.flush()

    try:
        return _serve(cfg, sets[0], stats, log, on_ready=announce, children=children, identity=identity)
    finally:
        _stop_children(children)


def _serve(cfg: ProxyConfig, listeners: Listeners, stats: Stats, log: AccessLog | None,
           parent_pid: int | None = None, on_ready: object = None, children: list[int] | None = None,
           identity: Identity | None = None) -> int:
    loop = new_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(cfg, stats, log, parent_pid=parent_pid, identity=identity)

    def reload() -> None:
        for pid in children or ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        reload_from(cfg.config_path, worker)

    async def main() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopped.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        await worker.start(listeners)
        if callable(on_ready):
            on_ready()
        await worker.stopped.wait()
        await worker.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


def reload_from(path: str | None, worker: Worker) -> None:
    """Read the snapshot again and route new connections by it; a bad file leaves the running one in place."""
    if path is None:
        worker.reload_error = "started without --config: nothing to reload"
        return
    try:
        with open(path, "rb") as f:
            snapshot = loads(f.read())
    except (OSError, ValueError, KeyError, TypeError) as err:
        worker.reload_error = f"cannot load {path}: {err!r}"
    else:
        worker.reload(snapshot)
    if worker.reload_error:
        print(f"netlab-proxy: reload: {worker.reload_error}; still routing by version "
              f"{worker.dispatch.snapshot.version}", file=sys.stderr, flush=True)


def _stop_children(children: list[int], grace: float = 3.0) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = set(children)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                pending.discard(pid)
        time.sleep(0.02)
    for pid in pending:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
