"""An HTTP app for the proxy's HTTP tests (the standard library's server, a real HTTP/1.1 implementation) and
snapshots with HTTP services. The app's answer depends on the path:

- /status/N: status N; /chunked: a chunked body; /close-early: promises 100 bytes, sends 10 and closes;
  /no-answer: closes without a response; /until-close: a body delimited by the connection's end; /slow/MS: answers
  after MS milliseconds; /ws: a websocket-style 101, then echoes bytes;
- anything else: 200 with JSON {"app", "method", "path", "headers", "peer", "body_bytes", "body_sha256"}.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import yaml

from netlab.mesh.build import ProxySpec, build_snapshot
from netlab.mesh.registry import HTTP, MeshEndpoint, MeshPort, MeshService
from netlab.mesh.types import Snapshot
from netlab.model.loader import parse_resources
from netlab.proxy.config import ProxyConfig

VIP = "10.96.0.80"  # a service address: only routed on, never connected to
FQDN = "web.default.svc.cluster.local"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def answer(self) -> None:
        server = self.server
        server.requests.append(self.path)  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self.read_chunked()
        path = self.path
        if path.startswith("/status/"):
            return self.reply(int(path.split("/")[2]), b"status\n")
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one ", b"two ", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return None
        if path == "/close-early":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.close_connection = True
            return None
        if path == "/no-answer":
            self.close_connection = True
            return None
        if path == "/until-close":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            self.close_connection = True
            return None
        if path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
        if path == "/ws":
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "websocket")
            self.end_headers()
            self.wfile.flush()
            while data := self.connection.recv(65536):
                self.connection.sendall(data)
            self.close_connection = True
            return None
        doc = {"app": server.name, "method": self.command, "path": path,  # type: ignore[attr-defined]
               "headers": {k.lower(): v for k, v in self.headers.items()}, "peer": self.client_address[0],
               "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        return self.reply(200, json.dumps(doc).encode())

    def read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = answer


class HttpApp(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, name: str, port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.name = name
        self.requests: list[str] = []
        self.connections = 0
        self.addr = self.server_address[:2]

    def get_request(self) -> tuple[socket.socket, object]:
        pair = super().get_request()
        self.connections += 1
        return pair


@contextlib.contextmanager
def http_app(host: str = "127.0.0.1", name: str = "app", port: int = 0) -> Iterator[HttpApp]:
    app = HttpApp(host, name, port)
    thread = threading.Thread(target=app.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.shutdown()
        app.server_close()


def service_config(istio: str, endpoints: list[tuple[str, int]], port: int = 80, resources: str = "",
                   versions: list[str] | None = None, **settings: object) -> ProxyConfig:
    """A client sidecar that knows one HTTP service, web (VIP:port), with these endpoints (labelled app: web and
    version: versions[i]), and the Istio resources in `resources` (YAML documents)."""
    labels = [{"app": "web", **({"version": versions[i]} if versions else {})} for i in range(len(endpoints))]
    svc = MeshService(FQDN, "default", (VIP,), (MeshPort("http", port, HTTP, port),),
                      tuple(MeshEndpoint(ip, {port: p}, labels[i], f"web-{i}") for i, (ip, p)
                            in enumerate(endpoints)))
    spec = ProxySpec("client", "client", "default", "10.244.0.10", istio, labels={"app": "client"})
    parsed = parse_resources(list(yaml.safe_load_all(resources)), documents=True) if resources else []
    snapshot: Snapshot = build_snapshot(spec, [svc], {}, resources=parsed)
    return ProxyConfig(snapshot=snapshot, **settings)  # type: ignore[arg-type]
