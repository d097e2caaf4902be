"""VirtualService and DestinationRule in the sidecar over loopback: snapshots built by the control plane from the
resources as users write them, requests from http.client, a real HTTP app per endpoint (http_support). Matches and
subsets, weights, faults, timeouts, retries, rewrites, header changes, redirects, mirroring, outlier detection,
circuit breakers, consistent hashing."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator

from http_support import FQDN, VIP, HttpApp, http_app, service_config
from proxy_support import ProxyUnderTest

from netlab.proxy.admin import config_dump

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v9, labels: {version: v9}}]
"""


def rule(traffic_policy: str) -> str:
    """A DestinationRule for web with this trafficPolicy (YAML flow style)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec: {{host: web, trafficPolicy: {traffic_policy}}}
"""


def vs(http: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web]
  http:
{http}
"""


@contextlib.contextmanager
def lab(resources: str, istio: str = "1.10") -> Iterator[tuple[ProxyUnderTest, HttpApp, HttpApp]]:
    """web with two endpoints: web-0 (127.0.0.2, version v1) and web-1 (127.0.0.3, version v2)."""
    with http_app("127.0.0.2", "web-0") as v1, http_app("127.0.0.3", "web-1", v1.addr[1]) as v2:
        config = service_config(istio, [v1.addr, v2.addr], resources=resources, versions=["v1", "v2"])
        with ProxyUnderTest(config) as p:
            p.dst = (VIP, 80)
            yield p, v1, v2


def get(p: ProxyUnderTest, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*p.outbound, timeout=10)
    conn.request(method, path, body=body, headers={"Host": "web", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def app_of(data: bytes) -> str:
    return json.loads(data)["app"]


def entries(p: ProxyUnderTest, n: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 5
    while len(p.log_lines()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return p.log_entries()


def test_header_match_picks_a_subset_and_no_match_is_404_nr() -> None:
    routes = vs("""
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: web, subset: v1}}]
""")
    with lab(routes + "---" + DR) as (p, _v1, _v2):
        assert {app_of(get(p, "/reviews/0", {"end-user": "jason"})[2]) for _ in range(6)} == {"web-1"}
        assert {app_of(get(p, "/reviews/0")[2]) for _ in range(6)} == {"web-0"}
        status, _, _ = get(p, "/other")
        assert status == 404
        log = entries(p, 13)
        assert log[0]["cluster"] == f"outbound|80|v2|{FQDN}" and log[6]["cluster"] == f"outbound|80|v1|{FQDN}"
        assert (log[-1]["flags"], log[-1]["response_code_details"]) == ("NR", "route_not_found")


def test_weights_split_the_requests() -> None:
    routes = vs("""
  - route: [{destination: {host: web, subset: v1}, weight: 80}, {destination: {host: web, subset: v2}, weight: 20}]
""")
    with lab(routes + "---" + DR) as (p, _v1, _v2):
        seen = Counter(app_of(get(p)[2]) for _ in range(200))
        assert 0.68 < seen["web-0"] / 200 < 0.92, seen


def test_undefined_subset_is_nc_and_empty_subset_is_uh() -> None:
    routes = vs("""
  - match: [{uri: {exact: /none}}]
    route: [{destination: {host: web, subset: v3}}]
  - route: [{destination: {host: web, subset: v9}}]
""")
    with lab(routes + "---" + DR) as (p, _v1, _v2):
        assert get(p, "/none")[0] == 503
        status, _, data = get(p, "/empty")
        assert (status, data) == (503, b"no healthy upstream")
        nc, uh = entries(p, 2)
        assert (nc["flags"], nc["response_code_details"]) == ("NC", "cluster_not_found")
        assert (uh["flags"], uh["cluster"]) == ("UH", f"outbound|80|v9|{FQDN}")


def test_fault_abort_and_delay() -> None:
    routes = vs("""
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
  - fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
""")
    with lab(routes) as (p, v1, v2):
        status, headers, data = get(p, "/", {"end-user": "jason"})
        assert (status, data, headers["content-type"]) == (500, b"fault filter abort", "text/plain")
        assert v1.requests == v2.requests == []  # the app never saw it
        start = time.monotonic()
        assert get(p)[0] == 200 and time.monotonic() - start >= 0.29
        abort, delay = entries(p, 2)
        assert (abort["flags"], abort["response_code_details"], abort["upstream_host"]) == (
            "FI", "fault_filter_abort", "-")
        assert (delay["flags"], delay["response_code_details"]) == ("DI", "via_upstream")


def test_route_timeout_gives_504_ut_and_excludes_the_fault_delay() -> None:
    routes = vs("""
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
    timeout: 300ms
    route: [{destination: {host: web}}]
  - timeout: 300ms
    route: [{destination: {host: web}}]
""")
    with lab(routes) as (p, _v1, _v2):
        start = time.monotonic()
        status, _, data = get(p, "/slow/2000")
        assert (status, data) == (504, b"upstream request timeout")
        assert 0.25 < time.monotonic() - start < 1.5
        assert get(p, "/delayed")[0] == 200  # the router's timeout starts after the fault filter's delay
        timeout, _ = entries(p, 2)
        assert (timeout["flags"], timeout["response_code_details"]) == ("UT", "response_timeout")


def test_retries_on_5xx_and_per_try_timeout() -> None:
    routes = vs("""
  - match: [{uri: {prefix: /status}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: web}}]
  - retries: {attempts: 1, perTryTimeout: 200ms, retryOn: "gateway-error,connect-failure"}
    route: [{destination: {host: web}}]
""")
    with lab(routes) as (p, v1, v2):
        status, _, _ = get(p, "/status/500")
        assert status == 500 and len(v1.requests) + len(v2.requests) == 4  # 1 + 3 retries
        start = time.monotonic()
        status, _, data = get(p, "/slow/1000")
        assert (status, data) == (504, b"upstream request timeout") and time.monotonic() - start < 0.9
        retried, per_try = entries(p, 2)
        assert (retried["flags"], retried["response_code"]) == ("URX", "500")
        assert (per_try["flags"], per_try["response_code_details"]) == ("UT,URX", "upstream_per_try_timeout")


def test_rewrite_headers_and_redirect() -> None:
    routes = vs("""
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: web.internal}
    headers:
      request: {set: {x-set: "1"}, add: {x-added: a}, remove: [x-drop]}
      response: {set: {x-answer: "yes"}, remove: [content-type]}
    route: [{destination: {host: web}}]
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /elsewhere, authority: other.example}
""")
    with lab(routes) as (p, _v1, _v2):
        status, headers, data = get(p, "/old/page?q=1", {"x-drop": "gone", "x-set": "0"})
        doc = json.loads(data)
        assert doc["path"] == "/new/page?q=1"
        assert doc["headers"]["host"] == "web.internal" and doc["headers"]["x-envoy-original-path"] == "/old/page?q=1"
        assert (doc["headers"]["x-set"], doc["headers"]["x-added"]) == ("1", "a") and "x-drop" not in doc["headers"]
        assert headers["x-answer"] == "yes" and "content-type" not in headers
        status, headers, _ = get(p, "/moved")
        assert (status, headers["location"]) == (301, "http://other.example/elsewhere")
        rewritten, moved = entries(p, 2)
        assert rewritten["path"] == "/old/page?q=1"  # the log shows the path the client sent
        assert moved["response_code"] == "301"


def test_mirror_sends_a_copy_to_the_shadow_host() -> None:
    routes = vs("""
  - route: [{destination: {host: web, subset: v1}}]
    mirror: {host: web, subset: v2}
""")
    with lab(routes + "---" + DR) as (p, v1, v2):
        assert app_of(get(p, "/copy")[2]) == "web-0"
        deadline = time.monotonic() + 3
        while not v2.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert v1.requests == ["/copy"] and v2.requests == ["/copy"]


def test_outlier_detection_ejects_a_failing_endpoint() -> None:
    outlier = rule("{outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, "
                   "maxEjectionPercent: 50}}")
    no_retries = vs("  - retries: {attempts: 0}\n    route: [{destination: {host: web}}]")
    with lab(outlier + "---" + no_retries, "1.24") as (p, _v1, _v2):
        statuses = [get(p, "/status/503")[0] for _ in range(2)]  # both endpoints fail once: one is ejected
        assert statuses == [503, 503]
        answered = {app_of(get(p)[2]) for _ in range(6)}
        assert len(answered) == 1  # only the one still in
        dump = p.call(lambda: config_dump(p.worker.dispatch))
        failed = [h["pod"] for h in dump["hosts"][f"outbound|80||{FQDN}"] if h["failed_outlier_check"]]  # type: ignore[index]
        assert len(failed) == 1 and failed[0] not in answered


def test_circuit_breaker_overflow_is_503_uo() -> None:
    limits = rule("{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}")
    with http_app("127.0.0.2", "web-0") as only:
        config = service_config("1.10", [only.addr], resources=limits)
        with ProxyUnderTest(config) as p:
            p.dst = (VIP, 80)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda _: get(p, "/slow/400"), range(4)))
            statuses = Counter(status for status, _, _ in results)
            assert statuses[200] == 2 and statuses[503] == 2, statuses  # one in flight, one pending
            overflow = next(headers for status, headers, _ in results if status == 503)
            assert overflow["x-envoy-overloaded"] == "true"
            assert any(e["flags"] == "UO" for e in entries(p, 4))


def test_consistent_hash_keeps_a_user_on_one_endpoint() -> None:
    with lab(rule("{loadBalancer: {consistentHash: {httpHeaderName: end-user}}}")) as (p, _v1, _v2):
        for user in ("jason", "alice", "bob"):
            assert len({app_of(get(p, "/", {"end-user": user})[2]) for _ in range(5)}) == 1
