"""mTLS between sidecars, with OpenSSL through the ssl module: the identity a sidecar presents, the ClientHello a
server sidecar inspects to pick a filter chain (Envoy's tls_inspector), and TLS over a connection's transport.

TLS runs on ssl.SSLObject over memory BIOs (what asyncio's own TLS does) rather than asyncio's TLS transports, for
two reasons: the ClientHello has been read already when the server sidecar decides to terminate (it is fed in
first), and a half-close must travel as close_notify and come out as a FIN on the other side, as Envoy's TLS
transport socket does (asyncio's TLS transports cannot write_eof).

ALPN and SNI are Istio's (pilot util.go, listener.go; MESH-FACTS §6): a client sidecar offers
istio-http/1.1, istio, http/1.1 for HTTP and istio-peer-exchange, istio for TCP, with SNI
outbound_.PORT_.SUBSET_.FQDN; the server sidecar matches istio-http/* to its HTTP chains and istio-peer-exchange
or istio to its TCP chains.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab.mesh.types import TLS_CERT, TLS_KEY

ISTIO_HTTP_ALPN = frozenset(("istio-http/1.0", "istio-http/1.1", "istio-h2"))
ISTIO_TCP_ALPN = frozenset(("istio-peer-exchange", "istio"))
CLIENT_ALPN_HTTP = ["istio-http/1.1", "istio", "http/1.1"]
CLIENT_ALPN_TCP = ["istio-peer-exchange", "istio"]
MAX_HELLO = 16384 + 5  # one TLS record: a ClientHello longer than that is not a sidecar's
HANDSHAKE_TIMEOUT = 10.0  # seconds a handshake may take (Envoy's transport_socket_connect_timeout is 15 s)
_READ = 65536


@dataclass(frozen=True, slots=True)
class Hello:
    sni: str
    alpn: tuple[str, ...]


def is_tls(data: bytes) -> bool:
    """A TLS handshake record starts the stream (content type 22, protocol major version 3)."""
    return len(data) >= 2 and data[0] == 0x16 and data[1] == 0x03


def client_hello(data: bytes) -> Hello | None:
    """SNI and ALPN of the ClientHello at the start of `data`; None while its record is incomplete. ValueError when
    the bytes are not a ClientHello in one record. (No maintained library parses a ClientHello without also taking
    over the connection; the fields needed are few and every length is bounds-checked.)"""
    if len(data) < 5:
        return None
    length = int.from_bytes(data[3:5], "big")
    if length > MAX_HELLO - 5:
        raise ValueError("record too long for a ClientHello")
    if len(data) < 5 + length:
        return None
    body = _Reader(data[5:5 + length])
    if body.byte() != 1:
        raise ValueError("not a ClientHello")
    hello = _Reader(body.take(body.int(3)))
    hello.take(2 + 32)  # legacy_version, random
    hello.take(hello.byte())  # session id
    hello.take(hello.int(2))  # cipher suites
    hello.take(hello.byte())  # compression methods
    sni, alpn = "", ()
    if hello.left():
        extensions = _Reader(hello.take(hello.int(2)))
        while extensions.left():
            kind, ext = extensions.int(2), _Reader(extensions.take(extensions.int(2)))
            if kind == 0:  # server_name: a list of (type, name); type 0 is a host name
                names = _Reader(ext.take(ext.int(2)))
                while names.left():
                    name_type, name = names.byte(), names.take(names.int(2))
                    if name_type == 0:
                        sni = name.decode("ascii", "replace")
            elif kind == 16:  # application_layer_protocol_negotiation
                protocols = _Reader(ext.take(ext.int(2)))
                found = []
                while protocols.left():
                    found.append(protocols.take(protocols.byte()).decode("ascii", "replace"))
                alpn = tuple(found)
    return Hello(sni, alpn)


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated ClientHello")
        self.at += n
        return self.data[self.at - n:self.at]

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def byte(self) -> int:
        return self.int(1)

    def left(self) -> int:
        return len(self.data) - self.at


# --- identity -----------------------------------------------------------------------------------------------


class Identity:
    """The sidecar's workload certificate (cert-chain.pem, key.pem) and the mesh's root (root-cert.pem), as
    contexts: the server side asks for and verifies a client certificate; the client side verifies the server's
    chain (its SPIFFE id is checked against the endpoint's after the handshake)."""

    def __init__(self, directory: str, spiffe: str) -> None:
        self.spiffe = spiffe
        # Per client context and SNI: the last session, resumed by the next connection (no full handshake).
        self.http_sessions: dict[str, ssl.SSLSession] = {}
        self.tcp_sessions: dict[str, ssl.SSLSession] = {}
        chain, key, root = (os.path.join(directory, n) for n in ("cert-chain.pem", "key.pem", "root-cert.pem"))
        self.server = self._context(ssl.PROTOCOL_TLS_SERVER, chain, key, root)
        self.server.set_alpn_protocols([*sorted(ISTIO_HTTP_ALPN), *sorted(ISTIO_TCP_ALPN)])
        self.client_http = self._context(ssl.PROTOCOL_TLS_CLIENT, chain, key, root)
        self.client_http.set_alpn_protocols(CLIENT_ALPN_HTTP)
        self.client_tcp = self._context(ssl.PROTOCOL_TLS_CLIENT, chain, key, root)
        self.client_tcp.set_alpn_protocols(CLIENT_ALPN_TCP)

    @staticmethod
    def _context(protocol: int, chain: str, key: str, root: str) -> ssl.SSLContext:
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(chain, key)
        context.load_verify_locations(root)
        context.check_hostname = False  # the identity is a URI SAN, checked by the caller
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def origination_context(files: tuple[str, str, str], verify_host: str, skip_verify: bool) -> ssl.SSLContext:
    """A DestinationRule's SIMPLE or MUTUAL TLS: the server checked against caCertificates (its name against the
    SNI), a client certificate when one is given; without caCertificates (or with insecureSkipVerify) the server
    is not checked, as Envoy without a validation context."""
    ca, cert, key = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca and not skip_verify:
        context.load_verify_locations(ca)
        context.check_hostname = bool(verify_host)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


def credential_context(directory: str) -> ssl.SSLContext:
    """A gateway's HTTPS server (tls mode SIMPLE): the credential's tls.crt and tls.key, no client certificate
    asked for. ALPN offers http/1.1 only: netlab's connection manager does not speak h2 (Istio's gateways also
    offer h2)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.path.join(directory, TLS_CERT), os.path.join(directory, TLS_KEY))
    context.set_alpn_protocols(["http/1.1"])
    return context


def peer_spiffe(sslobj: ssl.SSLObject) -> str:
    cert = sslobj.getpeercert() or {}
    return next((value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"), "")


def failure_reason(error: BaseException) -> str:
    """A failed handshake's reason in Envoy's TLS_error form (no spaces: it is one access-log field)."""
    reason = getattr(error, "reason", None) or type(error).__name__
    return f"TLS_error:_{reason}"


class TlsFailed(Exception):
    """The upstream handshake failed, or the server is not who the endpoint says: args[0] is the reason."""


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a client sidecar speaks TLS to one endpoint: its context and SNI, the identity the server must present
    ("" for any), the session cache, and this sidecar's own SPIFFE id ("" when originating TLS to a server outside
    the mesh, which is no mTLS in Istio's metrics)."""

    context: ssl.SSLContext
    sni: str
    peer: str
    sessions: dict[str, ssl.SSLSession] | None
    local: str


def upstream_tls(sni: str, origination: ssl.SSLContext | None, mtls: bool, peer: str, identity: Identity | None,
                 http: bool) -> UpstreamTls | None:
    """TLS towards an endpoint (a route's SNI and origination, its host's mtls and identity), or None for plaintext:
    a DestinationRule's SIMPLE/MUTUAL origination, else the mesh's mTLS when this proxy has a certificate."""
    if not (sni and mtls):
        return None
    if origination is not None:
        return UpstreamTls(origination, sni, "", None, "")
    if identity is None:
        return None
    if http:
        return UpstreamTls(identity.client_http, sni, peer, identity.http_sessions, identity.spiffe)
    return UpstreamTls(identity.client_tcp, sni, peer, identity.tcp_sessions, identity.spiffe)


async def open_tls(loop: asyncio.AbstractEventLoop, sock: Any, tls: UpstreamTls, timeout: float) -> TlsStream:
    """TLS on a connected socket, as a client sidecar: the server must present `tls.peer` (a SPIFFE id, Istio's
    subjectAltNames check). The stream is returned handshaken, its inner protocol not attached yet."""
    done: asyncio.Future[BaseException | None] = loop.create_future()
    stream = TlsStream(tls.context, False, tls.sni, lambda s: done.done() or done.set_result(None),
                       lambda s, e: done.done() or done.set_result(e), tls.sessions)
    await loop.create_connection(lambda: stream, sock=sock)
    error = await asyncio.wait_for(done, timeout)
    identity = tls.peer
    if error is None and identity and stream.peer != identity:
        stream.abort()
        raise TlsFailed(f"TLS_error:_SAN_mismatch:{stream.peer or 'none'}")
    if error is not None:
        stream.abort()
        raise TlsFailed(failure_reason(error))
    return stream


# --- TLS over a transport -------------------------------------------------------------------------------------


class TlsStream(asyncio.Protocol):
    """The raw transport's protocol, and the transport its inner protocol writes to (plaintext both ways).
    `ready(stream)` runs once the handshake is done (the inner protocol is attached then), `failed(stream, error)`
    when it fails or the connection ends first."""

    def __init__(self, context: ssl.SSLContext, server_side: bool, sni: str | None,
                 ready: Callable[[TlsStream], None], failed: Callable[[TlsStream, BaseException], None],
                 sessions: dict[str, ssl.SSLSession] | None = None) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sessions = sessions if sni else None  # a client's session cache: resume, and keep the new ticket
        session = self.sessions.get(sni) if self.sessions is not None and sni else None
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side, server_hostname=sni,
                                       session=session)
        self.ready_cb, self.failed_cb = ready, failed
        self.transport: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None
        self.handshaken = False
        self.eof_sent = self.eof_seen = self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.peer = ""  # the peer's SPIFFE id, once verified

    # --- the raw side ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport, b"")

    def attach(self, transport: asyncio.BaseTransport, held: bytes) -> None:
        """Take over `transport`; `held`: bytes already read from it (an inspected ClientHello)."""
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._timeout)
        if held:
            self.data_received(held)
        else:
            self._handshake()

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.handshaken:
            self._handshake()
            if not self.handshaken:
                return
        self._read()

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError) as error:
            self._flush()
            return self._fail(error)
        self._flush()
        self.handshaken = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.peer = peer_spiffe(self.sslobj)
        self.ready_cb(self)

    def _read(self) -> None:
        inner = self.inner
        while inner is not None and not self.closed:
            try:
                data = self.sslobj.read(_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as error:  # a bad record: as a reset
                self.abort()
                inner.connection_lost(error)
                break
            if not data:  # close_notify (read() gives b"" for it): the peer's half-close
                if not self.eof_seen:
                    self.eof_seen = True
                    inner.eof_received()
                break
            if self.sessions is not None:  # TLS 1.3 tickets come after the handshake: kept once data flows
                self.sessions[self.sslobj.server_hostname or ""] = self.sslobj.session  # type: ignore[assignment]
                self.sessions = None
            inner.data_received(data)
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, error: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()
        cb, self.failed_cb = self.failed_cb, lambda _s, _e: None
        cb(self, error)

    def _timeout(self) -> None:
        self.timer = None
        if not self.handshaken:
            self._fail(TimeoutError("handshake timeout"))

    def eof_received(self) -> bool:
        if self.handshaken and self.inner is not None and not self.eof_seen:
            self.eof_seen = True  # a FIN without close_notify: treated as the peer's half-close
            self.inner.eof_received()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshaken:
            return self._fail(exc or ConnectionResetError("connection closed during the handshake"))
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # --- the transport its inner protocol sees ---

    def start(self, inner: asyncio.Protocol) -> None:
        """Attach the inner protocol (after `ready`) and hand it what has been decrypted already."""
        self.inner = inner
        inner.connection_made(self)  # type: ignore[arg-type]
        self._read()

    def write(self, data: bytes) -> None:
        if self.closed or self.eof_sent:
            return
        try:
            self.sslobj.write(data)
        except ssl.SSLError:
            return self.abort()
        self._flush()

    def write_eof(self) -> None:
        """close_notify: Envoy's TLS socket ends its side this way; the peer's sidecar reads it as a FIN."""
        if self.eof_sent or self.closed:
            return
        self.eof_sent = True
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):  # the peer's close_notify is not awaited
            self.sslobj.unwrap()
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.write_eof()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.sslobj
        return self.transport.get_extra_info(name, default) if self.transport is not None else default

    def set_protocol(self, protocol: asyncio.Protocol) -> None:
        self.inner = protocol

    def get_protocol(self) -> asyncio.Protocol | None:
        return self.inner
