"""One TCP probe from inside a pod: a socket made in a setns'd thread (it stays in the pod), connect, send,
half-close (unless told not to: an HTTP request says `Connection: close` instead), read until EOF, classify."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from netlab.kernel.nsutil import run_in_netns
from netlab.probe.observed import Addr, ProbeResult

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH}


def probe(netns_path: str, remote: Addr, send: bytes, timeout: float, own_ip: str,
          on_connected: Callable[[Addr], None] | None = None, half_close: bool = True,
          on_sent: Callable[[], None] | None = None) -> ProbeResult:
    """Connect to remote from the namespace at netns_path; own_ip names the source when connect fails early.

    on_connected(local) runs once the connection is up, before anything is sent (a trace samples the socket
    tables there, while every connection of the path is still open); on_sent() after the request is sent (an HTTP
    proxy connects upstream only once it has a request).
    """
    sock = run_in_netns(netns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    started = time.monotonic()
    local: Addr | None = None
    data = b""

    def done(outcome: str, error: str = "") -> ProbeResult:
        return ProbeResult(outcome, data, local, remote, (time.monotonic() - started) * 1000, error)

    try:
        sock.settimeout(timeout)
        # Bind first so the source port is known even when connect fails (conntrack and logs are matched on it).
        sock.bind(("0.0.0.0", 0))
        local = (own_ip, sock.getsockname()[1])
        try:
            sock.connect(remote)
        except ConnectionRefusedError:
            return done("refused", "ECONNREFUSED")
        except ConnectionResetError:
            # Established and reset before connect() returned: a proxy that failed its upstream very fast.
            # (A refused SYN is ECONNREFUSED instead, so the two stay distinct.)
            return done("reset", "ECONNRESET during connect")
        except TimeoutError:
            return done("timeout", "connect timed out")
        except OSError as err:
            if err.errno in _UNREACHABLE:
                return done("unreachable", errno.errorcode.get(err.errno or 0, str(err)))
            raise
        local = sock.getsockname()[:2]
        if on_connected is not None:
            on_connected(local)
        deadline = started + timeout
        try:
            if send:
                sock.sendall(send)
            if half_close:
                sock.shutdown(socket.SHUT_WR)  # like `nc -N`: tell the server the request is complete
            if on_sent is not None:
                on_sent()
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return done("reply" if data else "closed")
                data += chunk
        except ConnectionResetError:
            return done("reset", "ECONNRESET")
        except BrokenPipeError:
            return done("reset", "EPIPE")
        except TimeoutError:
            return done("timeout", "no EOF before the timeout" if data else "no reply before the timeout")
        except OSError as err:
            if err.errno == errno.ENOTCONN:  # shutdown() after the RST had already torn the connection down
                return done("reset", "ENOTCONN")
            raise
    finally:
        sock.close()
