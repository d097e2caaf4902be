"""A connection's route (cluster, upstream, source binding) and the loop guard, shared by both directions."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from netlab.proxy.http.router import HttpRouter
from netlab.proxy.lb import Host, LoadBalancer
from netlab.proxy.origdst import Addr

BLACKHOLE, PASSTHROUGH_BIND_IP = "BlackHoleCluster", "127.0.0.6"


@dataclass(frozen=True, slots=True)
class Route:
    """What a connection to one original destination does. `upstream` is fixed for original-destination and
    passthrough clusters; otherwise `lb` picks an endpoint per connection. With `http`, the connection goes to the
    HTTP connection manager, which routes each request; with `sniff` too, only if its first bytes are HTTP (else it
    is relayed as this route says)."""

    direction: str  # "inbound" or "outbound"
    cluster: str
    upstream: Addr | None = None
    lb: LoadBalancer | None = None
    bind_ip: str | None = None  # upstream source address (127.0.0.6) or None for the kernel's choice
    transparent: bool = False  # TPROXY: the upstream socket takes the client's own address (IP_TRANSPARENT)
    refused: str | None = None  # why the connection is refused instead of forwarded
    flags: str = "NR"  # the response flags of a refusal: NR (no route, loop guard), UH (no healthy upstream)
    http: HttpRouter[Route] | None = None
    sniff: bool = False
    sni: str = ""  # auto mTLS: the SNI for endpoints whose sidecar takes mTLS (Host.identity set)
    tls: tuple[TlsChain, ...] = ()  # an inbound port's TLS chains: the first bytes decide (tls_inspector)
    plaintext: bool = True  # a raw_buffer chain exists (not under STRICT)
    origination: Any = None  # a DestinationRule's SIMPLE/MUTUAL TLS: its client SSLContext (else the mesh's mTLS)

    def pick(self, key: str | None = None) -> tuple[Addr | None, Host | None]:
        """The upstream address for a new connection or request, and the endpoint it counts against (None: no
        healthy one). `key`: what a RING_HASH balancer hashes."""
        if self.upstream is not None:
            return self.upstream, None
        host = self.lb.pick(key) if self.lb is not None else None
        return (host.addr, host) if host is not None else (None, None)


@dataclass(frozen=True, slots=True)
class TlsChain:
    """A filter chain for TLS connections, matched on the ClientHello's SNI and ALPN (empty: any): it terminates
    TLS (Istio's mTLS with the workload certificate, or with `context`, a gateway credential) and goes to the HTTP
    connection manager or to tcp_proxy, or relays the client's own TLS untouched."""

    alpn: frozenset[str]
    terminate: bool
    http: HttpRouter[Route] | None = None
    route: Route | None = None  # tcp_proxy's
    server_names: tuple[str, ...] = ()
    context: ssl.SSLContext | None = None

    @staticmethod
    def pick(chains: tuple[TlsChain, ...], sni: str, alpn: tuple[str, ...]) -> TlsChain | None:
        """As Envoy's filter chain match: the chains naming the SNI exactly, else those with the longest
        `*.suffix` of it, else those naming no server; of them, one naming an offered protocol beats one naming
        none."""
        exact = [c for c in chains if sni in c.server_names] if sni else []
        if not exact and sni:
            suffix = max((len(n) for c in chains for n in c.server_names if n[:2] == "*." and sni.endswith(n[1:])),
                         default=0)
            exact = [c for c in chains if any(len(n) == suffix and sni.endswith(n[1:]) for n in c.server_names
                                              if n[:2] == "*.")] if suffix else []
        candidates = exact or [c for c in chains if not c.server_names]
        offered = set(alpn)
        return (next((c for c in candidates if c.alpn & offered), None)
                or next((c for c in candidates if not c.alpn), None))


def loop_reason(direction: str, orig_dst: Addr, peer: Addr, local: Addr, capture_ports: frozenset[int],
                redirect_mode: bool) -> tuple[str, str] | None:
    """(access-log detail, human message) when forwarding this connection would loop back into the proxy.

    Two shapes of loop: the original destination is a capture listener of this proxy (forwarding there comes
    straight back), or a captured inbound connection comes from 127.0.0.6, which only the proxy's own upstream
    sockets use: ISTIO_OUTPUT rule 1 (`-o lo -s 127.0.0.6/32 -j RETURN`) did not let it out, so it was redirected
    to 15006 again. Following either would recurse until file descriptors run out.
    """
    ip, port = orig_dst
    if port in capture_ports and (ip.startswith("127.") or ip == local[0]):
        return ("loop_detected:own_listener",
                f"loop detected: original destination {ip}:{port} is this proxy's own listener; refused")
    if direction == "inbound" and redirect_mode and peer[0] == PASSTHROUGH_BIND_IP:
        return ("loop_detected:127.0.0.6_captured_again",
                f"loop detected: inbound connection from {peer[0]}:{peer[1]} (the proxy's own upstream source) "
                f"was captured again on its way to {ip}:{port}; ISTIO_OUTPUT rule 1 "
                "'-o lo -s 127.0.0.6/32 -j RETURN' is missing; refused")
    return None


def refused(direction: str, reason: str, cluster: str = BLACKHOLE, flags: str = "NR") -> Route:
    return Route(direction, cluster, refused=reason, flags=flags)
