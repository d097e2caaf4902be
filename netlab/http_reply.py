"""An HTTP response read to the connection's end, parsed by httptools: what an HTTP probe got, and what the http
app's calls got. Standard library and httptools only (the apps import it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httptools


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
