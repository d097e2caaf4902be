"""Where did the client really want to go? SO_ORIGINAL_DST (REDIRECT) or the local address (TPROXY)."""

from __future__ import annotations

import socket
from collections.abc import Callable

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; Envoy's constants.SoOriginalDst
_SOCKADDR_IN_LEN = 16

Addr = tuple[str, int]
# Given the accepted socket, return the original destination; raises OSError when there is none.
Resolver = Callable[[socket.socket], Addr]


def redirect_original_dst(sock: socket.socket) -> Addr:
    """The pre-NAT destination conntrack remembers for a REDIRECTed connection (struct sockaddr_in)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN_LEN)
    # sockaddr_in: family (host order, 2 bytes), port (network order), address (4 bytes).
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


def local_address(sock: socket.socket) -> Addr:
    """The address the client dialled, as the accepted socket is bound to it: on a transparent (TPROXY) listener,
    and on a gateway's ordinary listeners, where nothing was redirected."""
    host, port = sock.getsockname()[:2]
    return host, port


tproxy_original_dst = local_address


def resolver_for(mode: str) -> Resolver:
    return tproxy_original_dst if mode == "TPROXY" else redirect_original_dst
