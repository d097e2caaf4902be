"""Protocol detection on a connection's first bytes, as Envoy's http_inspector listener filter does it: the bytes
go through an HTTP/1 parser up to the end of the first line; a parse error (a byte that cannot continue a known
method, a malformed target or version) means TCP at once, a complete request line means HTTP, anything shorter
waits for more. Istio's protocolDetectionTimeout is 0 (none) by default, so a client that waits for the server to
speak first waits forever: why Istio asks for server-first protocols to be declared `tcp`. HTTP/2 with prior
knowledge (the h2c preface, method PRI) is not served by netlab's proxy: it is relayed as TCP.
"""

from __future__ import annotations

import re

HTTP1, TCP = "http/1.1", "tcp"
# The methods of Envoy's HTTP/1 parser (http_parser/llhttp): only these start an HTTP request.
METHODS = frozenset(b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
                    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
                    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE".split())
_PREFIXES = frozenset(m[:i] for m in METHODS for i in range(len(m) + 1))
_REST = re.compile(rb" [^ \x00-\x1f\x7f]+ HTTP/1\.[01]\r?\n")  # after the method, to the end of the line
_REST_PARTIAL = re.compile(rb"( [^ \x00-\x1f\x7f]*( (H(T(T(P(/(1(\.([01]\r?)?)?)?)?)?)?)?)?)?)?")
MAX_INSPECT = 64 * 1024  # http_inspector's buffer: a longer first line is not HTTP to it


def detect(data: bytes) -> str | None:
    """HTTP1, TCP, or None while the first line is incomplete but could still be a request line."""
    space = data.find(b" ")
    method = data if space < 0 else data[:space]
    if space < 0:
        return None if method in _PREFIXES else TCP
    if method not in METHODS:
        return TCP
    end = data.find(b"\n", space)
    if end >= 0:
        return HTTP1 if _REST.fullmatch(data, space, end + 1) else TCP
    if len(data) < MAX_INSPECT and _REST_PARTIAL.fullmatch(data, space):
        return None
    return TCP
