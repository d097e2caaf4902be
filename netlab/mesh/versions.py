"""What istiod (and istioctl) of each release does differently, as data: `mesh_traits(version)` folds the changes
up to that release over the 1.9 baseline, as netlab.istio_init.versions does for istio-iptables.

Sources (istio/istio at the release tags): pilot/pkg/networking/util/util.go (cluster names),
pilot/pkg/networking/core/cluster_traffic_policy.go and releasenotes/notes/new_lb_algorithm_default.yaml (default
load balancer), PILOT_ENABLE_INBOUND_PASSTHROUGH (1.10), SIDECAR_IGNORE_PORT_IN_HOST_MATCH (default true from
1.16: vhost domains without :PORT), istioctl/pkg/writer/envoy/configdump (column headers),
pilot/pkg/networking/core/route/retry/retry.go and route.go BuildDefaultHTTPInboundRoute (retry policies),
pkg/config/mesh/mesh.go (the default Zipkin tracer, dropped in 1.22).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from netlab.istio_init.versions import IstioVersion, parse_version


@dataclass(frozen=True)
class MeshTraits:
    # Inbound clusters of declared ports: STATIC 127.0.0.1:PORT (1.9) or ORIGINAL_DST from 127.0.0.6 (1.10+).
    inbound_to_original_dst: bool = False
    inbound_passthrough_cluster: str = "InboundPassthroughClusterIpv4"  # one InboundPassthroughCluster from 1.23
    default_lb: str = "ROUND_ROBIN"  # LEAST_REQUEST from 1.14
    vhost_domains_with_port: bool = True  # reviews:9080 next to reviews, until 1.15
    listener_address_header: str = "ADDRESS"  # istioctl proxy-config listener: ADDRESSES from 1.19
    route_vhost_column: bool = False  # istioctl proxy-config route: VHOST NAME column from 1.18
    # The default outbound retry policy retries a 503 until 1.23 (EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY, 1.24).
    retry_503: bool = True
    # Inbound routes retry reset-before-request twice from 1.24 (ENABLE_INBOUND_RETRY_POLICY).
    inbound_retry: bool = False
    # A Zipkin tracer in the bootstrap until 1.21: requests carry the route's x-envoy-decorator-operation.
    default_tracer: bool = True
    # Envoy counts RFC 1918 peers as internal (a gateway sends x-envoy-internal: true for them) until Envoy 1.33,
    # which Istio 1.25 ships (Envoy's v1.33.0 changelog; MESH-FACTS §4).
    private_is_internal: bool = True


CHANGES: tuple[tuple[int, dict[str, Any]], ...] = (
    (10, {"inbound_to_original_dst": True}),
    (14, {"default_lb": "LEAST_REQUEST"}),
    (16, {"vhost_domains_with_port": False}),
    (18, {"route_vhost_column": True}),
    (19, {"listener_address_header": "ADDRESSES"}),
    (22, {"default_tracer": False}),
    (23, {"inbound_passthrough_cluster": "InboundPassthroughCluster"}),
    (24, {"retry_503": False, "inbound_retry": True}),
    (25, {"private_is_internal": False}),
)


def mesh_traits(version: IstioVersion | str) -> MeshTraits:
    ver = parse_version(version) if isinstance(version, str) else version
    traits = MeshTraits()
    for minor, fields in CHANGES:
        if minor <= ver.minor:
            traits = replace(traits, **fields)
    return traits
