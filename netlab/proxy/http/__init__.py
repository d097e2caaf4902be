"""The sidecar's HTTP/1.1 path: what Envoy's http_inspector, HTTP connection manager and router do for a sidecar
as Istio configures them. sniff: HTTP or not, from a connection's first bytes; router: a route configuration's
virtual hosts and routes; headers: the request and response header changes and local replies; session: one
downstream connection and its requests; exchange: one request's attempts; upstream: pooled upstream connections.
"""
