"""`netlab logs --explain`: every field of an Istio access-log line (and of an app's nginx-style line) labelled,
response flags in words (pure).

Field names are those of Istio's JSON access-log encoding (pilot/pkg/model/telemetry_logging.go), in the order of
its default TEXT format; flag meanings follow Envoy's access-log documentation (configuration/observability/
access_log/usage.rst, "%RESPONSE_FLAGS%").
"""

from __future__ import annotations

from netlab.probe.observed import parse_app_log_line, parse_log_line

# Envoy's response flags (short form) and what they mean.
RESPONSE_FLAGS = {
    "UH": "no healthy upstream host in the cluster (503)",
    "UF": "upstream connection failure (503)",
    "UO": "upstream overflow: a circuit breaker's limit was reached (503)",
    "NR": "no route configured for the request (404), or no filter chain matched the connection",
    "URX": "the upstream retry limit (HTTP) or the maximum connect attempts (TCP) was reached",
    "NC": "upstream cluster not found",
    "DT": "the request or connection exceeded its maximum duration",
    "DC": "downstream connection termination: the client went away",
    "LH": "the local service failed its health check (503)",
    "UT": "upstream request timeout (504)",
    "LR": "connection local reset (503)",
    "UR": "upstream remote reset (503)",
    "UC": "upstream connection termination (503)",
    "DI": "the request was delayed by fault injection",
    "FI": "the request was aborted by fault injection",
    "RL": "rate limited locally (429)",
    "UAEX": "denied by the external authorization service",
    "RLSE": "rejected: the rate limit service failed",
    "IH": "rejected: an invalid value for a strictly checked header (400)",
    "SI": "stream idle timeout (408 or 504)",
    "DPE": "the downstream request had an HTTP protocol error",
    "UPE": "the upstream response had an HTTP protocol error",
    "UMSDR": "the upstream request reached its maximum stream duration",
    "OM": "the overload manager terminated the request",
    "DF": "DNS resolution failed",
    "DO": "dropped by drop_overloads",
}

# Istio's default TEXT format, field by field: (name in the JSON encoding, the parser's key, what it is).
ACCESS_LOG_FIELDS = (
    ("start_time", "start_time", "when the request (or connection) started"),
    ("method", "method", "HTTP method; - for a TCP connection"),
    ("path", "path", "request path (x-envoy-original-path before a rewrite)"),
    ("protocol", "protocol", "HTTP/1.1, or - for TCP"),
    ("response_code", "response_code", "HTTP status; 0 for TCP"),
    ("response_flags", "flags", "Envoy's response flags; - when none"),
    ("response_code_details", "response_code_details", "why this response code (via_upstream: the upstream's)"),
    ("connection_termination_details", "connection_termination_details", "why the proxy ended the connection"),
    ("upstream_transport_failure_reason", "upstream_transport_failure_reason", "why connecting upstream failed"),
    ("bytes_received", "bytes_received", "bytes from the client"),
    ("bytes_sent", "bytes_sent", "bytes to the client"),
    ("duration", "duration", "ms from the first byte received to the last byte sent"),
    ("upstream_service_time", "upstream_service_time", "ms the upstream took (x-envoy-upstream-service-time)"),
    ("x_forwarded_for", "x_forwarded_for", "x-forwarded-for: set by a gateway, - between sidecars"),
    ("user_agent", "user_agent", "user-agent"),
    ("request_id", "request_id", "x-request-id: the same in every proxy's line of one request"),
    ("authority", "authority", "host header"),
    ("upstream_host", "upstream_host", "the endpoint the proxy connected to"),
    ("upstream_cluster", "cluster", "the cluster that routed it (outbound|PORT|SUBSET|HOST, inbound|PORT||, ...)"),
    ("upstream_local_address", "upstream_local", "the proxy's own address toward the upstream (127.0.0.6: inbound)"),
    ("downstream_local_address", "downstream_local", "the address the client connected to (the original destination)"),
    ("downstream_remote_address", "downstream_remote", "the client (x-forwarded-for's, port 0, behind a gateway)"),
    ("requested_server_name", "requested_server_name", "SNI of the client's TLS (mTLS: outbound_.PORT_._.HOST)"),
    ("route_name", "route_name", "the route that matched"),
)
APP_LOG_FIELDS = (
    ("remote_addr", "the app's peer (127.0.0.6 or 127.0.0.1 behind a sidecar)"),
    ("remote_user", "HTTP auth user"),
    ("time_local", "when"),
    ("request", "request line"),
    ("status", "HTTP status"),
    ("body_bytes_sent", "response body bytes"),
    ("http_referer", "referer"),
    ("http_user_agent", "user-agent"),
    ("http_x_forwarded_for", "x-forwarded-for: the client a gateway saw"),
)


def flags_in_words(flags: str) -> str:
    if flags in ("-", ""):
        return "none"
    return "; ".join(f"{f}: {RESPONSE_FLAGS.get(f, 'unknown flag')}" for f in flags.split(","))


def explain(line: str, pod: str = "") -> list[tuple[str, str, str]] | None:
    """(field, value, meaning) for each field of an access-log line (the sidecar's, or an app's nginx line); None
    for a line of neither format."""
    parsed = parse_log_line(pod, line)
    if parsed is not None:
        rows = []
        for name, key, meaning in ACCESS_LOG_FIELDS:
            value = parsed.get(key)
            if name == "response_flags":
                meaning = flags_in_words(value)
            elif name == "upstream_transport_failure_reason" and value not in ("-", ""):
                meaning = parsed.reason() if parsed.get("details") == value else meaning
            rows.append((name, value, meaning))
        return rows
    app = parse_app_log_line(line)
    if app is not None:
        return [(name, app.get(name, "-"), meaning) for name, meaning in APP_LOG_FIELDS]
    return None


def render(line: str, pod: str = "") -> str:
    rows = explain(line, pod)
    if rows is None:
        return line
    width = max(len(name) for name, _v, _m in rows)
    return line + "\n" + "\n".join(f"  {name:<{width}}  {value:<24} {meaning}" for name, value, meaning in rows)
