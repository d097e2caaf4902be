"""`istioctl proxy-config` tables from a proxy's config dump (pure): the rows and columns istioctl prints for
listeners, clusters, routes and endpoints, with the headers of the proxy's Istio version
(istioctl/pkg/writer/envoy/configdump/{listener,cluster,route}.go, writer/envoy/clusters/clusters.go)."""

from __future__ import annotations

from typing import Any

from netlab.mesh.versions import mesh_traits

Table = tuple[list[str], list[list[str]]]
# istioctl names well-known ALPN lists instead of printing them (listener.go protDescrs).
_ALPN_NAMES = {
    ("http/1.0", "http/1.1", "h2c"): "App: HTTP",
    ("istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: Istio HTTP Plain",
    ("http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"): "App: HTTP TLS",
    ("istio-peer-exchange", "istio"): "App: TCP TLS",
}


def listeners(dump: dict[str, Any]) -> Table:
    address = mesh_traits(dump["node"]["istio"]).listener_address_header
    rows = []
    for listener in sorted(dump["listeners"], key=lambda x: (x["port"], x["address"])):
        chains = [(_match(c["match"]), _destination(c)) for c in listener["filter_chains"]]
        for match, destination in sorted(chains, key=lambda c: c[1], reverse=True):
            rows.append([listener["address"], str(listener["port"]), match, destination])
    return [address, "PORT", "MATCH", "DESTINATION"], rows


def _match(m: dict[str, Any]) -> str:
    parts = []
    if m.get("server_names"):
        parts.append(f"SNI: {','.join(m['server_names'])}")
    if m["transport_protocol"]:
        parts.append(f"Trans: {m['transport_protocol']}")
    if m["application_protocols"]:
        alpn = tuple(m["application_protocols"])
        parts.append(_ALPN_NAMES.get(alpn, f"App: {','.join(alpn)}"))
    port = f":{m['destination_port']}" if m["destination_port"] is not None else ""
    if m["prefix_ranges"]:
        parts.append(f"Addr: {','.join(m['prefix_ranges'])}{port}")
    elif port:
        parts.append(f"Addr: *{port}")
    return "; ".join(parts) or "ALL"


def _destination(chain: dict[str, Any]) -> str:
    if chain["cluster"] == "BlackHoleCluster":
        return "Non-HTTP/Non-TCP"  # istioctl leaves tcp_proxy to the BlackHoleCluster unnamed
    if chain["cluster"]:
        return chain["cluster"] if "Cluster" in chain["cluster"] else f"Cluster: {chain['cluster']}"
    if chain["route"]:
        return f"Route: {chain['route']}"
    if chain["inline_route"]:
        route = chain["inline_route"]
        return route if "Cluster" in route else f"Inline Route: {route}"
    return "Non-HTTP/Non-TCP"


def clusters(dump: dict[str, Any]) -> Table:
    rows = []
    for cluster in dump["clusters"]:
        parts = cluster["name"].split("|")
        if len(parts) == 4:
            direction, port, subset, fqdn = parts
            rows.append([fqdn, port, subset or "-", direction, cluster["type"], cluster["destination_rule"]])
        else:
            rows.append([cluster["name"], "-", "-", "-", cluster["type"], cluster["destination_rule"]])
    rows.sort(key=lambda r: (r[0], r[2], int(r[1]) if r[1].isdigit() else 0, r[3]))
    return ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"], rows


def routes(dump: dict[str, Any]) -> Table:
    vhost_column = mesh_traits(dump["node"]["istio"]).route_vhost_column
    rows = []
    for route in dump["routes"]:
        for vhost in route["virtual_hosts"]:
            for r in vhost["routes"]:
                if r["name"] == "allow_any":  # istioctl hides the passthrough route
                    continue
                row = [route["name"], vhost["name"], _domains(vhost["domains"]), _route_match(r["match"]["path"]),
                       r["virtual_service"] or ("" if r["cluster"] else str(r["direct_response"]))]
                rows.append(row if vhost_column else [row[0], *row[2:]])
    header = ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    return (header if vhost_column else [header[0], *header[2:]]), rows


def _route_match(path: dict[str, Any]) -> str:
    """istioctl's describeMatch: a prefix with *, an exact path as it is, a regex's pattern."""
    return f"{path['value']}*" if path["kind"] == "prefix" else path["value"] or "*"


def _domains(domains: list[str]) -> str:
    """As istioctl shortens them (route.go describeRouteDomains): the forms without :PORT, minus the .svc and
    .svc.cluster.local forms of a name also listed, two at most."""
    if len(domains) <= 1:
        return "".join(domains)
    plain = [d for d in domains if ":" not in d]
    unique = set(plain)
    longer = {d for d in plain for short in (d.removesuffix(".svc.cluster.local"), d.removesuffix(".svc"))
              if short != d and short in unique}
    kept = [d for d in plain if d not in longer]
    return ", ".join(kept[:2]) + (f" + {len(kept) - 2} more..." if len(kept) > 2 else "")


def endpoints(dump: dict[str, Any]) -> Table:
    rows = []
    for cluster, hosts in dump["hosts"].items():
        for host in hosts:
            outlier = "FAILED" if host["failed_outlier_check"] else "OK"
            rows.append([f"{host['address']}:{host['port']}", host["health_status"], outlier, cluster])
    rows.sort(key=lambda r: (r[3], r[0]))
    return ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], rows


TABLES = {"listeners": listeners, "clusters": clusters, "routes": routes, "endpoints": endpoints}
