"""HTTP probes: the request a probe sends (like curl: Host from the target, a User-Agent, `Connection: close`).
The response it read is parsed by netlab.http_reply."""

from __future__ import annotations

from netlab.model.schema import HttpRequest

USER_AGENT = "netlab-probe"


def server_name(request: HttpRequest, target: str) -> str:
    """The name an https probe sends as SNI and checks the certificate against: the Host header's, else the
    target's (without the port), as curl takes it from the URL."""
    host = next((v for k, v in request.headers.items() if k.lower() == "host"), target)
    if host.startswith("["):  # [IPv6] or [IPv6]:PORT
        return host[1:host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_bytes(request: HttpRequest, target: str) -> bytes:
    """The request for `target` (NAME:PORT as the check names it; the scheme's default port, 80 or 443, is left
    out of Host, as curl does)."""
    host = target.removesuffix(":443" if request.scheme == "https" else ":80")
    headers = {"host": host, "user-agent": USER_AGENT, **{k.lower(): v for k, v in request.headers.items()}}
    body = request.body.encode()
    if body or request.method in ("POST", "PUT", "PATCH"):
        headers["content-length"] = str(len(body))
    headers["connection"] = "close"
    head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body
