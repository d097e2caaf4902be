"""The built-in `http` app: an HTTP/1.1 server (httptools parses, keep-alive, request bodies read and counted) that
answers every request with JSON saying who answered and what arrived, so a check sees what the sidecars did:

    {"reply": "hello", "pod": "reviews-v2-0", "version": "v2", "method": "GET", "path": "/reviews/0",
     "headers": {"host": "reviews:9080", "x-request-id": "...", "x-envoy-attempt-count": "1", ...},
     "peer": "127.0.0.6", "body_bytes": 0}

It can be told to misbehave like the apps of Istio's fault and retry exercises: fail a share of requests with a
status (`fail`), answer a share of them late (`delay`). Like Bookinfo's services it can call others for each request
(`calls`, e.g. reviews calling ratings), through its sidecar, passing on the headers Bookinfo passes on (end-user,
x-request-id, the tracing headers); the answer lists what each call got. Names are resolved with the pod's hosts
file, as a pod's DNS would. Each request is logged like nginx's access log.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TextIO, cast

import httptools

from netlab.http_reply import parse_response

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


# What Bookinfo's services pass on to the services they call (productpage.py getForwardHeaders).
FORWARDED = ("end-user", "user-agent", "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
             "x-b3-sampled", "x-b3-flags", "b3", "traceparent", "tracestate", "x-ot-span-context")


@dataclass(frozen=True)
class Behaviour:
    reply: str = "hello"
    pod: str = ""
    version: str = ""
    fail_status: int = 503
    fail_share: float = 0.0
    delay_ms: int = 0
    delay_share: float = 0.0
    calls: tuple[str, ...] = ()  # HOST:PORT/PATH, called for every request
    call_timeout: float = 10.0
    hosts: dict[str, str] = field(default_factory=dict)  # name -> IP, from the pod's hosts file


def read_hosts(path: str) -> dict[str, str]:
    names: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            ip, *aliases = line.split("#", 1)[0].split()
            for alias in aliases:
                names.setdefault(alias, ip)
    return names


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
        calls = [await call(target, headers, b) for target in b.calls]
        answer: dict[str, object] = {"reply": b.reply, "pod": b.pod, "version": b.version, "method": method,
                                     "path": path, "headers": headers, "peer": self.peer[0], "body_bytes": body_bytes}
        status = 200
        if b.fail_share and random.random() < b.fail_share:
            status = b.fail_status
            answer = {"pod": b.pod, "version": b.version, "status": status, "error": "failed by the app's fail setting"}
        elif calls:
            answer["calls"] = calls
        body = json.dumps(answer).encode() + b"\n"
        self.send(status, body, close=not keep_alive, head=method == "HEAD")
        # nginx's "combined" format plus "$http_x_forwarded_for", as the study notes' nginx logs it.
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        print(f'{self.peer[0]} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {len(body)} '
              f'"{headers.get("referer", "-")}" "{headers.get("user-agent", "-")}" '
              f'"{headers.get("x-forwarded-for", "-")}"', flush=True)
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


async def call(target: str, received: dict[str, str], b: Behaviour) -> dict[str, object]:
    """GET http://TARGET with the forwarded headers; what came back (status 0 and an error when nothing did)."""
    hostport, _, path = target.partition("/")
    host, _, port = hostport.rpartition(":")
    forwarded = "".join(f"{k}: {v}\r\n" for k, v in received.items() if k in FORWARDED)
    request = f"GET /{path} HTTP/1.1\r\nhost: {hostport}\r\n{forwarded}connection: close\r\n\r\n".encode()
    found: dict[str, object] = {"url": target}
    try:
        async with asyncio.timeout(b.call_timeout):
            reader, writer = await asyncio.open_connection(b.hosts.get(host, host), int(port))
            writer.write(request)
            data = await reader.read()
            writer.close()
    except TimeoutError:
        return {**found, "status": 0, "error": f"timeout after {b.call_timeout:g}s"}
    except OSError as err:
        return {**found, "status": 0, "error": os.strerror(err.errno) if err.errno else str(err)}
    reply = parse_response(data)
    if reply is None:
        return {**found, "status": 0, "error": "not an HTTP response"}
    found["status"] = reply.status
    try:
        answer = json.loads(reply.body)
        found["pod"] = answer.get("pod") if isinstance(answer, dict) else None
    except ValueError:
        found["body"] = reply.body.decode(errors="replace")[:200]
    return found
