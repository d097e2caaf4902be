"""One TCP probe from inside a pod: a socket made in a setns'd thread (it stays in the pod), connect, (for https,
a TLS handshake as curl makes it: SNI, the server's certificate checked), send, half-close (unless told not to: an
HTTP request says `Connection: close` instead), read until EOF, classify."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from netlab.kernel.nsutil import run_in_netns
from netlab.probe.observed import Addr, ProbeResult

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH}


@dataclass(frozen=True)
class TlsClient:
    """An https probe's TLS: the server name it sends (SNI) and checks the certificate against, and the roots it
    trusts."""

    server_name: str
    context: ssl.SSLContext

    @classmethod
    def trusting(cls, ca_file: str, server_name: str) -> TlsClient:
        """Trusting ca_file (the system's roots when there is no such file); an address or an empty name is sent as
        no SNI, and then only the chain is checked."""
        context = ssl.create_default_context(cafile=ca_file if os.path.isfile(ca_file) else None)
        context.set_alpn_protocols(["http/1.1"])
        try:
            ipaddress.ip_address(server_name)
            server_name = ""
        except ValueError:
            pass
        if not server_name:
            context.check_hostname = False
        return cls(server_name, context)


def probe(netns_path: str, remote: Addr, send: bytes, timeout: float, own_ip: str,
          on_connected: Callable[[Addr], None] | None = None, half_close: bool = True,
          on_sent: Callable[[], None] | None = None, tls: TlsClient | None = None) -> ProbeResult:
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
            if tls is not None:
                try:
                    sock = tls.context.wrap_socket(sock, server_hostname=tls.server_name or None)
                except ssl.SSLError:  # the handshake's own failures (a certificate error is a ValueError too)
                    raise
                except (ValueError, UnicodeError) as err:  # a name that cannot be an SNI (IDNA)
                    return done("tls_error", f"server name {tls.server_name!r}: {err}")
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
        except ssl.SSLCertVerificationError as err:
            return done("tls_error", f"the server's certificate: {err.verify_message}")
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return done("reply" if data else "closed", "" if data else "EOF without TLS close_notify")
        except ssl.SSLError as err:
            return done("tls_error", err.reason or str(err))
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
