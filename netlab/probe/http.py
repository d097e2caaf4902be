"""HTTP probes: the request a probe sends (like curl: Host from the target, a User-Agent, `Connection: close`) and
the response it read, parsed by httptools."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httptools

from netlab.model.schema import HttpRequest

USER_AGENT = "netlab-probe"


def request_bytes(request: HttpRequest, target: str) -> bytes:
    """The request for `target` (NAME:PORT as the check names it; port 80 is left out of Host, as curl does)."""
    host = target.removesuffix(":80")
    headers = {"host": host, "user-agent": USER_AGENT, **{k.lower(): v for k, v in request.headers.items()}}
    body = request.body.encode()
    if body or request.method in ("POST", "PUT", "PATCH"):
        headers["content-length"] = str(len(body))
    headers["connection"] = "close"
    head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


@dataclass
class HttpReply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # names lower-case; repeated ones joined with ", "
    body: bytes = b""
    complete: bool = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace").strip()

    def answered_by(self) -> str | None:
        """The pod a built-in http app names in its answer."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return None
        pod = doc.get("pod") if isinstance(doc, dict) else None
        return pod if isinstance(pod, str) and pod else None

    def describe(self) -> str:
        return f"HTTP {self.status}" + (f" {self.text!r}" if self.body else "")


def parse_response(data: bytes) -> HttpReply | None:
    """The first response in `data` (what the probe read up to the connection's end); None when it is not HTTP.
    `complete` is False for a response cut off before the end its framing announced."""
    reply = HttpReply()
    parser = httptools.HttpResponseParser(reply)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        if not reply.complete:
            return None
    if not data.startswith(b"HTTP/") or b"\r\n\r\n" not in data:
        return None
    reply.status = parser.get_status_code()
    framed = "content-length" in reply.headers or "chunked" in reply.headers.get("transfer-encoding", "")
    if not reply.complete and not framed:
        reply.complete = True  # a body delimited by the connection's end: the data is all of it
    return reply
