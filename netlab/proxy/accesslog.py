"""The access log in Istio's default format: one line per HTTP request and one per TCP connection.

TEXT is istiod's EnvoyTextLogFormat (pilot/pkg/model/telemetry_logging.go; the same since Istio 1.9, with
%UPSTREAM_CLUSTER_RAW% from 1.23, which prints the same name unless an alternative stat name is configured):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
    %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED%
    %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS%
    %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line in the file). An empty value prints `-`; a TCP connection prints `"- - -" 0` for the HTTP fields, e.g.

    [2024-05-28T18:42:53.929Z] "- - -" 0 UF,URX - - "delayed_connect_error:_111" 0 0 0 - "-" "-" "-" "-"
    "100.72.2.95:7801" InboundPassthroughClusterIpv4 - 100.72.2.95:7801 100.72.9.97:33948 - -

JSON lines use EnvoyJSONLogFormatIstio's keys (sorted, numbers typed). netlab's own reasons for a connection it
closes (its loop guard, an idle timeout, the errno of a reset) go into CONNECTION_TERMINATION_DETAILS, the field
Envoy's network filters use for theirs.

Entries are buffered, formatted when they are written (in one go, after the responses of the loop's turn went
out) and written with O_APPEND, whole lines per write, so several workers can share one file. A write is scheduled
as soon as an entry is logged (`defer`, the worker's loop.call_soon): the lines of every request and connection that
ended in one turn of the event loop go out together, so `cat` right after a request shows its line, whatever the
proxy does next (answer its admin port, reload) comes after the line is written, and a busy proxy still writes in
batches.
"""

from __future__ import annotations

import json  # at import, as root: the stdlib may be unreadable once the proxy runs as 1337
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from netlab.proxy.origdst import Addr

_FLUSH_ENTRIES = 256  # written at once when this many wait (about 100 KiB)


@dataclass(slots=True)
class Entry:
    start: float  # time.time()
    cluster: str
    downstream_local: Addr  # the original destination
    downstream_remote: Addr
    upstream_host: Addr | None = None
    upstream_local: Addr | None = None
    flags: str = "-"  # RESPONSE_FLAGS, e.g. "UF,URX"
    bytes_received: int = 0  # from the client
    bytes_sent: int = 0  # to the client
    duration_ms: int = 0
    termination_details: str = "-"  # CONNECTION_TERMINATION_DETAILS
    transport_failure: str = "-"  # UPSTREAM_TRANSPORT_FAILURE_REASON
    method: str = "-"
    path: str = "-"
    protocol: str = "-"
    response_code: int = 0
    response_code_details: str = "-"
    upstream_service_time: int | None = None
    x_forwarded_for: str = "-"
    user_agent: str = "-"
    request_id: str = "-"
    authority: str = "-"
    requested_server_name: str = "-"
    route_name: str = "-"


def _addr(a: Addr | None) -> str:
    return f"{a[0]}:{a[1]}" if a else "-"


_second: list = [-1, ""]  # the last second formatted, and its text


def _time(t: float) -> str:
    second = int(t)
    if _second[0] != second:
        _second[:] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int(t * 1000) % 1000:03d}Z"


def format_text(e: Entry) -> str:
    service = "-" if e.upstream_service_time is None else e.upstream_service_time
    return (
        f'[{_time(e.start)}] "{e.method} {e.path} {e.protocol}" {e.response_code} {e.flags} '
        f'{e.response_code_details} {e.termination_details} "{e.transport_failure}" {e.bytes_received} '
        f'{e.bytes_sent} {e.duration_ms} {service} "{e.x_forwarded_for}" "{e.user_agent}" "{e.request_id}" '
        f'"{e.authority}" "{_addr(e.upstream_host)}" {e.cluster} {_addr(e.upstream_local)} '
        f"{_addr(e.downstream_local)} {_addr(e.downstream_remote)} {e.requested_server_name} {e.route_name}"
    )


def _value(text: str) -> str | None:
    return None if text == "-" else text


def format_json(e: Entry) -> str:
    document = {
        "authority": _value(e.authority),
        "bytes_received": e.bytes_received,
        "bytes_sent": e.bytes_sent,
        "connection_termination_details": _value(e.termination_details),
        "downstream_local_address": _addr(e.downstream_local),
        "downstream_remote_address": _addr(e.downstream_remote),
        "duration": e.duration_ms,
        "method": _value(e.method),
        "path": _value(e.path),
        "protocol": _value(e.protocol),
        "request_id": _value(e.request_id),
        "requested_server_name": _value(e.requested_server_name),
        "response_code": e.response_code,
        "response_code_details": _value(e.response_code_details),
        "response_flags": e.flags,
        "route_name": _value(e.route_name),
        "start_time": _time(e.start),
        "upstream_cluster": e.cluster,
        "upstream_host": _value(_addr(e.upstream_host)),
        "upstream_local_address": _value(_addr(e.upstream_local)),
        "upstream_service_time": e.upstream_service_time,
        "upstream_transport_failure_reason": _value(e.transport_failure),
        "user_agent": _value(e.user_agent),
        "x_forwarded_for": _value(e.x_forwarded_for),
    }
    return json.dumps(document, separators=(",", ":"))


class AccessLog:
    """Buffered writer to an fd opened before privileges are dropped (the log dir may be root's)."""

    def __init__(self, fd: int, json_lines: bool = False) -> None:
        self.fd = fd
        self.format = format_json if json_lines else format_text
        self._entries: list[Entry] = []
        self.defer: Callable[[Callable[[], None]], object] | None = None  # set by the worker: loop.call_soon
        self._pending = False

    @classmethod
    def open(cls, path: str, json_lines: bool = False) -> AccessLog:
        if path == "-":
            return cls(sys.stdout.fileno(), json_lines)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return cls(fd, json_lines)

    def log(self, entry: Entry) -> None:
        entries = self._entries
        entries.append(entry)
        if len(entries) >= _FLUSH_ENTRIES:
            self.flush()
        elif not self._pending and self.defer is not None:
            self._pending = True
            self.defer(self.flush)

    def flush(self) -> None:
        self._pending = False
        if not self._entries:
            return
        entries, self._entries = self._entries, []
        data = "".join([self.format(e) + "\n" for e in entries]).encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
