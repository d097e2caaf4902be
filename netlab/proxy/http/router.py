"""A route configuration, compiled for lookups: the virtual host by the request's authority, as Envoy picks it
(exact domain, then the longest `*.suffix`, then the longest `prefix.*`, then `*`; the port is ignored when no
domain names one, Istio's strip_any_host_port from 1.16), then the first route whose match takes the request
(path, headers, query parameters)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from netlab.mesh.types import ANY_PATH, Cluster, Route, RouteConfig, RouteMatch, StringMatcher, VirtualHost
from netlab.proxy.origdst import Addr

Target = TypeVar("Target")  # what a cluster name resolves to (the proxy's routes.Route)


@dataclass(frozen=True, slots=True)
class Match:
    host: VirtualHost
    route: Route


AUTHORITY_CACHE = 1024  # authorities whose virtual host is remembered
_UNSEEN = object()
Request = tuple[str, str, list[tuple[bytes, bytes]]]  # method, path (with the query), headers (lower-case names)
Predicate = Callable[[str, str, list[tuple[bytes, bytes]], str], bool]  # method, path, headers, scheme


class HttpRouter(Generic[Target]):
    """`resolve(cluster, original destination)`: where a request to a cluster goes (the dispatch's clusters);
    `cluster(name)`: its settings (circuit breakers, hashing)."""

    __slots__ = ("by_authority", "cluster", "exact", "name", "prefixes", "resolve", "routes", "star", "suffixes")

    def __init__(self, config: RouteConfig, resolve: Callable[[str, Addr], Target],
                 clusters: dict[str, Cluster] | None = None) -> None:
        self.name = config.name
        self.resolve = resolve
        self.cluster: Callable[[str], Cluster | None] = (clusters or {}).get  # a cluster's settings by name
        self.exact: dict[str, VirtualHost] = {}
        self.by_authority: dict[str, VirtualHost | None] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        prefixes: list[tuple[str, VirtualHost]] = []
        self.star: VirtualHost | None = None
        # Each virtual host's routes with their compiled match (None: every request), as the Match they make.
        self.routes: dict[str, list[tuple[Predicate | None, Match]]] = {}
        for vhost in config.virtual_hosts:
            self.routes[vhost.name] = [(None if r.match == ANY_PATH else compile_match(r.match), Match(vhost, r))
                                       for r in vhost.routes]
            for domain in vhost.domains:
                domain = domain.lower()
                if domain == "*":
                    self.star = self.star or vhost
                elif domain.startswith("*"):
                    suffixes.append((domain[1:], vhost))
                elif domain.endswith("*"):
                    prefixes.append((domain[:-1], vhost))
                else:
                    self.exact.setdefault(domain, vhost)
        self.suffixes = sorted(suffixes, key=lambda s: -len(s[0]))
        self.prefixes = sorted(prefixes, key=lambda p: -len(p[0]))

    def virtual_host(self, authority: str) -> VirtualHost | None:
        """The virtual host for an authority (a client sends the same one again and again: each is looked up
        once)."""
        found = self.by_authority.get(authority, _UNSEEN)
        if found is _UNSEEN:
            if len(self.by_authority) >= AUTHORITY_CACHE:
                self.by_authority.clear()
            found = self.by_authority[authority] = self._virtual_host(authority)
        return found  # type: ignore[return-value]

    def _virtual_host(self, authority: str) -> VirtualHost | None:
        host = authority.lower()
        found = self.exact.get(host)
        if found is None and ":" in host and not host.endswith("]"):
            host = host.rsplit(":", 1)[0]
            found = self.exact.get(host)
        if found is not None:
            return found
        for suffix, vhost in self.suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return vhost
        for prefix, vhost in self.prefixes:
            if host.startswith(prefix) and len(host) > len(prefix):
                return vhost
        return self.star

    def match(self, authority: str, path: str, method: str = "GET",
              headers: list[tuple[bytes, bytes]] | None = None, scheme: str = "http") -> Match | None:
        """The route for a request; None when no virtual host or route takes it (404 NR). `scheme`: https when the
        request came over TLS."""
        vhost = self.virtual_host(authority)
        if vhost is None:
            return None
        for predicate, found in self.routes[vhost.name]:
            if predicate is None or predicate(method, path, headers or [], scheme):
                return found
        return None


def compile_match(match: RouteMatch) -> Predicate:
    """A route's match as one function. Envoy's semantics: a prefix applies to the whole :path, an exact path or a
    regex to the path without its query string; regexes match whole; header matchers see the pseudo-headers
    :method, :authority (the host) and :scheme (https over TLS, else http)."""
    path_test = string_test(match.path)
    on_path = match.path.kind == "prefix"
    headers = [(h.name, string_test(h.match), h.invert) for h in match.headers]
    query = [(q.name, string_test(q.match)) for q in match.query]

    def predicate(method: str, path: str, request_headers: list[tuple[bytes, bytes]], scheme: str) -> bool:
        if not path_test(path if on_path else path.split("?", 1)[0]):
            return False
        for name, test, invert in headers:
            if test(header_value(name, method, request_headers, scheme)) == invert:
                return False
        if query:
            params = parse_qs(urlsplit(path).query, keep_blank_values=True)
            for name, test in query:
                values = params.get(name)
                if not test(values[0] if values else None):
                    return False
        return True

    return predicate


def header_value(name: str, method: str, headers: list[tuple[bytes, bytes]], scheme: str = "http") -> str | None:
    """A header's value as Envoy's matchers see it (repeated headers joined with ",")."""
    if name == ":method":
        return method
    if name == ":scheme":
        return scheme
    key = b"host" if name == ":authority" else name.encode("latin-1")
    values = [v.decode("latin-1") for n, v in headers if n == key]
    return ",".join(values) if values else None


def string_test(matcher: StringMatcher) -> Callable[[str | None], bool]:
    value, kind = matcher.value, matcher.kind
    if kind == "present":
        return lambda text: text is not None
    if matcher.ignore_case:
        value = value.lower()
    fold = matcher.ignore_case
    if kind == "exact":
        return lambda text: text is not None and (text.lower() if fold else text) == value
    if kind == "prefix":
        return lambda text: text is not None and (text.lower() if fold else text).startswith(value)
    pattern = re.compile(matcher.value, re.IGNORECASE if fold else 0)
    return lambda text: text is not None and pattern.fullmatch(text) is not None
