"""The proxy's own HTTP endpoints, one request per connection (HTTP/1.1, then close): 15021 `GET /healthz/ready`,
15090 `GET /stats/prometheus`, and Envoy's admin API on 127.0.0.1:15000: `GET /config_dump`, the snapshot this
worker routes by with its endpoints' live state (what `netlab proxy-config` prints, as istioctl reads Envoy's),
and `GET /server_info`, its configuration version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netlab.proxy.dispatch import Dispatch

# path -> handler returning (status, content type, body); None means the path is unknown.
Handler = Callable[[str], tuple[int, str, str] | None]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}
_MAX_HEAD = 8192


class HttpOnce(asyncio.Protocol):
    __slots__ = ("buf", "handler", "t")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            if len(self.buf) > _MAX_HEAD:
                self.respond(400, "text/plain", "request head too large\n")
            return
        parts = self.buf.split(b"\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            self.respond(400, "text/plain", "bad request line\n")
        elif parts[0] not in ("GET", "HEAD"):
            self.respond(405, "text/plain", "only GET\n")
        else:
            result = self.handler(parts[1].split("?", 1)[0])
            if result is None:
                self.respond(404, "text/plain", "not found\n")
            else:
                self.respond(*result, head=parts[0] == "HEAD")

    def respond(self, status: int, ctype: str, body: str, head: bool = False) -> None:
        payload = body.encode()
        self.t.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
            + (b"" if head else payload)
        )
        self.t.close()

    def eof_received(self) -> bool:
        return False


def health_handler(is_ready: Callable[[], bool]) -> Handler:
    def handle(path: str) -> tuple[int, str, str] | None:
        if path != "/healthz/ready":
            return None
        return (200, "text/plain", "") if is_ready() else (503, "text/plain", "draining\n")

    return handle


def stats_handler(render: Callable[[], str]) -> Handler:
    def handle(path: str) -> tuple[int, str, str] | None:
        if path != "/stats/prometheus":
            return None
        return 200, "text/plain; version=0.0.4", render()

    return handle


def config_dump(dispatch: Dispatch, reload_error: str = "") -> dict[str, Any]:
    """The loaded snapshot, each balanced cluster's hosts as this worker sees them (health, open connections)."""
    for lb in dispatch.balancers.values():
        lb.unexpire()
    hosts = {name: [{"address": h.addr[0], "port": h.addr[1], "health_status": "HEALTHY" if h.healthy
                     else "UNHEALTHY", "failed_outlier_check": h.ejected, "active": h.active, "pod": h.pod}
                    for h in lb.hosts]
             for name, lb in dispatch.balancers.items()}
    return {"version": dispatch.snapshot.version, "reload_error": reload_error, "hosts": hosts,
            **dispatch.snapshot.to_json()}


def config_dump_handler(current: Callable[[], tuple[Dispatch, str]]) -> Handler:
    """/config_dump, and /server_info: just the configuration version and the last reload's error (cheap to poll)."""
    def handle(path: str) -> tuple[int, str, str] | None:
        if path == "/config_dump":
            return 200, "application/json", json.dumps(config_dump(*current()))
        if path == "/server_info":
            dispatch, error = current()
            return 200, "application/json", json.dumps({"state": "LIVE", "config_version": dispatch.snapshot.version,
                                                        "reload_error": error})
        return None

    return handle
