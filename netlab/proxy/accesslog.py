"""One Envoy-like access-log line per connection, text or JSON lines.

Text format (space separated; `-` when a field is empty):

    [START_TIME] DIRECTION CLUSTER RESPONSE_FLAGS DETAILS BYTES_RECEIVED BYTES_SENT DURATION_MS
        "UPSTREAM_HOST" UPSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_REMOTE_ADDRESS

    [2026-11-22T04:10:00.123Z] inbound inbound|8080|| - - 5 5 3 "10.44.0.2:8080" 127.0.0.6:41109
        10.44.0.2:8080 10.44.0.1:53210
    [2026-11-22T04:10:01.002Z] inbound inbound|8080|| UF upstream_connect_error:ECONNREFUSED(111) 5 0 1
        "127.0.0.1:8080" - 10.44.0.2:8080 10.44.0.1:53212

(each example is one line in the file).

BYTES_RECEIVED is read from the client, BYTES_SENT written to it (Envoy's meaning). DOWNSTREAM_LOCAL_ADDRESS is
the original destination. Flags: UF upstream connection failure, UC upstream reset, DC downstream reset,
NR refused by the loop guard; DETAILS says why (with the errno). JSON lines use Envoy's field names.

Lines are buffered and written with O_APPEND, whole lines per write, so several workers can share one file. A
write is scheduled as soon as a line is logged (`defer`, the worker's loop.call_soon): the lines of every
connection that ended in one turn of the event loop go out together, so `cat` right after a request shows its line
and a busy proxy still writes in batches.
"""

from __future__ import annotations

import json  # at import, as root: the stdlib may be unreadable once the proxy runs as 1337
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from netlab.proxy.origdst import Addr

_FLUSH_BYTES = 64 * 1024


@dataclass(slots=True)
class Entry:
    start: float  # time.time()
    direction: str
    cluster: str
    flags: str  # "-" or e.g. "UF"
    details: str  # "-" or e.g. "upstream_connect_error:ECONNREFUSED(111)"
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_host: Addr | None
    upstream_local: Addr | None
    downstream_local: Addr
    downstream_remote: Addr


def _addr(a: Addr | None) -> str:
    return f"{a[0]}:{a[1]}" if a else "-"


def _time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def format_text(e: Entry) -> str:
    return (
        f"[{_time(e.start)}] {e.direction} {e.cluster} {e.flags} {e.details} {e.bytes_received} {e.bytes_sent} "
        f'{e.duration_ms} "{_addr(e.upstream_host)}" {_addr(e.upstream_local)} {_addr(e.downstream_local)} '
        f"{_addr(e.downstream_remote)}"
    )


def format_json(e: Entry) -> str:
    return json.dumps(
        {
            "start_time": _time(e.start),
            "direction": e.direction,
            "upstream_cluster": e.cluster,
            "response_flags": e.flags,
            "connection_termination_details": e.details,
            "bytes_received": e.bytes_received,
            "bytes_sent": e.bytes_sent,
            "duration": e.duration_ms,
            "upstream_host": _addr(e.upstream_host),
            "upstream_local_address": _addr(e.upstream_local),
            "downstream_local_address": _addr(e.downstream_local),
            "downstream_remote_address": _addr(e.downstream_remote),
        },
        separators=(",", ":"),
    )


class AccessLog:
    """Buffered writer to an fd opened before privileges are dropped (the log dir may be root's)."""

    def __init__(self, fd: int, json_lines: bool = False) -> None:
        self.fd = fd
        self.format = format_json if json_lines else format_text
        self._buf: list[str] = []
        self._size = 0
        self.defer: Callable[[Callable[[], None]], object] | None = None  # set by the worker: loop.call_soon
        self._pending = False

    @classmethod
    def open(cls, path: str, json_lines: bool = False) -> AccessLog:
        if path == "-":
            return cls(sys.stdout.fileno(), json_lines)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return cls(fd, json_lines)

    def log(self, entry: Entry) -> None:
        line = self.format(entry) + "\n"
        self._buf.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif not self._pending and self.defer is not None:
            self._pending = True
            self.defer(self.flush)

    def flush(self) -> None:
        self._pending = False
        if not self._buf:
            return
        data = "".join(self._buf).encode()
        self._buf.clear()
        self._size = 0
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
