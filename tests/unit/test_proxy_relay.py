"""The forwarding core over loopback, under asyncio and uvloop: integrity, half-close, resets, timeouts, loop guard."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from proxy_support import LOOPS, ProxyUnderTest, app, exchange, make_config, unanswered

from netlab.proxy.relay import Connection, Side


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


def _proxy(loop_name: str, **kw: object) -> ProxyUnderTest:
    return ProxyUnderTest(make_config(**kw), loop_name)  # type: ignore[arg-type]


@contextlib.contextmanager
def _raw_upstream(loop_name: str, **kw: object) -> Iterator[tuple[ProxyUnderTest, socket.socket]]:
    """The proxy forwarding to a bare listening socket that the test accepts on and drives by hand. Its port is
    declared TCP: on an undeclared port the proxy would wait for the client's first bytes (protocol sniffing), and
    these tests let the server speak first."""
    with socket.create_server(("127.0.0.1", 0)) as srv, \
            _proxy(loop_name, declared_ports={srv.getsockname()[1]}, **kw) as p:
        p.dst = srv.getsockname()
        yield p, srv


def _wait(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_byte_integrity_both_ways_large(loop_name: str) -> None:
    payload = os.urandom(8 * 1024 * 1024 + 123)
    with app("127.0.0.1", kind="echo") as a, _proxy(loop_name) as p:
        p.dst = a.addr
        got = bytearray()
        with socket.create_connection(p.inbound, timeout=10) as s:
            # Write from a thread while reading here: exercises flow control in both directions.
            t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
            t.start()
            while chunk := s.recv(1 << 20):
                got += chunk
            t.join()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["flags"], e["details"]) == ("-", "-")
        assert (e["bytes_received"], e["bytes_sent"]) == (str(len(payload)), str(len(payload)))


def test_declared_port_matrix_on_loopback(loop_name: str) -> None:
    """1.9 goes to 127.0.0.1:port, 1.10 to the original destination from 127.0.0.6 (127.0.0.2 plays the pod IP)."""
    with app("127.0.0.1") as lo:
        port = lo.addr[1]
        with app("127.0.0.2", port) as eth0:
            for istio, expect_lo, expect_eth0 in (("1.9", "pong from 127.0.0.1", None),
                                                  ("1.10", None, "pong from 127.0.0.6")):
                with _proxy(loop_name, istio=istio, declared_ports=frozenset({port})) as p:
                    p.dst = ("127.0.0.2", port)
                    outcome, data = exchange(p.inbound)
                    expected = expect_lo or expect_eth0
                    assert (outcome, data.decode()) == ("reply", expected)
    # Only the pod-IP app: 1.9 is reset. 127.0.0.1:port is held bound but not listening, so that no other
    # process on this host can be listening there.
    for _ in range(50):
        with app("127.0.0.2") as eth0, socket.socket() as hold:
            try:
                hold.bind(("127.0.0.1", eth0.addr[1]))
            except OSError:
                continue  # that port is busy on 127.0.0.1 on this host: pick another
            with _proxy(loop_name, istio="1.9", declared_ports=frozenset({eth0.addr[1]})) as p:
                p.dst = eth0.addr
                assert exchange(p.inbound)[0] == "reset"
            return
    pytest.fail("no free port pair on 127.0.0.1/127.0.0.2")


def test_undeclared_port_passthrough_from_127_0_0_6_in_1_9(loop_name: str) -> None:
    with app("127.0.0.2") as a, _proxy(loop_name, istio="1.9") as p:
        p.dst = a.addr
        assert exchange(p.inbound) == ("reply", b"pong from 127.0.0.6")
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["cluster"], e["flags"], e["details"]) == ("InboundPassthroughClusterIpv4", "-", "-")
        assert e["upstream_local"].startswith("127.0.0.6:")


def test_outbound_passthrough_keeps_default_source(loop_name: str) -> None:
    with app("127.0.0.2") as a, _proxy(loop_name) as p:
        p.dst = a.addr
        assert exchange(p.outbound) == ("reply", b"pong from 127.0.0.1")
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["direction"], e["cluster"], e["flags"], e["details"]) == ("outbound", "PassthroughCluster", "-", "-")


def test_half_close_both_directions(loop_name: str) -> None:
    """Client half-closes and still reads; the app half-closes and still reads what the client sends later."""
    with _raw_upstream(loop_name) as (p, srv):
        c = socket.create_connection(p.inbound, timeout=5)
        conn, _ = srv.accept()
        conn.settimeout(5)
        with c, conn:
            # App -> client, then the app half-closes: the client sees EOF but can still send.
            conn.sendall(b"hello")
            conn.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"hello"
            assert c.recv(100) == b""
            c.sendall(b"after app EOF")
            assert conn.recv(100) == b"after app EOF"
            # Client half-closes too: the app sees EOF, then both are closed.
            c.shutdown(socket.SHUT_WR)
            assert conn.recv(100) == b""
        _wait(lambda: len(p.log_lines()) == 1)


def test_both_sockets_have_tcp_nodelay(loop_name: str) -> None:
    """Without it, Nagle holds small writes back behind delayed ACKs (a 43 ms p90 was once the result)."""
    with _raw_upstream(loop_name) as (p, srv), socket.create_connection(p.inbound, timeout=5):
        conn, _ = srv.accept()
        with conn:
            def flags() -> list[int] | None:
                (cx,) = p.worker.contexts[0].active
                if cx.u is None or cx.u.transport is None:  # accepted by the kernel before the loop got to it
                    return None
                return [side.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for side in (cx.d, cx.u)]
            _wait(lambda: p.call(flags) is not None)
            assert all(p.call(flags))  # type: ignore[arg-type]


def test_finished_connections_leave_no_reference_cycles(loop_name: str) -> None:
    """A connection and its sides refer to each other: unlinked when it ends, they are freed at once instead of
    by the cycle collector (7k instructions per connection)."""
    with app("127.0.0.1") as a, _proxy(loop_name) as p:
        p.dst = a.addr
        assert exchange(p.inbound)[0] == "reply"  # warm-up
        _wait(lambda: len(p.log_lines()) == 1)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
        try:
            assert exchange(p.inbound)[0] == "reply"
            _wait(lambda: len(p.log_lines()) == 2)
            p.call(lambda: None)  # the loop has left the callback that finished the connection
            gc.collect()
            cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, (Connection, Side))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert cyclic == []


def test_client_half_close_then_app_replies(loop_name: str) -> None:
    with app("127.0.0.1", kind="count") as a, _proxy(loop_name) as p:
        p.dst = a.addr  # the app answers only once it has seen the client's FIN
        assert exchange(p.inbound, b"x" * 100000) == ("reply", b"got 100000")


def test_refused_upstream_resets_client_with_uf(loop_name: str) -> None:
    with _proxy(loop_name, istio="1.10", declared_ports=frozenset({1})) as p:
        p.dst = ("127.0.0.1", 1)
        with socket.create_connection(p.inbound, timeout=5) as s:
            s.sendall(b"ping")
            with pytest.raises(ConnectionResetError):
                s.recv(100)
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        # As Envoy's tcp_proxy logs a refused connect: its one attempt used up (URX), the socket error's errno.
        assert (e["cluster"], e["flags"]) == ("inbound|1||", "UF,URX")
        assert e["upstream_transport_failure_reason"] == "delayed_connect_error:_111"
        assert e["upstream_host"] == "127.0.0.1:1" and e["upstream_local"] == "-"
        assert p.stats.total("inbound|1||", 2) == 1  # upstream_cx_connect_fail


def test_failed_connects_leave_no_socket_object_that_closes_a_reused_fd(loop_name: str) -> None:
    """uvloop attaches the upstream socket object after closing the fd when a connect fails fast; collected later,
    it would close whatever socket had reused that fd number (here: sockets of this process opened afterwards)."""
    with _proxy(loop_name, connect_timeout=5) as p:
        p.dst = ("127.0.0.1", 1)
        for _ in range(20):
            assert exchange(p.inbound)[0] == "reset"
        _wait(lambda: len(p.log_lines()) == 20)
        fresh = [socket.socket() for _ in range(40)]  # take the freed fd numbers
        try:
            p.call(gc.collect)
            for s in fresh:
                os.fstat(s.fileno())  # EBADF if something closed it behind its back
        finally:
            for s in fresh:
                s.close()


def test_connect_timeout_resets_client(loop_name: str) -> None:
    with unanswered() as dst, _proxy(loop_name, connect_timeout=0.5) as p:
        p.dst = dst
        start = time.monotonic()
        outcome, _ = exchange(p.inbound)
        assert outcome == "reset"
        assert 0.4 < time.monotonic() - start < 3
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["flags"], e["connection_termination_details"]) == ("UF,URX", "connect_timeout")


def test_upstream_reset_resets_client(loop_name: str) -> None:
    with _raw_upstream(loop_name) as (p, srv):
        with socket.create_connection(p.inbound, timeout=5) as c:
            c.sendall(b"hi")
            conn, _ = srv.accept()
            assert conn.recv(10) == b"hi"
            conn.sendall(b"hello")
            assert c.recv(5) == b"hello"
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            with pytest.raises(ConnectionResetError):
                c.recv(100)
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["flags"], e["details"]) == ("UC", "upstream_reset:ECONNRESET(104)")
        assert (e["bytes_received"], e["bytes_sent"]) == ("2", "5")  # as read before the reset


def test_client_reset_reaches_app(loop_name: str) -> None:
    with _raw_upstream(loop_name) as (p, srv):
        c = socket.create_connection(p.inbound, timeout=5)
        c.sendall(b"hi")
        conn, _ = srv.accept()
        conn.settimeout(5)
        with conn:
            assert conn.recv(10) == b"hi"
            conn.sendall(b"hello")
            assert c.recv(5) == b"hello"
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            with pytest.raises(ConnectionResetError):
                conn.recv(10)
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["flags"], e["details"]) == ("DC", "downstream_reset:ECONNRESET(104)")
        assert (e["bytes_received"], e["bytes_sent"]) == ("2", "5")


def test_loop_guard_refuses_own_listener_and_recaptured_127_0_0_6(loop_name: str,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    with app("127.0.0.2") as a, _proxy(loop_name) as p:
        p.dst = p.inbound  # original destination is the proxy itself
        assert exchange(p.inbound)[0] == "reset"
        p.dst = a.addr
        with socket.socket() as s:  # a connection from 127.0.0.6 reaching 15006 was captured twice
            s.bind(("127.0.0.6", 0))
            s.settimeout(5)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                s.connect(p.inbound)
                s.sendall(b"ping")
                s.recv(10)
        assert a.peers == []  # nothing was forwarded
        _wait(lambda: len(p.log_lines()) == 2)
        own, again = p.log_entries()
        assert (own["cluster"], own["flags"]) == ("BlackHoleCluster", "NR")
        assert own["details"] == "loop_detected:own_listener"
        assert (again["cluster"], again["flags"], again["details"]) == (
            "BlackHoleCluster", "NR", "loop_detected:127.0.0.6_captured_again")
        assert again["direction"] == "inbound"
    err = capfd.readouterr().err
    assert "is this proxy's own listener" in err and "'-o lo -s 127.0.0.6/32 -j RETURN' is missing" in err


def test_idle_timeout_closes(loop_name: str) -> None:
    with _raw_upstream(loop_name, idle_timeout=0.4) as (p, srv):
        with socket.create_connection(p.inbound, timeout=5) as c:
            conn, _ = srv.accept()
            with conn:
                start = time.monotonic()
                assert c.recv(10) == b""  # closed by the proxy, FIN
                assert 0.3 < time.monotonic() - start < 3
        _wait(lambda: len(p.log_lines()) == 1)
        (e,) = p.log_entries()
        assert (e["flags"], e["connection_termination_details"]) == ("-", "idle_timeout")


def test_many_concurrent_connections(loop_name: str) -> None:
    n = 200
    with app("127.0.0.1", kind="echo") as a, _proxy(loop_name) as p:
        p.dst = a.addr
        results: list[bool] = []

        def one(i: int) -> None:
            data = os.urandom(20000 + i)
            ok = exchange(p.inbound, data, timeout=20)
            results.append(ok == ("reply", data))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) == n
        _wait(lambda: p.stats.total("InboundPassthroughClusterIpv4", 0) == n)
        _wait(lambda: p.stats.total("InboundPassthroughClusterIpv4", 1) == 0)  # none active
