"""Open the upstream socket of a route: default source, bound to 127.0.0.6, or transparent (TPROXY).

A non-blocking socket and `connect_ex`: the options Envoy's upstream sockets carry must be set before bind() and
connect(), which the loop's create_connection(host, port) cannot do; the relay hands the connecting socket to the
loop (create_connection(sock=)). TCP_NODELAY is set here: asyncio sets it only on sockets whose proto is
IPPROTO_TCP, not 0 as here (libuv sets it on every TCP handle, so under uvloop this one is a repeat);
test_both_sockets_have_tcp_nodelay checks both loops.
"""

from __future__ import annotations

import socket

from netlab.proxy.config import TPROXY_MARK
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import Route

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
SO_MARK = getattr(socket, "SO_MARK", 36)
# Defer the source port choice to connect(): bind(ip, 0) alone reserves a port for every destination and runs out
# of ports under TIME_WAIT at a few hundred new connections per second; connect() can reuse per 4-tuple.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# SOCK_NONBLOCK in the type: non-blocking from socket() on, no extra ioctl.
_STREAM_NONBLOCK = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)


class UpstreamSocket(socket.socket):
    """An IPv4 stream socket whose family and type read as plain ints: the loop's create_connection(sock=) reads
    both, and socket.socket makes an enum member of each through three Python calls (1.3 µs a connection)."""

    __slots__ = ()

    @property
    def family(self) -> int:  # type: ignore[override]
        return socket.AF_INET

    @property
    def type(self) -> int:  # type: ignore[override]
        return socket.SOCK_STREAM


def upstream_socket(route: Route, client_ip: str) -> socket.socket:
    """A non-blocking socket bound as the route wants: the kernel's choice, 127.0.0.6, or the client's own address
    (TPROXY). Raises OSError (the socket closed) when it cannot be set up."""
    sock = UpstreamSocket(socket.AF_INET, _STREAM_NONBLOCK)
    try:
        if not _STREAM_NONBLOCK & ~socket.SOCK_STREAM:
            sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if route.transparent:
            # Bind to a non-local address (the client's) and mark packets so the app's replies route back here.
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, TPROXY_MARK)
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((client_ip, 0))
        elif route.bind_ip:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((route.bind_ip, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def open_upstream(route: Route, upstream: Addr, client_ip: str) -> tuple[socket.socket, int]:
    """upstream_socket with connect() to `upstream` started: (socket, errno of connect_ex; 0 or EINPROGRESS when
    fine)."""
    sock = upstream_socket(route, client_ip)
    try:
        return sock, sock.connect_ex(upstream)
    except BaseException:
        sock.close()
        raise
