"""VirtualService and DestinationRule → a sidecar's routes and clusters, as istiod translates them
(pilot/pkg/networking/core/route/route.go translateRoute, route/retry/retry.go ConvertPolicy,
cluster_builder.go / cluster_traffic_policy.go for subsets, load balancing, connection pools, outlier detection).

- A VirtualService binds to the mesh's sidecars unless its `gateways` leave `mesh` out; its `hosts` pick the
  services (short names are read in the VirtualService's namespace). Its http routes replace the service's default
  route, in order, first match wins; a request no route matches gets 404 NR (istiod adds no default).
- A route's destinations become `outbound|PORT|SUBSET|FQDN`; several make weighted clusters. Unset `retries` keep
  Istio's default policy; `attempts: 0` turns retries off; a number in `retryOn` is a retriable status code.
- A DestinationRule's subsets become clusters of the endpoints with their labels (an empty subset: 503 UH; a
  subset no rule defines: NC cluster_not_found); its traffic policy (a subset's overriding the rule's) sets the
  load balancer, the circuit breakers and outlier detection.

Plain functions over duck-typed resources: netlab.model.istio's classes, never imported at run time (the proxy
imports netlab.mesh without pydantic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from netlab.duration import seconds
from netlab.mesh.types import (
    ANY_PATH,
    CLUSTER_DOMAIN,
    ROOT_NAMESPACE,
    Fault,
    HeaderMatcher,
    HeaderOps,
    OutlierPolicy,
    Redirect,
    RetryPolicy,
    Route,
    RouteMatch,
    StringMatcher,
    WeightedCluster,
)

if TYPE_CHECKING:
    from netlab.model.istio import DestinationRule, VirtualService

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
       "RANDOM": "RANDOM"}


def fqdn(host: str, namespace: str) -> str:
    """A host as a resource in `namespace` names it: a short name is a service of that namespace."""
    return host if "." in host or host.startswith("*") else f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def host_matches(pattern: str, hostname: str) -> bool:
    return pattern == hostname or pattern == "*" or (pattern.startswith("*.") and hostname.endswith(pattern[1:]))


def _exported(export_to: Sequence[str], namespace: str, resource_namespace: str) -> bool:
    return not export_to or "*" in export_to or namespace in export_to or (
        "." in export_to and namespace == resource_namespace)


# --- which resources apply ------------------------------------------------------------------------------------


def virtual_service_for(hostname: str, namespace: str, resources: Iterable[Any]) -> VirtualService | None:
    """The VirtualService a sidecar in `namespace` uses for a service: the first (oldest) that binds to the mesh,
    is exported to the namespace and names the host (exactly before a wildcard)."""
    candidates = [r for r in resources if r.kind == "VirtualService"
                  and (not r.spec.gateways or "mesh" in r.spec.gateways)
                  and _exported(r.spec.export_to, namespace, r.metadata.namespace)]
    for exact in (True, False):
        for vs in candidates:
            hosts = [fqdn(h, vs.metadata.namespace) for h in vs.spec.hosts]
            if any(h == hostname if exact else host_matches(h, hostname) for h in hosts):
                return vs
    return None


def destination_rule_for(hostname: str, namespace: str, service_namespace: str,
                         resources: Iterable[Any]) -> DestinationRule | None:
    """The DestinationRule for a host, looked up as istiod does: the proxy's namespace, then the service's, then
    the root namespace; an exact host before a wildcard."""
    rules = [r for r in resources if r.kind == "DestinationRule" and r.spec.workload_selector is None]
    for where in dict.fromkeys((namespace, service_namespace, ROOT_NAMESPACE)):
        for exact in (True, False):
            for dr in rules:
                host = fqdn(dr.spec.host, dr.metadata.namespace)
                if dr.metadata.namespace == where and _exported(dr.spec.export_to, namespace, where) and (
                        host == hostname if exact else host_matches(host, hostname)):
                    return dr
    return None


# --- DestinationRule → cluster settings -------------------------------------------------------------------------


def subsets_of(rule: DestinationRule | None) -> list[tuple[str, dict[str, str], Any]]:
    """(name, labels, merged traffic policy) per subset."""
    if rule is None:
        return []
    return [(s.name, dict(s.labels), _merge(rule.spec.traffic_policy, s.traffic_policy)) for s in rule.spec.subsets]


def _merge(base: Any, override: Any) -> Any:
    """A subset's policy replaces the rule's part by part (MergeTrafficPolicy)."""
    if override is None:
        return base
    if base is None:
        return override
    return base.model_copy(update={k: getattr(override, k) for k in ("load_balancer", "connection_pool",
                                                                      "outlier_detection")
                                   if getattr(override, k) is not None})


def cluster_settings(policy: Any, default_lb: str) -> dict[str, Any]:
    """Cluster fields from a traffic policy: lb_policy, hash_on, circuit breakers, outlier detection, TLS."""
    if policy is None:
        return {"lb_policy": default_lb}
    found: dict[str, Any] = {"lb_policy": default_lb}
    lb = policy.load_balancer
    if lb is not None and lb.simple is not None and lb.simple != "UNSPECIFIED":
        if lb.simple == "PASSTHROUGH":
            raise ValueError("loadBalancer PASSTHROUGH is not modelled by netlab")
        found["lb_policy"] = _LB[lb.simple]
    elif lb is not None and lb.consistent_hash is not None:
        h = lb.consistent_hash
        found["lb_policy"] = "RING_HASH"
        found["hash_on"] = (f"header:{h.http_header_name.lower()}" if h.http_header_name
                            else f"query:{h.http_query_parameter_name}" if h.http_query_parameter_name
                            else "source_ip")
    pool = policy.connection_pool
    if pool is not None and pool.tcp is not None:
        found["max_connections"] = pool.tcp.max_connections or 0
        if pool.tcp.connect_timeout:
            found["connect_timeout"] = seconds(pool.tcp.connect_timeout)
    if pool is not None and pool.http is not None:
        found["max_pending_requests"] = pool.http.http1_max_pending_requests or 0
        found["max_requests"] = pool.http.http2_max_requests or 0
        found["max_retries"] = pool.http.max_retries or 0
        found["max_requests_per_connection"] = pool.http.max_requests_per_connection or 0
    tls = policy.tls
    if tls is not None:  # ClientTLSSettings
        found["tls_mode"] = tls.mode
        found["subject_alt_names"] = tuple(tls.subject_alt_names)
        if tls.sni:
            found["sni"] = tls.sni
        found["tls_files"] = (tls.ca_certificates or "", tls.client_certificate or "", tls.private_key or "")
        found["tls_skip_verify"] = bool(tls.insecure_skip_verify)
    od = policy.outlier_detection
    if od is not None:
        five = od.consecutive_5xx_errors if od.consecutive_5xx_errors is not None else od.consecutive_errors
        found["outlier"] = OutlierPolicy(
            consecutive_5xx=5 if five is None else five,
            consecutive_gateway=od.consecutive_gateway_errors or 0,
            interval=seconds(od.interval) if od.interval else 10.0,
            base_ejection=seconds(od.base_ejection_time) if od.base_ejection_time else 30.0,
            max_ejection_percent=od.max_ejection_percent if od.max_ejection_percent is not None else 10)
    return found


# --- VirtualService → routes --------------------------------------------------------------------------------------


def http_routes(vs: VirtualService, port: int, service_ports: Sequence[int] | Callable[[str], Sequence[int]],
                proxy_namespace: str, proxy_labels: dict[str, str], retry_503: bool,
                cluster_name: Any, gateway: str = "mesh") -> tuple[Route, ...]:
    """The routes of a VirtualService for one service port, as a sidecar in `proxy_namespace` with `proxy_labels`
    gets them (or a gateway, `gateway` being its NAMESPACE/NAME, for one of its server ports). `cluster_name(port,
    hostname, subset)` names a destination's cluster; `service_ports`: the service's ports, or for a gateway the
    ports of each destination host."""
    namespace = vs.metadata.namespace
    owner = f"{vs.metadata.name}.{namespace}"
    routes: list[Route] = []
    for http in vs.spec.http:
        matches = http.match or [None]
        for match in matches:
            if match is not None and not _match_applies(match, port, proxy_namespace, proxy_labels, gateway,
                                                        namespace):
                continue
            name = ".".join(n for n in (http.name, match.name if match else None) if n)
            routes.append(_route(http, match, name, owner, namespace, port, service_ports, retry_503, cluster_name))
    return tuple(routes)


def gateway_names(names: Sequence[str], namespace: str) -> set[str]:
    """A VirtualService's gateways as NAMESPACE/NAME ("mesh" stays "mesh"; NAME is in the VirtualService's own
    namespace)."""
    return {n if n == "mesh" or "/" in n else f"{namespace}/{n}" for n in names}


def _match_applies(match: Any, port: int, proxy_namespace: str, proxy_labels: dict[str, str],
                   gateway: str = "mesh", vs_namespace: str = "") -> bool:
    """Parts of a match istiod evaluates when it builds a proxy's routes, not per request."""
    if match.port is not None and match.port != port:
        return False
    if match.gateways and gateway not in gateway_names(match.gateways, vs_namespace):
        return False
    if gateway != "mesh":  # sourceLabels and sourceNamespace select sidecars
        return not match.source_labels and match.source_namespace is None
    if match.source_namespace is not None and match.source_namespace != proxy_namespace:
        return False
    return all(proxy_labels.get(k) == v for k, v in match.source_labels.items())


def _destination_cluster(dest: Any, namespace: str, port: int,
                         service_ports: Sequence[int] | Callable[[str], Sequence[int]], cluster_name: Any) -> str:
    """GetDestinationCluster: the destination's port, else the service's only port, else the listener's."""
    host = fqdn(dest.host, namespace)
    if callable(service_ports):
        service_ports = service_ports(host)
    number = dest.port.number if dest.port else (service_ports[0] if len(service_ports) == 1 else port)
    return cluster_name(number, host, dest.subset or "")


def _route(http: Any, match: Any, name: str, owner: str, namespace: str, port: int,
           service_ports: Sequence[int] | Callable[[str], Sequence[int]], retry_503: bool, cluster_name: Any) -> Route:
    cluster, weighted = "", ()
    if http.route:
        if len(http.route) == 1 and http.route[0].headers is None:
            cluster = _destination_cluster(http.route[0].destination, namespace, port, service_ports, cluster_name)
        else:
            total = sum(d.weight for d in http.route)
            weighted = tuple(WeightedCluster(
                _destination_cluster(d.destination, namespace, port, service_ports, cluster_name),
                d.weight if total else 100 // len(http.route),
                _ops(d.headers.request) if d.headers else None, _ops(d.headers.response) if d.headers else None)
                for d in http.route if d.weight or not total)
            if len(weighted) == 1 and weighted[0].request_headers is None and weighted[0].response_headers is None:
                cluster, weighted = weighted[0].name, ()
    redirect = None
    if http.redirect is not None:
        r = http.redirect
        redirect = Redirect(r.uri or "", r.authority or "", r.redirect_code, r.port or 0, r.scheme or "")
    mirror = ""
    if http.mirror is not None:
        mirror = _destination_cluster(http.mirror, namespace, port, service_ports, cluster_name)
    return Route(
        name=name, match=_route_match(match), cluster=cluster, weighted=weighted, redirect=redirect,
        virtual_service=owner, timeout=seconds(http.timeout) if http.timeout else 0.0,
        retry=retry_policy(http.retries, retry_503),
        prefix_rewrite=http.rewrite.uri if http.rewrite and http.rewrite.uri else None,
        host_rewrite=http.rewrite.authority if http.rewrite and http.rewrite.authority else "",
        request_headers=_ops(http.headers.request) if http.headers else None,
        response_headers=_ops(http.headers.response) if http.headers else None,
        fault=_fault(http.fault), mirror_cluster=mirror,
        mirror_percent=(http.mirror_percentage.value if http.mirror_percentage else 100.0) if mirror else 0.0)


def tcp_cluster(vs: VirtualService, port: int, service_ports: Sequence[int], proxy_namespace: str,
                proxy_labels: dict[str, str], cluster_name: Any) -> str | None:
    """The cluster of the first tcp route whose match takes this port and sidecar (None: no tcp route does)."""
    for tcp in vs.spec.tcp:
        for match in tcp.match or [None]:
            if match is None or (_match_applies(match, port, proxy_namespace, proxy_labels)
                                 and not match.destination_subnets):
                return _destination_cluster(tcp.route[0].destination, vs.metadata.namespace, port, service_ports,
                                            cluster_name)
    return None


def retry_policy(retries: Any, retry_503: bool) -> RetryPolicy | None:
    """ConvertPolicy: none given → Istio's default; attempts 0 → none; numbers in retryOn → status codes."""
    default_codes = (503,) if retry_503 else ()
    if retries is None:
        return RetryPolicy(2, DEFAULT_RETRY_ON, default_codes)
    if retries.attempts == 0:
        return None
    per_try = seconds(retries.per_try_timeout) if retries.per_try_timeout else 0.0
    if not retries.retry_on:
        return RetryPolicy(retries.attempts, DEFAULT_RETRY_ON, default_codes, per_try)
    conditions: list[str] = []
    codes: list[int] = []
    for token in (t.strip() for t in retries.retry_on.split(",") if t.strip()):
        if token.isdigit():
            codes.append(int(token))
        else:
            conditions.append(token)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return RetryPolicy(retries.attempts, ",".join(conditions), tuple(codes), per_try)


def _route_match(match: Any) -> RouteMatch:
    if match is None:
        return ANY_PATH
    case = not match.ignore_uri_case
    path = _matcher(match.uri, ignore_case=not case) if match.uri else StringMatcher("prefix", "/")
    headers = [HeaderMatcher(name.lower(), _matcher(value)) for name, value in match.headers.items()]
    headers += [HeaderMatcher(name.lower(), _matcher(value), invert=True)
                for name, value in match.without_headers.items()]
    for pseudo, value in ((":method", match.method), (":authority", match.authority), (":scheme", match.scheme)):
        if value is not None:
            headers.append(HeaderMatcher(pseudo, _matcher(value)))
    query = tuple(HeaderMatcher(name, _matcher(value)) for name, value in match.query_params.items())
    return RouteMatch(path, tuple(headers), query)


def _matcher(value: Any, ignore_case: bool = False) -> StringMatcher:
    """Istio's StringMatch; an empty regex in a header match means "present" (as istiod translates it)."""
    if value.exact is not None:
        return StringMatcher("exact", value.exact, ignore_case)
    if value.prefix is not None:
        return StringMatcher("prefix", value.prefix, ignore_case)
    if value.regex in ("", "*", ".*"):
        return StringMatcher("present")
    return StringMatcher("regex", value.regex, ignore_case)


def _ops(ops: Any) -> HeaderOps | None:
    if ops is None:
        return None
    return HeaderOps(tuple(ops.set.items()), tuple(ops.add.items()), tuple(ops.remove))


def _fault(fault: Any) -> Fault | None:
    if fault is None:
        return None
    delay, abort = fault.delay, fault.abort
    # An unset percentage is 0: TranslateFault passes the deprecated integer `percent` (0 when unset) for a delay
    # and leaves an abort's FractionalPercent unset, which the fault filter reads as 0.
    return Fault(
        delay=seconds(delay.fixed_delay) if delay else 0.0,
        delay_percent=(delay.percentage.value if delay.percentage else float(delay.percent or 0)) if delay else 0.0,
        abort_status=abort.http_status if abort else 0,
        abort_percent=(abort.percentage.value if abort.percentage else 0.0) if abort else 0.0)
