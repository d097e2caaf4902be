"""The control plane (pure): snapshots per sidecar, checked against what istiod would send for the same lab.

Expected names and shapes are hand-checked against Istio's sources (shared/istio/MESH-FACTS.md §1, §2, §10):
listener VIP_PORT / 0.0.0.0_PORT / virtualOutbound / virtualInbound, chains virtualOutbound-blackhole,
virtualOutbound-catchall-tcp, virtualInbound-blackhole, 0.0.0.0_TARGETPORT, virtualInbound(-catchall-http), clusters
outbound|PORT||FQDN, inbound|PORT||, PassthroughCluster, BlackHoleCluster, InboundPassthroughCluster(Ipv4).
"""

from __future__ import annotations

import re

import pytest

from netlab.mesh.build import snapshots, standalone_snapshot
from netlab.mesh.gateway import credential_hosts
from netlab.mesh.registry import AUTO, HTTP, TCP, UDP, protocol_of
from netlab.mesh.types import Snapshot, loads
from netlab.model.loader import parse_resources, parse_scenario
from netlab.model.problems import ScenarioError
from netlab.plan import make_plan

PONG = {"kind": "pong", "listen": "0.0.0.0:9080"}
FQDN = "reviews.default.svc.cluster.local"


def lab(istio: str = "1.22", mode: str = "ALLOW_ANY", resources: list | None = None, **extra: object) -> dict:
    return {
        "name": "t",
        "meshConfig": {"outboundTrafficPolicy": {"mode": mode}},
        "namespaces": {"shop": {}},
        "pods": {
            "client": {"sidecar": {"istio": istio}, "labels": {"app": "client"}},
            "reviews": {"replicas": 2, "labels": {"app": "reviews"}, "sidecar": {"istio": istio}, "app": PONG},
            "shop/cart-v1": {"labels": {"app": "cart"}, "sidecar": {"istio": istio}, "app": PONG},
        },
        "services": {
            "reviews": {"selector": {"app": "reviews"}, "ports": [{"name": "tcp-reviews", "port": 9080},
                                                                  {"name": "http-web", "port": 80,
                                                                   "targetPort": 9080}]},
            "ratings": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 80, "targetPort": 9080}]},
            "shop/cart": {"selector": {"app": "cart"}, "port": 7000, "target_port": 9080},
        },
        "external": {"web": {"address": "198.51.100.10"}},
        "istio": resources or [],
        **extra,
    }


def snap(data: dict, pod: str = "client", ready: frozenset[str] | None = None) -> Snapshot:
    scenario = parse_scenario(data)
    return snapshots(make_plan(scenario), scenario.istio, 1, ready)[pod]


def chains(s: Snapshot, listener: str) -> list[tuple[str, str]]:
    found = next(x for x in s.listeners if x.name == listener)
    return [(c.name, c.cluster or c.route or c.inline_route) for c in found.filter_chains]


def test_a_client_sidecar_knows_every_service() -> None:
    s = snap(lab())
    plan = make_plan(parse_scenario(lab()))
    vip, cart_vip = str(plan.services["reviews"].ip), str(plan.services["shop/cart"].ip)
    names = [x.name for x in s.listeners]
    assert names == ["virtualOutbound", f"{vip}_9080", f"{cart_vip}_7000", "0.0.0.0_80", "virtualInbound",
                     "0.0.0.0_15090", "0.0.0.0_15021"]
    assert chains(s, "virtualOutbound") == [("virtualOutbound-blackhole", "BlackHoleCluster"),
                                            ("virtualOutbound-catchall-tcp", "PassthroughCluster")]
    assert chains(s, f"{vip}_9080") == [("", f"outbound|9080||{FQDN}")]  # tcp-*: tcp_proxy only
    assert chains(s, f"{cart_vip}_7000") == [("", "cart.shop.svc.cluster.local:7000"),  # unnamed: sniffed + TCP
                                             ("", "outbound|7000||cart.shop.svc.cluster.local")]
    assert chains(s, "0.0.0.0_80") == [("", "80"), ("PassthroughFilterChain", "PassthroughCluster")]  # route "80"
    route = s.route("80")
    assert route is not None
    assert [v.name for v in route.virtual_hosts] == ["ratings.default.svc.cluster.local:80", f"{FQDN}:80",
                                                    "allow_any"]
    assert route.virtual_hosts[1].domains == (FQDN, "reviews", "reviews.default.svc", "reviews.default", vip)
    cluster = s.cluster(f"outbound|9080||{FQDN}")
    assert cluster is not None and (cluster.type, cluster.lb_policy, cluster.connect_timeout) == ("EDS",
                                                                                                  "LEAST_REQUEST", 10)
    assert [(e.address, e.port, e.pod) for e in cluster.endpoints] == [
        (str(plan.pods["reviews-0"].ip), 9080, "reviews-0"), (str(plan.pods["reviews-1"].ip), 9080, "reviews-1")]
    assert s.cluster(f"outbound|80||{FQDN}").endpoints[0].port == 9080  # type: ignore[union-attr]
    assert s.node.id == f"sidecar~{plan.pods['client'].ip}~client.default~default.svc.cluster.local"


def test_the_inbound_side_of_a_selected_pod() -> None:
    """PERMISSIVE (no PeerAuthentication): mTLS chains by ALPN, the plaintext chains, the client's own TLS."""
    s = snap(lab(), "reviews-0")
    assert tls_chains(s) == [
        ("virtualInbound-blackhole", "", (), False, "BlackHoleCluster"),
        # three service ports target 9080: the first (tcp-reviews) decides
        ("0.0.0.0_9080", "tls", ("istio-peer-exchange", "istio"), True, "inbound|9080||"),
        ("0.0.0.0_9080", "raw_buffer", (), False, "inbound|9080||"),
        ("0.0.0.0_9080", "tls", (), False, "inbound|9080||"),
        ("virtualInbound", "tls", ("istio-http/1.0", "istio-http/1.1", "istio-h2"), True,
         "InboundPassthroughClusterIpv4"),  # 1.22: one per family still
        ("virtualInbound", "tls", ("istio-peer-exchange", "istio"), True, "InboundPassthroughClusterIpv4"),
        ("virtualInbound-catchall-http", "raw_buffer", ("http/1.1", "h2c"), False, "InboundPassthroughClusterIpv4"),
        ("virtualInbound", "raw_buffer", (), False, "InboundPassthroughClusterIpv4"),
        ("virtualInbound", "tls", (), False, "InboundPassthroughClusterIpv4"),
    ]
    inbound = s.cluster("inbound|9080||")
    assert inbound is not None and (inbound.type, inbound.upstream_bind) == ("ORIGINAL_DST", "127.0.0.6")
    cart = snap(lab(), "shop/cart-v1")  # an unnamed port: sniffed, HTTP and TCP chains
    assert [c[1:4] for c in tls_chains(cart) if c[0] == "0.0.0.0_9080"] == [
        ("tls", ("istio-http/1.0", "istio-http/1.1", "istio-h2"), True),
        ("tls", ("istio-peer-exchange", "istio"), True),
        ("raw_buffer", ("http/1.1", "h2c"), False), ("raw_buffer", (), False), ("tls", (), False)]
    route = cart.route("inbound|9080||")
    assert route is not None and route.virtual_hosts[0].name == "inbound|http|9080"


def tls_chains(s: Snapshot) -> list[tuple[str, str, tuple[str, ...], bool, str]]:
    found = next(x for x in s.listeners if x.name == "virtualInbound")
    return [(c.name, c.match.transport_protocol, c.match.application_protocols, c.tls, c.cluster or c.route)
            for c in found.filter_chains]


@pytest.mark.parametrize(("istio", "passthrough", "lb", "inbound_type", "domains_with_port"), [
    ("1.9", "InboundPassthroughClusterIpv4", "ROUND_ROBIN", "STATIC", True),
    ("1.10", "InboundPassthroughClusterIpv4", "ROUND_ROBIN", "ORIGINAL_DST", True),
    ("1.13", "InboundPassthroughClusterIpv4", "ROUND_ROBIN", "ORIGINAL_DST", True),
    ("1.14", "InboundPassthroughClusterIpv4", "LEAST_REQUEST", "ORIGINAL_DST", True),
    ("1.16", "InboundPassthroughClusterIpv4", "LEAST_REQUEST", "ORIGINAL_DST", False),
    ("1.23", "InboundPassthroughCluster", "LEAST_REQUEST", "ORIGINAL_DST", False),
])
def test_what_changes_between_releases(istio: str, passthrough: str, lb: str, inbound_type: str,
                                       domains_with_port: bool) -> None:
    s = snap(lab(istio), "reviews-0")
    assert s.cluster(passthrough) is not None
    assert s.cluster(f"outbound|9080||{FQDN}").lb_policy == lb  # type: ignore[union-attr]
    inbound = s.cluster("inbound|9080||")
    assert inbound is not None and inbound.type == inbound_type
    if inbound_type == "STATIC":  # 1.9 forwarded to localhost
        assert [(e.address, e.port) for e in inbound.endpoints] == [("127.0.0.1", 9080)]
    route = s.route("80")
    assert route is not None and ("reviews:80" in route.virtual_hosts[1].domains) == domains_with_port


def test_registry_only_sends_unknown_destinations_to_the_blackhole() -> None:
    s = snap(lab(mode="REGISTRY_ONLY"))
    assert chains(s, "virtualOutbound")[1] == ("virtualOutbound-catchall-tcp", "BlackHoleCluster")
    block = s.route("80").virtual_hosts[-1]  # type: ignore[union-attr]
    assert (block.name, block.domains, block.routes[0].direct_response) == ("block_all", ("*",), 502)


def test_a_pod_that_is_not_ready_sends_no_endpoint() -> None:
    s = snap(lab(), ready=frozenset({"client", "reviews-1"}))
    assert [e.pod for e in s.cluster(f"outbound|9080||{FQDN}").endpoints] == ["reviews-1"]  # type: ignore[union-attr]


SE = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "web"}}


def test_service_entries() -> None:
    static = {**SE, "spec": {"hosts": ["web.example.com"], "addresses": ["198.51.100.10"], "resolution": "STATIC",
                             "ports": [{"number": 80, "name": "tcp-web", "protocol": "TCP"}],
                             "endpoints": [{"address": "198.51.100.10"}]}}
    dns = {**SE, "metadata": {"name": "dns"}, "spec": {"hosts": ["api.example.com"], "resolution": "DNS",
                                                        "ports": [{"number": 8443, "name": "tls", "protocol": "TLS"}],
                                                        "endpoints": [{"address": "web"}]}}
    none = {**SE, "metadata": {"name": "any"}, "spec": {"hosts": ["*.example.org"], "resolution": "NONE",
                                                         "ports": [{"number": 9000, "name": "tcp"}]}}
    s = snap(lab(mode="REGISTRY_ONLY", resources=[static, dns, none]))
    assert chains(s, "198.51.100.10_80") == [("", "outbound|80||web.example.com")]
    assert [(e.address, e.port) for e in s.cluster("outbound|80||web.example.com").endpoints] == [  # type: ignore
        ("198.51.100.10", 80)]
    dns_cluster = s.cluster("outbound|8443||api.example.com")
    assert dns_cluster is not None and dns_cluster.type == "STRICT_DNS"
    assert [e.address for e in dns_cluster.endpoints] == ["198.51.100.10"]  # the lab's name `web`, resolved
    assert chains(s, "0.0.0.0_8443") == [("", "outbound|8443||api.example.com")]  # no address: by port
    assert s.cluster("outbound|9000||*.example.org").type == "ORIGINAL_DST"  # type: ignore[union-attr]


def test_export_to_and_sidecar_scoping() -> None:
    private = {**SE, "metadata": {"name": "private", "namespace": "shop"},
               "spec": {"hosts": ["db.shop.internal"], "addresses": ["198.51.100.20"], "exportTo": ["."],
                        "resolution": "STATIC", "ports": [{"number": 5432, "name": "tcp-pg"}],
                        "endpoints": [{"address": "198.51.100.20"}]}}
    assert snap(lab(resources=[private])).cluster("outbound|5432||db.shop.internal") is None
    sidecar = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
               "metadata": {"name": "default", "namespace": "istio-system"},
               "spec": {"egress": [{"hosts": ["./*", "istio-system/*"]}]}}
    scoped = snap(lab(resources=[sidecar]))
    assert scoped.cluster(f"outbound|9080||{FQDN}") is None  # the root namespace's: "./*" is istio-system there
    own = {**sidecar, "metadata": {"name": "default", "namespace": "default"},
           "spec": {"egress": [{"hosts": ["./*"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}
    scoped = snap(lab(resources=[sidecar, own]))
    assert scoped.cluster(f"outbound|9080||{FQDN}") is not None  # the namespace's own Sidecar wins
    assert scoped.cluster("outbound|7000||cart.shop.svc.cluster.local") is None  # another namespace
    assert chains(scoped, "virtualOutbound")[1][1] == "BlackHoleCluster"
    selected = {**sidecar, "metadata": {"name": "client-only", "namespace": "default"},
                "spec": {"workloadSelector": {"labels": {"app": "client"}}, "egress": [{"hosts": ["shop/*"]}]}}
    scoped = snap(lab(resources=[own, selected]))
    assert scoped.cluster("outbound|7000||cart.shop.svc.cluster.local") is not None
    assert scoped.cluster(f"outbound|9080||{FQDN}") is None


@pytest.mark.parametrize(("port", "name", "app_protocol", "expected"), [
    (80, "http", None, HTTP), (80, "http-web", None, HTTP), (80, "HTTP2-x", None, HTTP), (80, "grpc-web", None, HTTP),
    (80, "tcp-db", None, TCP), (443, "https", None, TCP), (6379, "redis", None, TCP), (80, "web", None, AUTO),
    (80, None, None, AUTO), (3306, None, None, TCP), (53, "dns", None, TCP), (80, "tcp", "http", HTTP),
    (80, "http", "kubernetes.io/h2c", HTTP), (53, "udp-dns", None, UDP),
])
def test_protocol_selection_as_istio_does_it(port: int, name: str | None, app_protocol: str | None,
                                              expected: str) -> None:
    assert protocol_of(port, name, app_protocol) == expected


def test_snapshots_survive_their_json() -> None:
    s = snap(lab(resources=[{**SE, "spec": {"hosts": ["web.example.com"], "resolution": "DNS",
                                             "ports": [{"number": 80, "name": "http"}]}}]))
    assert loads(s.dumps()) == s
    standalone = standalone_snapshot("1.9", "TPROXY", [8080], version=3)
    assert loads(standalone.dumps()) == standalone and standalone.node.mode == "TPROXY"


# --- gateways (MESH-FACTS §9) -------------------------------------------------------------------------------------

GATEWAY = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway", "metadata": {"name": "test-gateway"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}


def gateway_lab(*resources: dict) -> dict[str, Snapshot]:
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "nginx"},
          "spec": {"hosts": ["www.example"], "gateways": ["test-gateway"],
                   "http": [{"route": [{"destination": {"host": "svc-nginx"}}]}]}}
    scenario = parse_scenario({
        "name": "gw", "gateways": {"istio-ingressgateway": {}},
        "pods": {"nginx": {"labels": {"app": "nginx"}, "sidecar": {"istio": "1.23"}, "app": PONG}},
        "services": {"svc-nginx": {"selector": {"app": "nginx"}, "ports": [{"name": "http", "port": 80,
                                                                            "targetPort": 9080}]}},
        "istio": list(resources) or [GATEWAY, vs]})
    return snapshots(make_plan(scenario), scenario.istio, 1)


def test_a_gateway_listens_on_its_services_target_ports_with_routes_from_bound_virtual_services() -> None:
    snap = gateway_lab()["istio-system/istio-ingressgateway-0"]
    assert snap.node.type == "router" and snap.node.id.startswith("router~10.244.0.")
    gateway = {x.name: x for x in snap.listeners if x.direction == "gateway"}
    assert sorted(gateway) == ["0.0.0.0_8080", "0.0.0.0_8443"]  # 80→8080 and 443→8443 of its Service; no 15021
    assert gateway["0.0.0.0_8080"].filter_chains[0].route == "http.8080" and not gateway["0.0.0.0_8443"].filter_chains
    assert not any(x.name in ("virtualOutbound", "virtualInbound") for x in snap.listeners)
    (route,) = snap.routes
    (vhost,) = route.virtual_hosts
    assert (route.name, vhost.name, vhost.domains) == ("http.8080", "www.example:80", ("www.example", "www.example:*"))
    assert vhost.routes[0].cluster == "outbound|80||svc-nginx.default.svc.cluster.local"  # the service's only port
    assert snap.cluster("outbound|80||svc-nginx.default.svc.cluster.local") is not None


def test_a_gateway_without_a_bound_virtual_service_answers_404() -> None:
    snap = gateway_lab(GATEWAY)["istio-system/istio-ingressgateway-0"]
    (route,) = snap.routes
    assert [(v.name, v.routes) for v in route.virtual_hosts] == [("blackhole:80", ())]


def test_sidecars_ignore_virtual_services_bound_to_a_gateway_only() -> None:
    snap = gateway_lab()["nginx"]
    vhosts = [v for r in snap.routes for v in r.virtual_hosts]
    assert not any("www.example" in v.domains for v in vhosts)


HTTPS_GATEWAY = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                 "metadata": {"name": "mygateway", "namespace": "istio-system"},
                 "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                     {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["www.example"],
                      "tls": {"mode": "SIMPLE", "credentialName": "www-credential"}},
                     {"port": {"number": 443, "name": "https-any", "protocol": "HTTPS"}, "hosts": ["*"],
                      "tls": {"mode": "SIMPLE", "credentialName": "any-credential"}},
                     {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["www.example"],
                      "tls": {"httpsRedirect": True}}]}}
BOUND_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "nginx"},
            "spec": {"hosts": ["www.example"], "gateways": ["istio-system/mygateway"],
                     "http": [{"route": [{"destination": {"host": "svc-nginx"}}]}]}}


def test_an_https_server_gets_a_filter_chain_by_sni_with_its_credential_and_route_configuration() -> None:
    snap = gateway_lab(HTTPS_GATEWAY, BOUND_VS)["istio-system/istio-ingressgateway-0"]
    listener = next(x for x in snap.listeners if x.name == "0.0.0.0_8443")
    named, anything = listener.filter_chains
    assert (named.match.transport_protocol, named.match.server_names, named.credential, named.route) == (
        "tls", ("www.example",), "kubernetes://www-credential", "https.443.https.mygateway.istio-system")
    assert (anything.match.server_names, anything.route) == ((), "https.443.https-any.mygateway.istio-system")
    # Each HTTPS server's route configuration has only its own hosts; the HTTP server's redirect requires TLS.
    routes = {r.name: r for r in snap.routes}
    (vhost,) = routes["https.443.https.mygateway.istio-system"].virtual_hosts
    assert (vhost.name, vhost.require_tls) == ("www.example:443", False)
    (plain,) = routes["http.8080"].virtual_hosts
    assert (plain.name, plain.require_tls) == ("www.example:80", True)
    assert loads(snap.dumps()) == snap


def test_an_https_redirect_server_redirects_without_a_virtual_service() -> None:
    """buildGatewayHTTPRouteConfig: each host of a server with tls.httpsRedirect gets a virtual host that requires
    TLS, routes or not; a host a VirtualService already gave one is marked too."""
    servers = [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["www.example", "*"]},
               {"port": {"number": 80, "name": "http-redirect", "protocol": "HTTP"},
                "hosts": ["www.example", "shop.example"], "tls": {"httpsRedirect": True}}]
    gateway = {**HTTPS_GATEWAY, "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}}
    snap = gateway_lab(gateway, BOUND_VS)["istio-system/istio-ingressgateway-0"]
    (config,) = snap.routes
    hosts = {v.name: (v.require_tls, len(v.routes)) for v in config.virtual_hosts}
    assert hosts == {"www.example:80": (True, 1), "shop.example:80": (True, 0)}


def test_the_lab_makes_each_credential_for_the_hosts_its_servers_take() -> None:
    resources = parse_resources([HTTPS_GATEWAY, BOUND_VS], source="test")
    # A '*' server's certificate covers the hosts of the VirtualServices bound to its Gateway.
    assert credential_hosts({"istio": "ingressgateway"}, resources) == {
        "www-credential": ("www.example",), "any-credential": ("www.example",)}
    assert credential_hosts({"istio": "other"}, resources) == {}


@pytest.mark.parametrize(("server", "error"), [
    ({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"]},
     "needs `tls: {mode: SIMPLE, credentialName: NAME}`"),
    ({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
      "tls": {"mode": "MUTUAL", "credentialName": "c"}}, "mode SIMPLE only"),
    ({"port": {"number": 443, "protocol": "HTTPS"}, "hosts": ["*"], "tls": {"mode": "SIMPLE", "credentialName": "c"}},
     "needs a port name"),
    ({"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"],
      "tls": {"mode": "SIMPLE", "credentialName": "c"}}, "takes `tls.httpsRedirect` only"),
    ({"port": {"number": 443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"]}, "TLS and TCP servers are not"),
])
def test_gateway_servers_netlab_cannot_serve_are_refused_by_name(server: dict, error: str) -> None:
    gateway = {**HTTPS_GATEWAY, "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]}}
    with pytest.raises(ScenarioError, match=re.escape(error)):
        parse_resources([gateway], source="test")


def test_gateway_port_names_are_unique_as_istiod_validates_them() -> None:
    server = HTTPS_GATEWAY["spec"]["servers"][0]
    gateway = {**HTTPS_GATEWAY, "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server, server]}}
    with pytest.raises(ScenarioError, match="port names in servers must be unique: duplicate name https"):
        parse_resources([gateway], source="test")


def test_the_egress_gateway_shorthand_is_istio_egressgateway_behind_a_cluster_ip_service() -> None:
    scenario = parse_scenario({"name": "eg", "gateways": {"istio-egressgateway": {"type": "egress"}},
                               "pods": {"sleep": {"sidecar": {"istio": "1.23"}}}})
    pod = scenario.pods["istio-system/istio-egressgateway-0"]
    assert pod.labels == {"app": "istio-egressgateway", "istio": "egressgateway"} and pod.sidecar.mode == "router"
    service = scenario.services["istio-system/istio-egressgateway"]
    assert service.type == "ClusterIP" and [(p.name, p.port, p.target_port) for p in service.ports] == [
        ("http2", 80, 8080), ("https", 443, 8443)]
    with pytest.raises(ScenarioError, match="an egress gateway's Service is ClusterIP"):
        parse_scenario({"name": "eg", "pods": {"sleep": {}}, "gateways": {
            "istio-egressgateway": {"type": "egress", "nodePorts": {"http2": 30080}}}})
