"""The built-in `http` app: an HTTP/1.1 server (httptools parses, keep-alive, request bodies read and counted) that
answers every request with JSON saying who answered and what arrived, so a check sees what the sidecars did:

    {"reply": "hello", "pod": "reviews-v2-0", "version": "v2", "method": "GET", "path": "/reviews/0",
     "headers": {"host": "reviews:9080", "x-request-id": "...", "x-envoy-attempt-count": "1", ...},
     "peer": "127.0.0.6", "body_bytes": 0}

It can be told to misbehave like the apps of Istio's fault and retry exercises: fail a share of requests with a
status (`fail`), answer a share of them late (`delay`). Each request is logged like nginx's access log.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TextIO, cast

import httptools

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(frozen=True)
class Behaviour:
    reply: str = "hello"
    pod: str = ""
    version: str = ""
    fail_status: int = 503
    fail_share: float = 0.0
    delay_ms: int = 0
    delay_share: float = 0.0


class HttpApp(asyncio.Protocol):
    def __init__(self, behaviour: Behaviour, peers: TextIO | None) -> None:
        self.behaviour = behaviour
        self.peers = peers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ("", 0)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body_bytes = 0
        self.pending: list[asyncio.Task[None]] = []  # responses in order, for pipelined requests

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")[:2]
        if self.peers is not None:
            self.peers.write(f"{self.peer[0]} {self.peer[1]}\n")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send(400, b"bad request\n", close=True)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body_bytes = b"", {}, 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        request = (self.parser.get_method().decode(), self.url.decode("latin-1"), dict(self.headers),
                   self.body_bytes, self.parser.should_keep_alive())
        previous = self.pending[-1] if self.pending else None
        self.pending.append(asyncio.ensure_future(self.answer(request, previous)))

    async def answer(self, request: tuple[str, str, dict[str, str], int, bool],
                     previous: asyncio.Task[None] | None) -> None:
        method, path, headers, body_bytes, keep_alive = request
        b = self.behaviour
        if b.delay_ms and random.random() < b.delay_share:
            await asyncio.sleep(b.delay_ms / 1000)
        if previous is not None:
            await asyncio.shield(previous)
        if b.fail_share and random.random() < b.fail_share:
            status, body = b.fail_status, f"fault injected by the app ({b.pod or 'http'})\n".encode()
        else:
            status = 200
            body = json.dumps({"reply": b.reply, "pod": b.pod, "version": b.version, "method": method, "path": path,
                               "headers": headers, "peer": self.peer[0], "body_bytes": body_bytes}).encode() + b"\n"
        self.send(status, body, close=not keep_alive, head=method == "HEAD")
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        print(f'{self.peer[0]} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {len(body)} '
              f'"{headers.get("user-agent", "-")}"', flush=True)
        self.pending.remove(asyncio.current_task())  # type: ignore[arg-type]

    def send(self, status: int, body: bytes, close: bool, head: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        kind = "application/json" if body.startswith(b"{") else "text/plain"
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nserver: netlab-http-app"
                             b"\r\n%s\r\n%s" % (status, _REASONS.get(status, b"Unknown"), kind.encode(), len(body),
                                                b"connection: close\r\n" if close else b"", b"" if head else body))
        if close:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.pending:
            task.cancel()
