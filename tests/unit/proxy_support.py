"""Loopback harness for the proxy unit tests: the real Worker in a background event loop, an injected
original-destination resolver, small threaded apps, blocking clients. No root, no iptables."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from netlab.mesh.build import standalone_snapshot
from netlab.probe.observed import parse_log_line
from netlab.proxy.accesslog import AccessLog
from netlab.proxy.config import ProxyConfig
from netlab.proxy.origdst import Addr
from netlab.proxy.stats import Stats
from netlab.proxy.worker import Worker, bind_listeners

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop

    LOOPS["uvloop"] = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    pass


def make_config(istio: str = "1.10", declared_ports: Iterable[int] = (), mode: str = "REDIRECT",
                inbound_passthrough: bool = True, **settings: object) -> ProxyConfig:
    """A proxy that knows no service (the standalone snapshot), with inbound clusters for declared_ports."""
    snapshot = standalone_snapshot(istio, mode, sorted(declared_ports), inbound_passthrough)
    return ProxyConfig(snapshot=snapshot, **settings)  # type: ignore[arg-type]


class ProxyUnderTest:
    """Worker on 127.0.0.1 ephemeral ports; `dst` (or `dst_by_client[client port]`) plays SO_ORIGINAL_DST."""

    def __init__(self, cfg: ProxyConfig, loop_name: str = "asyncio") -> None:
        self.cfg = replace(cfg, bind_address="127.0.0.1", inbound_port=0, outbound_port=0, health_port=0,
                           stats_port=0, admin_port=0, drop_privileges=False)
        self.dst: Addr = ("127.0.0.1", 9)
        self.dst_by_client: dict[int, Addr] = {}
        fd, self.log_path = tempfile.mkstemp(prefix="netlab-proxy-log-")
        os.close(fd)
        self.log = AccessLog.open(self.log_path, cfg.access_log_json)
        self.stats = Stats()
        self.listeners = bind_listeners(self.cfg, admin=True, reuseport=False)
        self.inbound = self.listeners.inbound.getsockname()
        self.outbound = self.listeners.outbound.getsockname()
        assert self.listeners.health is not None and self.listeners.stats is not None
        self.health = self.listeners.health.getsockname()
        self.stats_addr = self.listeners.stats.getsockname()
        self.loop = LOOPS[loop_name]()
        self.worker = Worker(self.cfg, self.stats, self.log, inbound_resolver=self.resolve,
                             outbound_resolver=self.resolve)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def resolve(self, sock: socket.socket) -> Addr:
        return self.dst_by_client.get(sock.getpeername()[1], self.dst)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.worker.start(self.listeners))
        self._started.set()
        self.loop.run_until_complete(self.worker.stopped.wait())
        self.loop.run_until_complete(self.worker.close())
        self.loop.close()

    def __enter__(self) -> ProxyUnderTest:
        self._thread.start()
        assert self._started.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.worker.stopped.set)
        self._thread.join(5)
        self.listeners.close()
        os.close(self.log.fd)
        os.unlink(self.log_path)

    def call(self, fn: Callable[[], object]) -> object:
        """Run fn in the proxy's loop thread and return its result (for reading state safely)."""
        return asyncio.run_coroutine_threadsafe(_wrap(fn), self.loop).result(5)

    def log_lines(self) -> list[str]:
        self.call(self.log.flush)
        with open(self.log_path) as f:
            return f.read().splitlines()

    def log_entries(self) -> list[dict[str, str]]:
        """The access log's lines, parsed into fields named as Istio's JSON encoding names them."""
        entries = [parse_log_line("proxy", line) for line in self.log_lines()]
        assert all(entries), self.log_lines()
        return [e.fields for e in entries if e]


async def _wrap(fn: Callable[[], object]) -> object:
    return fn()


class App:
    """Threaded TCP app: `pong` replies 'pong from PEER_IP' to the first read; `echo` echoes until EOF then closes;
    `count` reads to EOF, then replies 'got N'."""

    def __init__(self, host: str, port: int = 0, kind: str = "pong") -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.addr: Addr = self.sock.getsockname()
        self.kind = kind
        self.peers: list[Addr] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _handle(self, conn: socket.socket, peer: Addr) -> None:
        with conn:
            try:
                if self.kind == "pong":
                    conn.recv(65536)
                    conn.sendall(f"pong from {peer[0]}".encode())
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                elif self.kind == "count":  # replies only after the client's EOF: needs half-close
                    n = 0
                    while data := conn.recv(262144):
                        n += len(data)
                    conn.sendall(f"got {n}".encode())
                else:
                    while data := conn.recv(262144):
                        conn.sendall(data)
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2)


@contextlib.contextmanager
def app(host: str, port: int = 0, kind: str = "pong") -> Iterator[App]:
    a = App(host, port, kind)
    try:
        yield a
    finally:
        a.close()


@contextlib.contextmanager
def unanswered() -> Iterator[Addr]:
    """An address whose SYNs go unanswered: a listener with a full accept queue drops them, so a connect to it
    hangs until the connector's own timeout."""
    full = socket.socket()
    fillers: list[socket.socket] = []
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(full.getsockname())
            fillers.append(f)
        time.sleep(0.1)
        yield full.getsockname()
    finally:
        for f in fillers:
            f.close()
        full.close()


def exchange(addr: Addr, payload: bytes = b"ping", timeout: float = 5.0) -> tuple[str, bytes]:
    """Send, half-close, read to EOF. Returns ("reply", data), ("reset", data so far) or ("closed", b"")."""
    got = b""
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                got += chunk
    except (ConnectionResetError, BrokenPipeError):  # an early RST can even surface from connect() on loopback
        return "reset", got
    except OSError as e:
        if e.errno == errno.ENOTCONN:  # shutdown() after the RST arrived
            return "reset", got
        raise
    return ("reply" if got else "closed"), got


def http_get(addr: Addr, path: str) -> tuple[int, str]:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body
