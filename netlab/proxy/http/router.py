"""A route configuration, compiled for lookups: the virtual host by the request's authority, as Envoy picks it
(exact domain, then the longest `*.suffix`, then the longest `prefix.*`, then `*`; the port is ignored when no
domain names one, Istio's strip_any_host_port from 1.16), then the first route whose match takes the path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from netlab.mesh.types import Route, RouteConfig, VirtualHost
from netlab.proxy.origdst import Addr

Target = TypeVar("Target")  # what a cluster name resolves to (the proxy's routes.Route)


@dataclass(frozen=True, slots=True)
class Match:
    host: VirtualHost
    route: Route


class HttpRouter(Generic[Target]):
    """`resolve(cluster, original destination)`: where a request to a cluster goes (the dispatch's clusters)."""

    __slots__ = ("exact", "name", "prefixes", "resolve", "star", "suffixes")

    def __init__(self, config: RouteConfig, resolve: Callable[[str, Addr], Target]) -> None:
        self.name = config.name
        self.resolve = resolve
        self.exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        prefixes: list[tuple[str, VirtualHost]] = []
        self.star: VirtualHost | None = None
        for vhost in config.virtual_hosts:
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

    def match(self, authority: str, path: str) -> Match | None:
        """The route for a request; None when no virtual host or route takes it (404 NR)."""
        vhost = self.virtual_host(authority)
        if vhost is None:
            return None
        for route in vhost.routes:
            if path.startswith(route.prefix):
                return Match(vhost, route)
        return None
