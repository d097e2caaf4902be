"""Open the upstream connection of a route: default source, bound to 127.0.0.6, or transparent (TPROXY)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable

from netlab.proxy.config import TPROXY_MARK
from netlab.proxy.routes import Route

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
SO_MARK = getattr(socket, "SO_MARK", 36)
# Defer the source port choice to connect(): bind(ip, 0) alone reserves a port for every destination and runs out
# of ports under TIME_WAIT at a few hundred new connections per second; connect() can reuse per 4-tuple.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
BIND_NO_PORT = True  # False: one create_connection(local_addr=(127.0.0.6, 0)) call (port reserved at bind)


def _bound_socket(ip: str, transparent: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # asyncio skips it for sock= transports
        if transparent:
            # Bind to a non-local address (the client's) and mark packets so the app's replies route back here.
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, TPROXY_MARK)
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((ip, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _sock_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, addr: tuple[str, int]) -> None:
    """Non-blocking connect to a numeric address. Not `loop.sock_connect`: uvloop's resolves the address with
    getaddrinfo on its thread pool (no numeric fast path there), a thread hop per connection."""
    err = sock.connect_ex(addr)
    if err == errno.EINPROGRESS:
        done = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_writer(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


async def connect(loop: asyncio.AbstractEventLoop, route: Route, client_ip: str,
                  factory: Callable[[], asyncio.Protocol]) -> None:
    """Connect; the protocol's connection_made does the rest. Raises OSError on failure."""
    assert route.upstream is not None
    host, port = route.upstream
    if route.bind_ip and not route.transparent and not BIND_NO_PORT:
        await loop.create_connection(factory, host, port, local_addr=(route.bind_ip, 0))
    elif route.transparent or route.bind_ip:
        sock = _bound_socket(client_ip if route.transparent else route.bind_ip or "", route.transparent)
        try:
            await _sock_connect(loop, sock, (host, port))
            await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
    else:
        await loop.create_connection(factory, host, port)
