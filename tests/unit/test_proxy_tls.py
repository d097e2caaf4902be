"""mTLS between two real sidecar workers over loopback, with certificates from the lab's CA: auto mTLS for HTTP and
TCP (a half-close crossing as close_notify), PERMISSIVE and STRICT inbound chains, identities in the access log and
metrics, and what must be refused without harming the worker: another CA's certificate, a wrong SAN, a garbage
ClientHello, a handshake left hanging."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from http_support import FQDN, VIP, http_app
from proxy_support import LOOPS, App, ProxyUnderTest, exchange
from test_proxy_http import entries, get

from netlab.mesh.build import ProxySpec, build_snapshot, snapshots
from netlab.mesh.registry import HTTP, TCP, MeshEndpoint, MeshPort, MeshService
from netlab.mesh.workload import spiffe_id
from netlab.model.loader import parse_resources, parse_scenario
from netlab.pki import LabCA
from netlab.plan import make_plan
from netlab.proxy import tls
from netlab.proxy.config import ProxyConfig
from netlab.proxy.routes import TlsChain
from netlab.proxy.tls import CLIENT_ALPN_HTTP, Hello, client_hello

STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two workload certificates from one CA, and one from another CA."""
    base = tmp_path_factory.mktemp("pki")
    ca, other = LabCA(base / "ca"), LabCA(base / "other")
    ca.create()
    other.create()
    uid, gid = os.getuid(), os.getgid()
    return {"client": ca.issue(base / "client", "default", "client", uid, gid),
            "web": ca.issue(base / "web", "default", "web", uid, gid),
            "stranger": other.issue(base / "stranger", "default", "client", uid, gid)}


def hello_bytes(sni: str, alpn: list[str]) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        context.wrap_bio(incoming, outgoing, server_hostname=sni).do_handshake()
    return outgoing.read()


def test_client_hello_gives_sni_and_alpn() -> None:
    data = hello_bytes(f"outbound_.80_._.{FQDN}", CLIENT_ALPN_HTTP)
    assert client_hello(data) == Hello(f"outbound_.80_._.{FQDN}", tuple(CLIENT_ALPN_HTTP))
    assert client_hello(data[:20]) is None  # wait for the rest of the record
    for garbage in (b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x01\x00\x04\x01\x00\x00\xff", b"\x16\x03\x01\xff\xff"):
        with pytest.raises(ValueError):
            client_hello(garbage + b"x" * 70000)


def server_config(app_port: int, protocol: str, certs: Path, resources: str = "") -> ProxyConfig:
    spec = ProxySpec("web-0", "web-0", "default", "127.0.0.1", "1.23", service_account="web", workload="web",
                     labels={"app": "web"})
    parsed = parse_resources(list(yaml.safe_load_all(resources)), documents=True) if resources else []
    return ProxyConfig(snapshot=build_snapshot(spec, [], {app_port: protocol}, resources=parsed), certs=str(certs))


def client_config(protocol: str, endpoint: tuple[str, int], certs: Path, identity: str) -> ProxyConfig:
    service = MeshService(FQDN, "default", (VIP,), (MeshPort(protocol.lower(), 80, protocol, endpoint[1]),),
                          (MeshEndpoint(endpoint[0], {80: endpoint[1]}, {"app": "web"}, "web-0",
                                        mtls_ports=frozenset({80}), identity=identity),))
    spec = ProxySpec("client", "client", "default", "127.0.0.1", "1.23", service_account="client",
                     workload="client", labels={"app": "client"})
    return ProxyConfig(snapshot=build_snapshot(spec, [service], {}), certs=str(certs))


@contextmanager
def pair(pki: dict[str, Path], app_addr: tuple[str, int], protocol: str = HTTP, resources: str = "",
         client_certs: str = "client", identity: str = spiffe_id("default", "web"), loop_name: str = "asyncio",
         ) -> Iterator[tuple[ProxyUnderTest, ProxyUnderTest]]:
    with ProxyUnderTest(server_config(app_addr[1], protocol, pki["web"], resources), loop_name) as server:
        server.dst = app_addr
        with ProxyUnderTest(client_config(protocol, server.inbound, pki[client_certs], identity),
                            loop_name) as client:
            client.dst = (VIP, 80)
            yield client, server


def metric_lines(p: ProxyUnderTest, name: str) -> list[str]:
    text = urllib.request.urlopen(f"http://{p.stats_addr[0]}:{p.stats_addr[1]}/stats/prometheus", timeout=5).read()
    return [line for line in text.decode().splitlines() if line.startswith(name + "{")]


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_http_over_auto_mtls(pki: dict[str, Path], loop_name: str) -> None:
    with http_app() as app, pair(pki, app.addr, loop_name=loop_name) as (client, server):
        for _ in range(2):  # the second request reuses the pooled TLS connection
            response, data = get(client.outbound, "/", headers={"Host": "web"})
            assert response.status == 200 and json.loads(data)["peer"] == "127.0.0.6"  # from the server sidecar
        (line, _) = entries(server, 2)
        assert line["requested_server_name"] == f"outbound_.80_._.{FQDN}"
        (inbound,) = metric_lines(server, "istio_requests_total")
        (outbound,) = metric_lines(client, "istio_requests_total")
    assert 'connection_security_policy="mutual_tls"' in inbound
    assert 'source_principal="spiffe://cluster.local/ns/default/sa/client"' in inbound
    assert 'destination_principal="spiffe://cluster.local/ns/default/sa/web"' in outbound


def test_tcp_over_auto_mtls_keeps_the_half_close(pki: dict[str, Path], loop_name: str) -> None:
    app = App("127.0.0.1", kind="count")  # reads to EOF, then answers: only a half-close that crossed ends it
    try:
        with pair(pki, app.addr, TCP, loop_name=loop_name) as (client, server):
            assert exchange(client.outbound, b"x" * 100_000) == ("reply", b"got 100000")
            (line,) = entries(server, 1)
            assert (line["requested_server_name"], line["bytes_received"]) == (f"outbound_.80_._.{FQDN}", "100000")
            (opened,) = metric_lines(server, "istio_tcp_connections_opened_total")
            assert 'connection_security_policy="mutual_tls"' in opened
            # Many short connections: each socket handed over to TLS is released exactly once (a stale socket
            # object closing a reused fd number broke connections under uvloop).
            for i in range(100):
                assert exchange(client.outbound, b"%d" % i) == ("reply", b"got %d" % len(b"%d" % i))
    finally:
        app.close()


def test_strict_resets_plaintext_with_no_filter_chain(pki: dict[str, Path]) -> None:
    with http_app() as app, pair(pki, app.addr, resources=STRICT) as (client, server):
        assert exchange(server.inbound, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")[0] == "reset"
        response, _ = get(client.outbound, "/", headers={"Host": "web"})  # mTLS still gets in
        assert response.status == 200
        refused, _ok = entries(server, 2)
    assert (refused["cluster"], refused["response_flags"], refused["response_code_details"]) == (
        "-", "NR", "filter_chain_not_found")


@pytest.mark.parametrize(("client_certs", "identity", "reason"), [
    ("stranger", spiffe_id("default", "web"), "TLS_error"),  # another CA: the server refuses the client
    ("client", spiffe_id("default", "someone-else"), "TLS_error:_SAN_mismatch"),  # not the endpoint's identity
])
def test_a_bad_peer_fails_the_handshake(pki: dict[str, Path], client_certs: str, identity: str,
                                        reason: str) -> None:
    with http_app() as app, pair(pki, app.addr, client_certs=client_certs, identity=identity) as (client, _s):
        response, body = get(client.outbound, "/", headers={"Host": "web"})
        assert response.status == 503 and b"TLS_error" in body
        (line,) = entries(client, 1)
        assert line["upstream_transport_failure_reason"].startswith(reason) and "UF" in line["response_flags"]


def test_garbage_and_hanging_handshakes_leave_the_worker_serving(pki: dict[str, Path]) -> None:
    with http_app() as app, pair(pki, app.addr) as (client, server):
        # A ClientHello that is not one, then a real one and nothing more: both closed, the worker unharmed.
        assert exchange(server.inbound, b"\x16\x03\x01\x00\x10" + b"\xff" * 16, timeout=3)[0] in ("reset", "closed")
        hanging = socket.create_connection(server.inbound)
        hanging.sendall(hello_bytes("x", ["istio-http/1.1"]))  # a handshake begun, never finished
        response, _ = get(client.outbound, "/", headers={"Host": "web"})
        assert response.status == 200
        hanging.close()


ALLOW_NOTHING = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"""


def test_tcp_authorization_closes_mtls_and_plaintext_connections(pki: dict[str, Path]) -> None:
    app = App("127.0.0.1", kind="count")
    try:
        with pair(pki, app.addr, TCP, resources=ALLOW_NOTHING) as (client, server):
            assert exchange(client.outbound, b"over mTLS")[0] in ("reset", "closed")
            assert exchange(server.inbound, b"in plaintext")[0] in ("reset", "closed")
            lines = entries(server, 2)
        assert [e["connection_termination_details"] for e in lines] == ["rbac_access_denied_matched_policy[none]"] * 2
        assert app.peers == []  # nothing reached the app
    finally:
        app.close()


def test_an_expired_client_certificate_is_refused(pki: dict[str, Path], tmp_path: Path) -> None:
    ca = LabCA(pki["client"].parent / "ca")
    expired = ca.issue(tmp_path / "expired", "default", "client", os.getuid(), os.getgid(), ttl=timedelta(seconds=1))
    time.sleep(1.5)
    with http_app() as app, pair({**pki, "expired": expired}, app.addr, client_certs="expired") as (client, server):
        response, _ = get(client.outbound, "/", headers={"Host": "web"})
        assert response.status == 503
        (line,) = entries(server, 1)  # the server's side of the failed handshake says why
        assert line["connection_termination_details"].startswith("downstream_tls_error:")


def test_a_handshake_left_hanging_is_closed_by_the_timeout(pki: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT", 0.5)
    with http_app() as app, pair(pki, app.addr) as (_client, server):
        with socket.create_connection(server.inbound, timeout=5) as hanging:
            hanging.sendall(hello_bytes("x", ["istio-http/1.1"]))  # and never the rest of the handshake
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                while hanging.recv(65536):
                    pass
            assert time.monotonic() - started < 3
        (line,) = entries(server, 1)
        assert line["connection_termination_details"] == "downstream_tls_error:_TimeoutError"


def test_client_sidecar_resumes_its_tls_sessions(pki: dict[str, Path]) -> None:
    app = App("127.0.0.1", kind="count")
    try:
        with pair(pki, app.addr, TCP) as (client, _server):
            resumed: list[bool] = []
            for _ in range(3):
                with socket.create_connection(client.outbound, timeout=5) as s:
                    s.sendall(b"x")
                    time.sleep(0.1)
                    resumed += client.call(lambda: [c.resumed for c in client.worker.contexts[1].active])
                    s.shutdown(socket.SHUT_WR)
                    assert s.recv(100) == b"got 1"
        assert resumed == [False, True, True]  # the first handshake is full, the next ones resume its session
    finally:
        app.close()


def server_certificate(ca_dir: Path, host: str, out: Path) -> tuple[str, str]:
    """A server certificate for `host` (DNS SAN) signed by the lab CA in ca_dir: (cert, key) paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = x509.load_pem_x509_certificate((ca_dir / "root-cert.pem").read_bytes())
    root_key = serialization.load_pem_private_key((ca_dir / "root-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=True)
            .sign(root_key, hashes.SHA256()))  # type: ignore[arg-type]
    out.mkdir(exist_ok=True)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return str(out / "cert.pem"), str(out / "key.pem")


@pytest.mark.parametrize("mode", ["SIMPLE", "MUTUAL"])
def test_destination_rule_originates_tls(pki: dict[str, Path], tmp_path: Path, mode: str) -> None:
    """The app speaks plain HTTP to its sidecar; a DestinationRule has the sidecar originate TLS to an HTTPS
    server (its name checked against the SNI), with the client certificate under MUTUAL."""
    ca_dir = pki["client"].parent / "ca"
    cert, key = server_certificate(ca_dir, "api.example.com", tmp_path / "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if mode == "MUTUAL":
        context.load_verify_locations(str(ca_dir / "root-cert.pem"))
        context.verify_mode = ssl.CERT_REQUIRED
    client_files = (f"clientCertificate: {pki['client']}/cert-chain.pem, privateKey: {pki['client']}/key.pem, "
                    if mode == "MUTUAL" else "")
    rule = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api.example.com
  trafficPolicy: {{tls: {{mode: {mode}, {client_files}caCertificates: {ca_dir}/root-cert.pem}}}}
"""
    with http_app() as app:
        app.socket = context.wrap_socket(app.socket, server_side=True)
        service = MeshService("api.example.com", "default", ("10.96.0.99",), (MeshPort("http", 80, HTTP, 0),),
                              (MeshEndpoint(app.addr[0], {80: app.addr[1]}),), external=True)
        spec = ProxySpec("client", "client", "default", "127.0.0.1", "1.23")
        resources = parse_resources(list(yaml.safe_load_all(rule)), documents=True)
        with ProxyUnderTest(ProxyConfig(snapshot=build_snapshot(spec, [service], {}, resources=resources),
                                        certs=str(pki["client"]))) as client:
            client.dst = ("10.96.0.99", 80)
            response, data = get(client.outbound, "/", headers={"Host": "api.example.com"})
    assert response.status == 200 and json.loads(data)["method"] == "GET"


# --- a gateway's HTTPS servers (tls mode SIMPLE) ------------------------------------------------------------------


def test_tls_chains_are_picked_by_sni_as_envoy_matches_server_names() -> None:
    exact, wildcard, longer, anything = (TlsChain(frozenset(), True, server_names=names) for names in
                                         (("www.example.com",), ("*.example.com",), ("*.api.example.com",), ()))
    chains = (anything, wildcard, longer, exact)
    assert TlsChain.pick(chains, "www.example.com", ()) is exact
    assert TlsChain.pick(chains, "v1.api.example.com", ()) is longer  # the longest suffix
    assert TlsChain.pick(chains, "shop.example.com", ()) is wildcard
    assert TlsChain.pick(chains, "example.org", ()) is anything and TlsChain.pick(chains, "", ()) is anything
    assert TlsChain.pick((exact,), "other.example.com", ()) is None  # no chain: the connection is reset


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, sni: str) -> ssl.SSLObject:
    """A real TLS handshake between two contexts through memory buffers; returns the client's side."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=sni)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (tls_client, tls_server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            tls_client.do_handshake()
            return tls_client
    raise AssertionError("the handshake did not finish")


def test_a_gateway_credential_the_lab_made_serves_its_hosts(tmp_path: Path) -> None:
    """The lab's gateway CA signs a certificate for the server's hosts into the proxy's credentials/NAME/; the
    HTTPS chain of the Dispatch serves it, and a client that trusts that CA (curl --cacert) accepts it for those
    names only."""
    from netlab.proxy.dispatch import Dispatch

    ca = LabCA(tmp_path / "gateway-ca", organization="netlab gateway credentials")
    ca.create()
    ca.issue_server(tmp_path / "certs" / "credentials" / "www-credential", ["www.example.com", "*.api.example.com"],
                    os.getuid(), os.getgid())
    scenario = parse_scenario({"name": "gw", "gateways": {"istio-ingressgateway": {}}, "pods": {"web": {}}, "istio": [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
              "hosts": ["www.example.com", "*.api.example.com"],
              "tls": {"mode": "SIMPLE", "credentialName": "www-credential"}}]}}]})
    snapshot = snapshots(make_plan(scenario), scenario.istio, 1)["istio-system/istio-ingressgateway-0"]
    route = Dispatch(snapshot, str(tmp_path / "certs")).gateway(("10.244.0.10", 8443))
    client = ssl.create_default_context(cafile=str(ca.root_path))
    client.set_alpn_protocols(["h2", "http/1.1"])
    for name in ("www.example.com", "v1.api.example.com"):
        chain = TlsChain.pick(route.tls, name, ("h2", "http/1.1"))
        assert chain is not None and chain.context is not None and chain.http is not None
        session = handshake(chain.context, client, name)
        assert session.selected_alpn_protocol() == "http/1.1"  # netlab's connection manager speaks HTTP/1.1
        assert dict(x[0] for x in session.getpeercert()["subject"])["commonName"] == "www.example.com"
    assert TlsChain.pick(route.tls, "other.example.com", ()) is None
    chain = TlsChain.pick(route.tls, "www.example.com", ())
    assert chain is not None and chain.context is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(chain.context, client, "api.example.com")  # *.api.example.com does not cover it
    with pytest.raises(FileNotFoundError):  # a credential not written: the reload is refused
        Dispatch(snapshot, str(tmp_path / "nowhere"))
